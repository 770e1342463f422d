"""Where ``from_pretrained`` finds checkpoints. Local paths for now; hub downloads are a separate piece."""

from __future__ import annotations

from pathlib import Path

from models.errors import CheckpointError


def resolve_pretrained(model_name: str, refresh_cache: bool = False) -> Path:
    """A local ``.nemo`` path or extracted checkpoint directory; anything else is refused clearly."""
    path = Path(model_name).expanduser()
    if path.exists():
        return path
    raise CheckpointError(
        f"{model_name!r} is not a local checkpoint, and downloading from Hugging Face or NGC is not "
        "available in this build; download the .nemo file and pass its path"
    )
