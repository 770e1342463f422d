"""The units of work: a request (what the route builds) and the per-item jobs the workers batch."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.audio.inputs import AudioInput
from service.pool.backend import DecodeOptions, FloatAudio, Progress

if TYPE_CHECKING:
    from models.hypothesis import Hypothesis

_SEQUENCE = itertools.count()


@dataclass(frozen=True)
class TranscribeRequest:
    """One ``POST /transcribe`` (or ``aviary transcribe``): its inputs, the model and the options."""

    inputs: list[AudioInput]
    model: str | None = None
    options: DecodeOptions = field(default_factory=DecodeOptions)
    return_hypotheses: bool = False
    prompt: Mapping[str, Any] = field(default_factory=dict)  # multitask slots for every input (task, langs...)


@dataclass(eq=False)
class Job:
    """One audio item queued for its model. Its future resolves to the item's hypothesis.

    The timing fields are written by the worker thread before it resolves the future, so they are complete
    once the future is done.
    """

    audio: FloatAudio
    options: DecodeOptions
    duration: float  # seconds
    deadline: float = math.inf  # time.monotonic() after which the job must not start
    prompt: Mapping[str, Any] = field(default_factory=dict)  # per item: does not split batches
    future: Future[Hypothesis] = field(default_factory=Future)
    progress: Progress | None = None  # told (strategy, fraction) while a long input is encoded (worker thread)
    seq: int = field(default_factory=lambda: next(_SEQUENCE))
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    finished_at: float | None = None
    batch_id: int | None = None
    batch_size: int = 0

    @property
    def cancelled(self) -> bool:
        """True once the job can no longer run: cancelled by its client, expired, or otherwise resolved."""
        return self.future.done()

    @property
    def queue_seconds(self) -> float:
        return (self.started_at or time.monotonic()) - self.queued_at


@dataclass(frozen=True)
class ItemResult:
    """One input's outcome, ready to be shaped into a response."""

    index: int
    filename: str | None
    duration: float
    hypothesis: Hypothesis


@dataclass(frozen=True)
class TranscribeOutcome:
    """A whole request's outcome, with the timings reported in ``x-queue-time`` / ``x-inference-time``."""

    model: str
    items: list[ItemResult]
    queue_seconds: float  # longest queue wait among the request's items
    inference_seconds: float  # compute time of the distinct batches the items ran in
    return_hypotheses: bool = False
    timestamps: bool = False
