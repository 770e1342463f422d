"""One worker per loaded model: a dedicated thread that owns the model and runs its batches.

Inference never runs on the event loop. Requests hand jobs over with :meth:`ModelWorker.submit` (bounded:
429 past the queue budget); the thread waits up to ``max_wait_s`` for a batch to fill, asks the pure
:func:`next_batch` policy what to run, runs it, and resolves each job's future. A failing batch is retried
item by item so that one bad input fails only its own request; the thread itself never dies.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

from service.batching.jobs import Job
from service.batching.policy import next_batch, packed_padded_seconds, padded_seconds
from service.errors import (
    AviaryError,
    InternalError,
    ModelUnavailable,
    Overloaded,
    RequestTimeout,
    from_runtime,
)
from service.metrics import Metrics
from service.pool.backend import Backend, Progress

log = logging.getLogger("aviary.worker")
_BATCH_IDS = itertools.count()


@dataclass(frozen=True)
class BatchPolicy:
    """Limits on batches and on a model's queue (see ``Settings`` for their meaning)."""

    max_items: int = 32
    max_padded_seconds: float = 600.0
    max_padding_waste: float = float("inf")  # Settings.max_padding_waste bounds it in the service
    max_wait_s: float = 0.01
    max_queue_audio_s: float = 3600.0
    max_queue_items: int = 4096


