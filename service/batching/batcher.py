"""The front door of the inference path: ``await batcher.submit(request)``.

For one request it leases the model from the warm pool, checks the options against it, decodes the inputs
off the event loop, queues one job per input on the model's worker (where they can share batches with other
requests' items), and awaits them — dropping them unrun if their queue wait passes the deadline, and
cancelling them if the caller goes away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor
from contextlib import asynccontextmanager

from service.batching.jobs import ItemResult, Job, TranscribeOutcome, TranscribeRequest
from service.batching.session import ModelSession
from service.batching.worker import BatchPolicy, ModelWorker
from service.errors import RequestTimeout
from service.metrics import Metrics
from service.pool import Backend, DecodeOptions, WarmPool, check_options


class Batcher:
    """Owns one :class:`ModelWorker` per loaded model; stops it when the pool unloads the model.

    Args:
        pool: the warm pool to lease models from.
        policy: batch and queue limits.
        decode_executor: threads that decode and resample uploads.
        max_audio_s: longest accepted input.
        request_timeout_s: longest queue wait before a job is dropped with 504.
    """

    def __init__(
        self, pool: WarmPool, policy: BatchPolicy, decode_executor: Executor | None, *,
        max_audio_s: float, request_timeout_s: float, metrics: Metrics | None = None,
    ):
        self._pool = pool
        self._policy = policy
        self._executor = decode_executor
        self._max_audio_s = max_audio_s
        self._timeout_s = request_timeout_s
        self._metrics = metrics or Metrics()
        self._workers: dict[str, ModelWorker] = {}
        pool.add_unload_listener(self._on_unload)

    async def submit(self, request: TranscribeRequest) -> TranscribeOutcome:
        """Transcribe every input of ``request``; results come back in input order.

        Raises:
            AviaryError: 404 unknown model, 422 unsupported option, 400/413/415 bad input, 429 queue full,
                503 model failed to load, 504 queue wait past the deadline, 500 model failure.
        """
        async with self.session(request.model, request.options) as session:
            prompt = session.check_prompt(request.prompt)
            decoded = list(await asyncio.gather(*(session.decode(item) for item in request.inputs)))
            jobs = session.enqueue(decoded, [prompt] * len(decoded))
            await self._wait(jobs)
        items = [ItemResult(i, d.filename, d.duration, j.future.result()) for i, (d, j) in enumerate(zip(decoded, jobs))]
        return TranscribeOutcome(
            session.model, items, _queue_seconds(jobs), _inference_seconds(jobs),
            return_hypotheses=request.return_hypotheses, timestamps=session.options.timestamps,
        )

    @asynccontextmanager
    async def session(self, model: str | None, options: DecodeOptions) -> AsyncIterator[ModelSession]:
        """Lease ``model`` (loading it if needed) and check ``options`` against it, for one request.

        Raises:
            ModelNotFound, ModelUnavailable (and the hub errors): the model cannot be had.
            UnsupportedOption: an option the model lacks.
        """
        async with self._pool.lease(model) as backend:
            info = backend.info()
            yield ModelSession(
                backend, check_options(backend.name, info, options), self._worker_for(backend), self._policy,
                self._executor, self._max_audio_s, self._timeout_s, info,
            )

    async def close(self) -> None:
        """Stop every worker (their queued jobs fail with 503)."""
        workers, self._workers = list(self._workers.values()), {}
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in workers))

    def worker(self, name: str) -> ModelWorker | None:
        return self._workers.get(name)

    def _worker_for(self, backend: Backend) -> ModelWorker:
        worker = self._workers.get(backend.name)
        if worker is None or worker.backend is not backend:
            worker = self._workers[backend.name] = ModelWorker(backend, self._policy, self._metrics)
        return worker

    async def _wait(self, jobs: Sequence[Job]) -> None:
        """Await every job; on the deadline cancel those not started (504); on cancellation cancel them all."""
        waiters = [asyncio.wrap_future(job.future) for job in jobs]
        try:
            remaining = max(jobs[0].deadline - time.monotonic(), 0.0)
            _, late = await asyncio.wait(waiters, timeout=remaining)
            if late:
                if [job.future.cancel() for job in jobs if not job.future.done()].count(True):
                    raise RequestTimeout(
                        f"the request waited more than {self._timeout_s:g} s in the queue and was dropped unrun "
                        "(AVIARY_REQUEST_TIMEOUT_S); retry later or send less audio at once"
                    )
                await asyncio.wait(late)  # already running: let them finish
            for waiter in waiters:
                waiter.result()  # the first failed item fails the request
        finally:
            for job in jobs:
                job.future.cancel()  # no-op for finished or running jobs
            for waiter in waiters:
                if waiter.done() and not waiter.cancelled():
                    waiter.exception()  # mark retrieved: a sibling's error already answers the request

    async def _on_unload(self, name: str, backend: Backend) -> None:
        worker = self._workers.get(name)
        if worker is not None and worker.backend is backend:
            del self._workers[name]
            await asyncio.to_thread(worker.stop)


def _queue_seconds(jobs: Sequence[Job]) -> float:
    return max((job.queue_seconds for job in jobs), default=0.0)


def _inference_seconds(jobs: Sequence[Job]) -> float:
    batches = {job.batch_id: (job.finished_at or 0.0) - (job.started_at or 0.0) for job in jobs}
    return sum(batches.values())
