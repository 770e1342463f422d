"""One request's use of one leased model: its options and prompts checked, its inputs decoded off the event
loop, its jobs queued on the model's worker. ``Batcher.submit`` and manifest runs both go through it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from service.audio import AudioInput, DecodedAudio, decode_input
from service.batching.jobs import Job
from service.batching.worker import BatchPolicy, ModelWorker
from service.errors import UnsupportedOption
from service.pool import Backend, DecodeOptions
from service.pool.backend import Progress
from service.pool.prompt import check_prompt


@dataclass(eq=False)
class ModelSession:
    """A leased model with checked options (valid while its lease lasts)."""

    backend: Backend
    options: DecodeOptions
    worker: ModelWorker
    policy: BatchPolicy
    executor: Executor | None
    max_audio_s: float
    timeout_s: float
    info: dict[str, Any] = field(default_factory=dict)
    _accepted: set[tuple[tuple[str, str], ...]] = field(default_factory=set)

    @property
    def model(self) -> str:
        return self.backend.name

    def check_prompt(self, prompt: Mapping[str, Any], where: str = "") -> dict[str, Any]:
        """The prompt to queue with an item (see ``service.pool.prompt.check_prompt``); slot values the model
        itself refuses (``pnc=maybe``) are caught here too, each distinct prompt asked once.

        Raises:
            UnsupportedOption: the model cannot take this prompt (422).
        """
        checked = check_prompt(self.model, self.info, prompt, timestamps=self.options.timestamps, where=where)
        key = tuple(sorted((k, repr(v)) for k, v in checked.items()))
        if checked and key not in self._accepted:
            try:
                self.backend.check_prompt(checked)
            except ValueError as exc:  # the runtime's UnsupportedOptionError is a ValueError
                raise UnsupportedOption(f"{where}model '{self.model}': {exc}", param="prompt") from None
            self._accepted.add(key)
        return checked

    async def decode(self, item: AudioInput) -> DecodedAudio:
        """Decode and resample one input in the decode threads.

        Raises:
            InvalidAudio / UnsupportedMediaType / AudioTooLong: the input is unusable.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.executor, decode_input, item, self.backend.sample_rate, self.max_audio_s
        )

    def enqueue(self, decoded: Sequence[DecodedAudio], prompts: Sequence[Mapping[str, Any]],
                progress: Sequence[Progress | None] | None = None) -> list[Job]:
        """Queue one job per decoded input (all or none), each with its prompt and optional progress
        callback (called from the worker thread while a long input is encoded).

        Raises:
            Overloaded: the model's queue is full (429).
            ModelUnavailable: the model is being unloaded.
        """
        deadline = time.monotonic() + self.timeout_s
        watchers = list(progress) if progress is not None else [None] * len(decoded)
        jobs = [Job(d.audio, self.options, d.duration, deadline, prompt=p, progress=w)
                for d, p, w in zip(decoded, prompts, watchers)]
        self.worker.submit(jobs)
        return jobs