class ModelWorker:
    """The queue and the inference thread of one loaded model."""

    def __init__(self, backend: Backend, policy: BatchPolicy, metrics: Metrics | None = None):
        self.name = backend.name
        self._backend: Backend | None = backend
        self._policy = policy
        self._metrics = metrics or Metrics()
        self._cond = threading.Condition()
        self._pending: list[Job] = []
        self._stopping = False
        self._throughput = 0.0  # audio seconds per wall second, smoothed; estimates Retry-After
        self._thread = threading.Thread(target=self._loop, name=f"aviary-worker[{self.name}]", daemon=True)
        self._thread.start()

    @property
    def backend(self) -> Backend | None:
        return self._backend

    def submit(self, jobs: Sequence[Job]) -> None:
        """Queue ``jobs`` (all or none).

        Raises:
            Overloaded: the queue would exceed its audio-seconds or item budget (an empty queue always admits).
            ModelUnavailable: the worker is stopping.
        """
        seconds = sum(job.duration for job in jobs)
        with self._cond:
            if self._stopping:
                raise ModelUnavailable(f"model '{self.name}' is being unloaded; retry the request")
            live = [job for job in self._pending if not job.cancelled]
            queued = sum(job.duration for job in live)
            too_many = len(live) + len(jobs) > self._policy.max_queue_items
            if live and (queued + seconds > self._policy.max_queue_audio_s or too_many):
                raise Overloaded(
                    f"model '{self.name}' is overloaded: {queued:.0f} s of audio ({len(live)} items) are "
                    f"queued and this request adds {seconds:.1f} s; retry later",
                    retry_after=self._retry_after(queued),
                )
            self._pending = live + list(jobs)
            self._metrics.queued_audio.labels(self.name).set(queued + seconds)
            self._cond.notify()

    def queued_audio_seconds(self) -> float:
        with self._cond:
            return sum(job.duration for job in self._pending if not job.cancelled)

    def stop(self, timeout: float | None = None) -> None:
        """Finish the running batch, fail what is still queued (503), end the thread, drop the model."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        self._backend = None

    # -- the worker thread ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while (batch := self._take_batch()) is not None:
            try:
                self._run(batch)
            except Exception as exc:  # last line of defence: the thread must survive
                log.exception("worker of model %s failed outside the model", self.name)
                self._fail_all(batch, InternalError(f"model '{self.name}': {type(exc).__name__}: {exc}"))

    def _take_batch(self) -> list[Job] | None:
        """Block until a batch is due; ``None`` when stopping. Expired jobs are failed here, unrun."""
        with self._cond:
            while True:
                self._expire(time.monotonic())
                if self._stopping:
                    self._fail_all(self._pending, ModelUnavailable(f"model '{self.name}' was unloaded; retry"))
                    self._pending = []
                    return None
                if not self._pending:
                    self._cond.wait()
                    continue
                wait = self._pending[0].queued_at + self._policy.max_wait_s - time.monotonic()
                if wait > 0 and not self._full():
                    self._cond.wait(min(wait, self._time_to_first_deadline()))
                    continue
                batch, self._pending = next_batch(
                    self._pending, self._policy.max_items, self._policy.max_padded_seconds,
                    math.inf if self._packs() else self._policy.max_padding_waste,
                )
                self._metrics.queued_audio.labels(self.name).set(sum(j.duration for j in self._pending))
                return batch

    def _packs(self) -> bool:
        """A packing backend pads each length group of a batch only to that group's longest item, within
        the runtime's own bound: batches need not be of similar lengths."""
        return bool(getattr(self._backend, "packs", False))

    def _full(self) -> bool:
        head = self._pending[0].options
        group = [job for job in self._pending if job.options == head]
        return len(group) >= self._policy.max_items or padded_seconds(group) >= self._policy.max_padded_seconds

    def _time_to_first_deadline(self) -> float:
        return max(min((job.deadline for job in self._pending), default=math.inf) - time.monotonic(), 0.0)

    def _expire(self, now: float) -> None:
        expired = [job for job in self._pending if job.deadline <= now and not job.cancelled]
        for job in expired:
            _resolve(job.future, error=RequestTimeout(
                f"the request waited {now - job.queued_at:.1f} s in model '{self.name}''s queue and was "
                "dropped unrun (AVIARY_REQUEST_TIMEOUT_S); retry later or with less audio"
            ))
        self._metrics.items.labels(self.name, "expired").inc(len(expired))
        cancelled = sum(1 for job in self._pending if job.future.cancelled())
        self._metrics.items.labels(self.name, "cancelled").inc(cancelled)
        self._pending = [job for job in self._pending if not job.cancelled]

    def _run(self, batch: list[Job]) -> None:
        # set_running_or_notify_cancel is the point of no return: from here a client can no longer cancel.
        running = [job for job in batch if job.future.set_running_or_notify_cancel()]
        self._metrics.items.labels(self.name, "cancelled").inc(len(batch) - len(running))
        if not running:
            return
        try:
            self._execute(running)
        except Exception as exc:  # noqa: BLE001 - retried alone below, so one bad item fails only itself
            if len(running) == 1:
                self._fail_all(running, from_runtime(exc, self.name))
                log.warning("model %s failed on an item: %s", self.name, exc)
                return
            log.warning("model %s failed on a batch of %d (%s); retrying its items one by one",
                        self.name, len(running), exc)
            for job in running:
                try:
                    self._execute([job])
                except Exception as item_exc:  # noqa: BLE001
                    self._fail_all([job], from_runtime(item_exc, self.name))

    def _execute(self, jobs: list[Job]) -> None:
        """Run one batch and resolve its futures; raises whatever the backend raised."""
        assert self._backend is not None
        started, batch_id = time.monotonic(), next(_BATCH_IDS)
        watchers = [job.progress for job in jobs if job.progress is not None]
        extra = {"progress": _fan_out(watchers)} if watchers else {}
        hyps = self._backend.transcribe_batch(
            [job.audio for job in jobs], jobs[0].options, [j.prompt for j in jobs], **extra
        )
        if len(hyps) != len(jobs):
            raise RuntimeError(f"the model returned {len(hyps)} results for {len(jobs)} inputs")
        finished = time.monotonic()
        for job, hyp in zip(jobs, hyps):
            job.started_at, job.finished_at, job.batch_id, job.batch_size = started, finished, batch_id, len(jobs)
            _resolve(job.future, result=hyp)
        durations = [job.duration for job in jobs]
        padded = packed_padded_seconds(durations) if self._packs() else max(durations) * len(jobs)
        log.debug("model %s ran a batch of %d (%.1f padded s) in %.3f s", self.name, len(jobs), padded,
                  finished - started)
        self._metrics.observe_batch(self.name, durations, [started - j.queued_at for j in jobs],
                                    finished - started, padded)
        self._metrics.items.labels(self.name, "ok").inc(len(jobs))
        rate = sum(durations) / max(finished - started, 1e-6)
        self._throughput = rate if not self._throughput else 0.8 * self._throughput + 0.2 * rate

    def _fail_all(self, jobs: Sequence[Job], error: AviaryError) -> None:
        now = time.monotonic()
        for job in jobs:
            job.finished_at = now
            _resolve(job.future, error=error)
        self._metrics.items.labels(self.name, "error").inc(len(jobs))

    def _retry_after(self, queued_seconds: float) -> int:
        estimate = queued_seconds / self._throughput if self._throughput else 1.0
        return int(min(max(math.ceil(estimate), 1), 60))


def _fan_out(watchers: list[Progress]) -> Progress:
    """One progress callback for a batch: tells every job that asked (a failing watcher is only logged)."""

    def report(strategy: str, fraction: float) -> None:
        for watcher in watchers:
            try:
                watcher(strategy, fraction)
            except Exception:  # a listener must never break the batch
                log.exception("a progress listener failed")

    return report


def _resolve(future: Future[Any], *, result: object = None, error: BaseException | None = None) -> None:
    """Settle a future unless its client already cancelled it (a race the client may win)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
