"""Checkpoints shipped inside the package: ``aviary-demo-en``, a small English FastConformer-CTC trained on
synthetic espeak-ng speech (``tools/demo_model/``), so that aviary transcribes out of the box with no hub.

It is for trying aviary offline; real deployments use a Parakeet or Canary checkpoint.
"""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL = "aviary-demo-en"
ASSETS = Path(__file__).resolve().parent / "assets"
_FILES = {DEMO_MODEL: "aviary-demo-en.nemo"}


def bundled_models() -> dict[str, Path]:
    """Name -> path of every bundled checkpoint present in this installation."""
    return {name: ASSETS / file for name, file in _FILES.items() if (ASSETS / file).is_file()}


def bundled_path(name: str) -> Path | None:
    return bundled_models().get(name.strip())
