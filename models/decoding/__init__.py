"""Greedy decoding: CTC collapse and batched label-looping transducer search."""

from __future__ import annotations

from models.decoding.ctc import CTCResult, ctc_greedy
from models.decoding.rnnt import TransducerResult, greedy_multiblank, greedy_rnnt, greedy_tdt

__all__ = ["CTCResult", "TransducerResult", "ctc_greedy", "greedy_multiblank", "greedy_rnnt", "greedy_tdt"]
