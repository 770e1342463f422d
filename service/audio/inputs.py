"""What a request carries before decoding: encoded bytes, ``.npy`` bytes, or raw samples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class AudioInput:
    """One undecoded input.

    Exactly one of ``data`` (an encoded file or ``.npy`` bytes) and ``samples`` (a waveform from JSON) is set.
    ``sample_rate`` is the rate of ``samples`` or of a ``.npy`` payload; encoded files carry their own.
    """

    label: str  # how errors name the input: its filename, or audio[i]
    filename: str | None = None
    data: bytes | None = None
    samples: np.ndarray | None = None
    content_type: str | None = None
    sample_rate: int = 16000

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
