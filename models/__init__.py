"""aviary's NeMo-compatible ASR inference runtime, in plain PyTorch.

    from models import ASRModel
    model = ASRModel.restore_from("model.nemo", map_location="cpu")
    texts = model.transcribe(["a.wav", "b.flac"], batch_size=8)

Names are imported lazily so that light submodules (``models.audio``, ``models.checkpoint``) load fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ASRModel": "models.asr_model",
    "TranscribeConfig": "models.asr_model",
    "Hypothesis": "models.hypothesis",
    "EncDecCTCModel": "models.families",
    "EncDecCTCModelBPE": "models.families",
    "EncDecRNNTModel": "models.families",
    "EncDecRNNTBPEModel": "models.families",
    "EncDecHybridRNNTCTCModel": "models.families",
    "EncDecHybridRNNTCTCBPEModel": "models.families",
    "EncDecMultiTaskModel": "models.aed.model",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 - the lazily imported names, listed once in _EXPORTS


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    if name == "ASRModel":
        importlib.import_module("models.families")  # registers the concrete classes
    return getattr(importlib.import_module(_EXPORTS[name]), name)
