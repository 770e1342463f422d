"""Output heads: CTC head, transducer prediction networks and joint."""

from __future__ import annotations

from models.decoders.ctc import CTCHead
from models.decoders.rnnt import RNNTJoint, RNNTPredictor, StatelessPredictor, build_predictor

__all__ = ["CTCHead", "RNNTJoint", "RNNTPredictor", "StatelessPredictor", "build_predictor"]
