"""The result of transcribing one utterance, shaped like NeMo's ``Hypothesis``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Hypothesis:
    """One utterance's transcript and, on request, its alignments and timestamps.

    Field meanings follow NeMo so that code written against NeMo keeps working:

    * ``y_sequence`` — token ids (transducers); for CTC it is the per-frame argmax (blanks included)
      without ``return_hypotheses`` and the ``[T, V+1]`` log-prob matrix with it (NeMo's behaviour).
    * ``timestamp`` — frame indices of tokens, or after ``timestamps=True`` a dict with ``char``,
      ``word`` and ``segment`` lists (offsets in encoder frames, ``start``/``end`` in seconds).
    * ``tokens`` — aviary's addition: always the emitted token ids, whatever ``y_sequence`` holds.
    * ``strategy`` — aviary's addition: how the audio was encoded (``full``, ``local_attention`` or
      ``chunked``, see :mod:`models.long_audio`); None where not recorded (AED models).
    """

    score: float
    y_sequence: torch.Tensor | list[int]
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    alignments: Any = None
    timestamp: Any = field(default_factory=list)
    token_duration: torch.Tensor | None = None
    length: int = 0
    dec_state: Any = None
    langs: Any = None
    strategy: str | None = None

    @property
    def words(self) -> list[str]:
        return self.text.split()
