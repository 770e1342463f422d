"""Device selection and memory release. torch is imported lazily: the echo backend never needs a device."""

from __future__ import annotations

import gc

from service.errors import ConfigurationError


def resolve_device(requested: str) -> str:
    """``auto`` → ``cuda`` if available, else ``mps``, else ``cpu``; explicit choices are checked.

    Raises:
        ConfigurationError: the requested accelerator is not present.
    """
    if requested == "cpu":
        return "cpu"
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if requested == "mps":
        if not has_mps:
            raise ConfigurationError("AVIARY_DEVICE=mps but MPS is not available; use auto or cpu")
        return "mps"
    if not torch.cuda.is_available():
        raise ConfigurationError(f"AVIARY_DEVICE={requested} but CUDA is not available; use auto or cpu")
    index = int(requested.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ConfigurationError(
            f"AVIARY_DEVICE={requested} but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return requested


def release_memory(device: str) -> None:
    """Collect garbage, then hand cached accelerator memory back to the driver."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
    elif device == "mps":
        import torch

        torch.mps.empty_cache()
