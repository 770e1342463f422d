"""Running a manifest through one leased model.

Entries are decoded and queued a window at a time (at most two batches' worth of items and padded seconds in
flight), so a manifest of any length holds bounded memory and leaves room in the queue for other clients;
items of the window batch with each other and with other requests' items. Results come back in manifest
order, each as soon as it and every earlier entry are done. An entry whose audio is missing, undecodable or
too long — or that the model fails on — gets an ``error`` object; the others still run. Closing the run
(client gone) cancels everything not yet computed and ends the model lease.

A run opened with ``progress=True`` (NDJSON streaming) also yields ``{"progress": {...}}`` lines while long
entries are encoded by a long-audio strategy: the entry's index and path, the strategy and the fraction
done, in 10 % steps, each before that entry's result line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.batching.jobs import ItemResult, Job
from service.errors import AviaryError, InternalError, Overloaded
from service.manifest.entries import ManifestItem, ManifestRequest
from service.manifest.scoring import corpus_bleu, wer
from service.results import item_body

if TYPE_CHECKING:
    from service.audio import DecodedAudio
    from service.batching import Batcher
    from service.batching.session import ModelSession

log = logging.getLogger("aviary.manifest")
_ECHOED = ("task", "source_lang", "target_lang")


@dataclass(frozen=True)
class EntryOutcome:
    """What the summary needs of one finished entry, and its result line."""

    body: dict[str, Any]
    duration: float = 0.0
    task: str = "asr"
    text: str | None = None  # None: the entry failed
    answer: str | None = None


class ManifestRun:
    """One manifest request's run; use :meth:`open`, iterate :meth:`results`, then :meth:`summary`;
    :meth:`close` always (``collect`` does all of it)."""

    def __init__(self, session: ModelSession, stack: AsyncExitStack, request: ManifestRequest,
                 prompts: list[dict[str, Any]], started: float, progress: bool = False):
        self.session = session
        self.request = request
        self._stack = stack
        self._prompts = prompts
        self._started = started
        self._window_items = max(2 * session.policy.max_items, 1)
        self._window_seconds = 2 * session.policy.max_padded_seconds
        self._tasks: dict[int, asyncio.Task[EntryOutcome]] = {}
        self._inflight_seconds = 0.0
        self._outcomes: list[EntryOutcome] = []
        self._closed = False
        self._progress = progress
        self._progress_lines: deque[dict[str, Any]] = deque()
        self._progress_steps: dict[int, int] = {}
        self._progress_event = asyncio.Event()

    @classmethod
    async def open(cls, batcher: Batcher, request: ManifestRequest, *, progress: bool = False) -> ManifestRun:
        """Lease the model (loading it if needed) and check every entry's prompt against it. ``progress``:
        :meth:`results` also yields progress lines for long entries.

        Raises:
            ModelNotFound / ModelUnavailable / hub errors: no model; UnsupportedOption: an entry asks for a
            task or language the model lacks (422, before anything runs).
        """
        started, stack = time.monotonic(), AsyncExitStack()
        try:
            session = await stack.enter_async_context(batcher.session(request.model, request.options))
            prompts = [session.check_prompt(item.prompt, f"manifest entry {item.index}: ") for item in request.items]
        except BaseException:
            await stack.aclose()
            raise
        return cls(session, stack, request, prompts, started, progress)

    async def collect(self) -> dict[str, Any]:
        """The whole run as one document: ``{"model", "results", "summary"}``."""
        try:
            results = [result async for result in self.results()]
            return {"model": self.session.model, "results": results, "summary": self.summary()}
        finally:
            await self.close()

    async def results(self) -> AsyncIterator[dict[str, Any]]:
        """Each entry's result line, in manifest order, as soon as it and every earlier one are done (and,
        if the run was opened with ``progress``, progress lines as they come)."""
        total, done = len(self.request.items), dict[int, EntryOutcome]()
        started = emitted = 0
        while emitted < total:
            started = self._fill(started)
            while self._progress_lines:
                yield {"progress": self._progress_lines.popleft()}
            if emitted not in done:
                await self._wait_for_news()
                for index in [i for i, task in self._tasks.items() if task.done()]:
                    done[index] = self._finish(self._tasks.pop(index))
                continue
            outcome = done.pop(emitted)
            self._outcomes.append(outcome)
            emitted += 1
            yield outcome.body

    def summary(self) -> dict[str, Any]:
        """Counts, seconds, and WER/BLEU over the entries that carry an ``answer`` (null when none do)."""
        scored = [o for o in self._outcomes if o.text is not None and o.answer is not None]
        score_wer = wer((o.answer or "", o.text or "") for o in scored if o.task == "asr")
        score_bleu = corpus_bleu((o.answer or "", o.text or "") for o in scored if o.task == "ast")
        return {
            "model": self.session.model, "entries": len(self._outcomes),
            "errors": sum(1 for o in self._outcomes if o.text is None),
            "audio_seconds": round(sum(o.duration for o in self._outcomes if o.text is not None), 3),
            "wall_seconds": round(time.monotonic() - self._started, 3),
            "wer": round(score_wer, 4) if score_wer is not None else None,
            "bleu": round(score_bleu, 2) if score_bleu is not None else None,
        }

    async def close(self) -> None:
        """Cancel what has not run yet and end the lease (idempotent; never suspends on the tasks)."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks.values():
            task.cancel()  # each task's finally cancels its queued job, so it never reaches the model
        if self._tasks:
            log.info("manifest on %s closed with %d entries unfinished", self.session.model, len(self._tasks))
        await self._stack.aclose()

    # -- the window ------------------------------------------------------------------------------------

    async def _wait_for_news(self) -> None:
        """Until an entry finishes or (with progress on) a progress line is queued."""
        waiters: set[asyncio.Future[Any]] = set(self._tasks.values())
        news = None
        if self._progress:
            self._progress_event.clear()
            news = asyncio.ensure_future(self._progress_event.wait())
            waiters.add(news)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if news is not None:
                news.cancel()

    def _watcher(self, item: ManifestItem) -> Any:
        """The progress callback of one entry's job: hops from the worker thread onto the event loop."""
        if not self._progress:
            return None
        loop = asyncio.get_running_loop()

        def report(strategy: str, fraction: float) -> None:
            loop.call_soon_threadsafe(self._note_progress, item, strategy, fraction)

        return report

    def _note_progress(self, item: ManifestItem, strategy: str, fraction: float) -> None:
        step = int(min(max(fraction, 0.0), 1.0) * 10)
        if self._closed or step <= self._progress_steps.get(item.index, 0):
            return
        self._progress_steps[item.index] = step
        self._progress_lines.append({"index": item.index, "audio_filepath": item.entry["audio_filepath"],
                                     "strategy": strategy, "fraction": step / 10})
        self._progress_event.set()

    def _fill(self, start: int) -> int:
        items = self.request.items
        while start < len(items) and (not self._tasks or (
            len(self._tasks) < self._window_items and self._inflight_seconds < self._window_seconds
        )):
            item = items[start]
            self._tasks[start] = asyncio.create_task(self._run(item, self._prompts[start]))
            start += 1
        return start

    def _finish(self, task: asyncio.Task[EntryOutcome]) -> EntryOutcome:
        outcome = task.result()
        self._inflight_seconds = max(self._inflight_seconds - outcome.duration, 0.0)
        return outcome

    async def _run(self, item: ManifestItem, prompt: dict[str, Any]) -> EntryOutcome:
        job: Job | None = None
        duration = 0.0
        try:
            decoded = await self.session.decode(item.audio)
            duration = decoded.duration
            self._inflight_seconds += duration
            job = await self._enqueue(decoded, prompt, self._watcher(item))
            return self._success(item, prompt, decoded, await asyncio.wrap_future(job.future))
        except AviaryError as exc:
            return _failure(item, exc, duration)
        except Exception as exc:  # one entry's surprise must not end the whole run
            log.exception("manifest entry %d failed", item.index)
            return _failure(item, InternalError(f"{type(exc).__name__}: {exc}"), duration)
        finally:
            if job is not None:
                job.future.cancel()  # no-op once it ran; drops it unrun when this task was cancelled

    async def _enqueue(self, decoded: DecodedAudio, prompt: Mapping[str, Any], watcher: Any) -> Job:
        """Queue one item, waiting for room (up to AVIARY_REQUEST_TIMEOUT_S) rather than failing the run."""
        deadline = time.monotonic() + self.session.timeout_s
        while True:
            try:
                return self.session.enqueue([decoded], [prompt], [watcher])[0]
            except Overloaded as exc:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(min(exc.retry_after, 0.5))

    def _success(self, item: ManifestItem, prompt: dict[str, Any], decoded: DecodedAudio, hyp: Any) -> EntryOutcome:
        result = item_body(ItemResult(item.index, None, decoded.duration, hyp),
                           hypotheses=self.request.return_hypotheses, timestamps=self.session.options.timestamps)
        result.pop("filename")
        body = {"index": item.index, "audio_filepath": item.entry["audio_filepath"], **result}
        body.update({key: prompt[key] for key in _ECHOED if key in prompt})
        answer = item.entry.get("answer")
        if isinstance(answer, str):
            body["answer"] = answer
        reference = answer if isinstance(answer, str) else None
        return EntryOutcome(body, decoded.duration, _task(prompt), result["text"], reference)


def _failure(item: ManifestItem, error: AviaryError, duration: float) -> EntryOutcome:
    body = {"index": item.index, "audio_filepath": item.entry["audio_filepath"], **error.body()}
    return EntryOutcome(body, duration)


def _task(prompt: Mapping[str, Any]) -> str:
    """asr or ast; a canary2 prompt translates when its languages differ, whatever its task says."""
    source, target = prompt.get("source_lang"), prompt.get("target_lang")
    if prompt.get("task") == "ast" or (source is not None and target is not None and source != target):
        return "ast"
    return "asr"
