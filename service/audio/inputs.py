"""What a request carries before decoding: encoded bytes, ``.npy`` bytes, or raw samples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, eq=False)
class AudioInput:
    """One undecoded input.

    Exactly one of ``data`` (an encoded file or ``.npy`` bytes), ``samples`` (a waveform from JSON) and
    ``path`` (a server-side file a manifest names, already checked against the media root) is set.
    ``sample_rate`` is the rate of ``samples`` or of a ``.npy`` payload; encoded files carry their own.
    ``offset`` / ``duration`` (seconds) select a segment, as NeMo manifest entries do.
    """

    label: str  # how errors name the input: its filename, or audio[i]
    filename: str | None = None
    data: bytes | None = None
    samples: np.ndarray | None = None
    content_type: str | None = None
    sample_rate: int = 16000
    path: Path | None = None
    offset: float = 0.0
    duration: float | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else int(getattr(self.samples, "nbytes", 0))


@dataclass(frozen=True, eq=False)
class DecodedAudio:
    """A mono float32 waveform at the model's rate, with its duration in seconds."""

    audio: np.ndarray
    duration: float
    label: str
    filename: str | None
