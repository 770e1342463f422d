"""The worker and the batcher with EchoBackend: cross-request batching, options, failures, limits, deadlines."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from service.audio import AudioInput
from service.batching import Batcher, BatchPolicy, TranscribeOutcome, TranscribeRequest
from service.errors import InternalError, InvalidAudio, Overloaded, RequestTimeout, UnsupportedOption
from service.pool import DecodeOptions, ModelRegistry, ModelSpec, WarmPool
from service.pool.echo import EchoBackend, echo_text

SR = 16000


def samples(seconds: float, value: float = 0.0) -> np.ndarray:
    return np.full(round(seconds * SR), value, np.float32)


def request(*seconds: float, **kwargs: Any) -> TranscribeRequest:
    inputs = [AudioInput(f"audio[{i}]", samples=samples(s)) for i, s in enumerate(seconds)]
    return TranscribeRequest(inputs, **kwargs)


class Harness:
    """A pool of EchoBackends ("echo", and "rnnt" without a CTC head) behind a batcher."""

    def __init__(self, policy: BatchPolicy, timeout_s: float = 30.0, **echo: Any):
        self.backends: dict[str, EchoBackend] = {}
        self.echo = echo

        def factory(spec: ModelSpec, device: str) -> EchoBackend:
            decoders = ("rnnt",) if spec.name == "rnnt" else ("rnnt", "ctc")
            backend = self.backends[spec.name] = EchoBackend(spec.name, decoders=decoders, **self.echo)
            return backend

        registry = ModelRegistry([ModelSpec(n, "explicit", n) for n in ("echo", "rnnt")])
        self.pool = WarmPool(registry, factory, device="cpu", max_loaded=2)
        self.batcher = Batcher(self.pool, policy, None, max_audio_s=120, request_timeout_s=timeout_s)

    async def close(self) -> None:
        await self.batcher.close()
        await self.pool.close()


def run(policy: BatchPolicy, scenario: Callable[[Harness], Any], **kwargs: Any) -> Harness:
    async def main() -> Harness:
        harness = Harness(policy, **kwargs)
        try:
            await scenario(harness)
        finally:
            await harness.close()
        return harness

    return asyncio.run(main())


def texts(outcome: TranscribeOutcome) -> list[str]:
    return [item.hypothesis.text for item in outcome.items]


def test_items_from_many_requests_share_batches_and_keep_their_results() -> None:
    lengths = [round(0.5 + i * 0.0625, 4) for i in range(24)]

    async def scenario(h: Harness) -> None:
        async with h.pool.lease("echo"):
            pass  # load first, so every request queues at once
        outcomes = await asyncio.gather(*(h.batcher.submit(request(s, s * 2)) for s in lengths))
        for s, outcome in zip(lengths, outcomes):
            assert texts(outcome) == [echo_text(s), echo_text(s * 2)]
            assert [i.index for i in outcome.items] == [0, 1]
        batches = h.backends["echo"].batches
        assert sum(len(b) for b in batches) == 48
        assert max(len(b) for b in batches) > 2  # items of different requests were batched together
        assert max(len(b) for b in batches) <= 8
        assert h.backends["echo"].threads == {"aviary-worker[echo]"}  # inference never on the event loop

    run(BatchPolicy(max_items=8, max_padded_seconds=100, max_wait_s=0.05), scenario)


def test_options_split_batches() -> None:
    async def scenario(h: Harness) -> None:
        async with h.pool.lease("echo"):
            pass
        plain, ctc, stamped = await asyncio.gather(
            h.batcher.submit(request(1.0, 1.5)),
            h.batcher.submit(request(1.0, 1.5, options=DecodeOptions("ctc"))),
            h.batcher.submit(request(1.0, options=DecodeOptions(None, timestamps=True))),
        )
        assert texts(plain) == ["echo 1.0000", "echo 1.5000"]
        assert texts(ctc) == ["echo/ctc 1.0000", "echo/ctc 1.5000"]
        assert stamped.items[0].hypothesis.timestamp["word"][0]["end"] == 1.0
        assert sorted(len(b) for b in h.backends["echo"].batches) == [1, 2, 2]

    run(BatchPolicy(max_wait_s=0.05), scenario)


def test_prompts_do_not_split_batches_but_options_still_do() -> None:
    async def scenario(h: Harness) -> None:
        async with h.pool.lease("echo"):
            pass
        asr, ast, stamped = await asyncio.gather(
            h.batcher.submit(request(1.0, prompt={"task": "asr", "source_lang": "en"})),
            h.batcher.submit(request(1.5, prompt={"task": "translate", "source_lang": "en", "target_lang": "de"})),
            h.batcher.submit(request(1.0, options=DecodeOptions(None, True), prompt={"source_lang": "fr"})),
        )
        assert texts(asr) == [echo_text(1.0, prompt={"task": "asr", "source_lang": "en"})]
        assert texts(ast) == [echo_text(1.5, prompt={"task": "ast", "source_lang": "en", "target_lang": "de"})]
        assert texts(stamped) == [echo_text(1.0, prompt={"source_lang": "fr"})]
        assert sorted(len(b) for b in h.backends["echo"].batches) == [1, 2]  # asr and ast together
        with pytest.raises(UnsupportedOption, match="source_lang=ja; its languages are: en, de, fr"):
            await h.batcher.submit(request(1.0, prompt={"source_lang": "ja"}))

    run(BatchPolicy(max_wait_s=0.05), scenario, languages=("en", "de", "fr"))


def test_default_decoder_by_name_is_normalised_and_unknown_one_is_422() -> None:
    async def scenario(h: Harness) -> None:
        outcome = await h.batcher.submit(request(1.0, model="echo", options=DecodeOptions("rnnt")))
        assert texts(outcome) == ["echo 1.0000"]
        with pytest.raises(UnsupportedOption, match="has no 'ctc' decoder"):
            await h.batcher.submit(request(1.0, model="rnnt", options=DecodeOptions("ctc")))

    run(BatchPolicy(max_wait_s=0), scenario)


def test_a_failing_item_fails_only_its_request_and_the_worker_survives() -> None:
    async def scenario(h: Harness) -> None:
        async with h.pool.lease("echo"):
            pass
        good = [h.batcher.submit(request(s)) for s in (1.0, 1.25, 1.5)]
        bad = h.batcher.submit(TranscribeRequest([AudioInput("poison", samples=samples(1.1, 0.5))]))
        results = await asyncio.gather(*good, bad, return_exceptions=True)
        assert [texts(r) for r in results[:3]] == [["echo 1.0000"], ["echo 1.2500"], ["echo 1.5000"]]
        assert isinstance(results[3], InternalError) and "asked to fail" in results[3].message
        assert max(len(b) for b in h.backends["echo"].batches) == 4  # they did share a batch first
        assert texts(await h.batcher.submit(request(2.0))) == ["echo 2.0000"]

    run(BatchPolicy(max_items=4, max_wait_s=0.3), scenario, fail_if=lambda a: bool(a.max() > 0.25))


def test_queue_budget_answers_429_with_retry_after() -> None:
    async def scenario(h: Harness) -> None:
        async with h.pool.lease("echo"):
            pass
        running = asyncio.ensure_future(h.batcher.submit(request(2.0)))  # occupies the worker ~0.4 s
        await asyncio.sleep(0.1)
        queued = asyncio.ensure_future(h.batcher.submit(request(2.0)))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as info:
            await h.batcher.submit(request(1.5))
        assert info.value.status == 429 and 1 <= info.value.retry_after <= 60
        assert info.value.headers["Retry-After"] == str(info.value.retry_after)
        assert texts(await running) == ["echo 2.0000"] and texts(await queued) == ["echo 2.0000"]

    run(BatchPolicy(max_wait_s=0, max_queue_audio_s=3.0), scenario, seconds_per_second=0.2)


def test_queue_wait_past_the_deadline_is_504_and_never_runs() -> None:
    async def scenario(h: Harness) -> None:
        async with h.pool.lease("echo"):
            pass
        running = asyncio.ensure_future(h.batcher.submit(request(3.0)))  # ~0.6 s of compute
        await asyncio.sleep(0.05)
        with pytest.raises(RequestTimeout, match="dropped unrun"):
            await h.batcher.submit(request(1.234))
        assert texts(await running) == ["echo 3.0000"]
        await asyncio.sleep(0.1)
        assert all(1.234 not in b for b in h.backends["echo"].batches)

    run(BatchPolicy(max_wait_s=0), scenario, timeout_s=0.2, seconds_per_second=0.2)


def test_cancelled_request_items_never_run() -> None:
    async def scenario(h: Harness) -> None:
        async with h.pool.lease("echo"):
            pass
        running = asyncio.ensure_future(h.batcher.submit(request(2.0)))
        await asyncio.sleep(0.05)
        doomed = asyncio.ensure_future(h.batcher.submit(request(1.111, 1.222)))
        await asyncio.sleep(0.05)
        doomed.cancel()
        await asyncio.gather(doomed, return_exceptions=True)
        await running
        after = await h.batcher.submit(request(0.5))
        assert texts(after) == ["echo 0.5000"]
        ran = [d for b in h.backends["echo"].batches for d in b]
        assert 1.111 not in ran and 1.222 not in ran

    run(BatchPolicy(max_wait_s=0), scenario, seconds_per_second=0.2)


def test_bad_input_is_rejected_before_queueing() -> None:
    async def scenario(h: Harness) -> None:
        empty = TranscribeRequest([AudioInput("clip.wav", data=b"")])
        with pytest.raises(InvalidAudio, match="clip.wav"):
            await h.batcher.submit(empty)
        assert h.backends["echo"].batches == []

    run(BatchPolicy(max_wait_s=0), scenario)


def test_outcome_timings() -> None:
    async def scenario(h: Harness) -> None:
        outcome = await h.batcher.submit(request(1.0, 2.0))
        assert outcome.model == "echo"
        assert 0.0 <= outcome.queue_seconds < 5 and outcome.inference_seconds >= 0.05

    run(BatchPolicy(max_wait_s=0.01), scenario, seconds_per_second=0.02)


def test_worker_stop_fails_queued_jobs_with_503() -> None:
    from service.batching import Job, ModelWorker
    from service.errors import ModelUnavailable

    backend = EchoBackend(seconds_per_second=0.2)
    worker = ModelWorker(backend, BatchPolicy(max_wait_s=0))
    first, second = Job(samples(1.0), DecodeOptions(), 1.0), Job(samples(1.0), DecodeOptions(), 1.0)
    worker.submit([first])
    threading.Event().wait(0.05)
    worker.submit([second])
    worker.stop()
    assert first.future.result().text == "echo 1.0000"
    assert isinstance(second.future.exception(), ModelUnavailable)
    assert worker.backend is None


@pytest.mark.parametrize("packs", [False, True])
def test_packing_backends_batch_items_of_any_length(packs: bool) -> None:
    """The padding bound keeps 1 s and 10 s items apart, unless the model runs batches packed."""

    async def scenario(h: Harness) -> None:
        async with h.pool.lease("echo"):
            pass
        await asyncio.gather(*(h.batcher.submit(request(s)) for s in (1.0, 1.1, 10.0, 1.2)))
        sizes = sorted(len(b) for b in h.backends["echo"].batches)
        assert sizes == ([4] if packs else [1, 3])
        # /metrics' padded seconds: the length groups' (packed) or each batch's longest x items
        registry = h.batcher._metrics.registry
        label = {"model": "echo"}
        for _ in range(200):  # the worker resolves a batch's futures first, then records its metrics
            if registry.get_sample_value("aviary_batch_padded_audio_seconds_count", label) == len(sizes):
                break
            await asyncio.sleep(0.01)
        assert registry.get_sample_value("aviary_batch_padded_audio_seconds_count", label) == len(sizes)
        assert registry.get_sample_value("aviary_batch_padded_audio_seconds_sum", label) == pytest.approx(13.6)

    run(BatchPolicy(max_padded_seconds=100, max_padding_waste=0.15, max_wait_s=0.05), scenario, packs=packs)


def test_packed_padded_seconds_counts_each_length_group() -> None:
    from service.batching.policy import packed_padded_seconds

    assert packed_padded_seconds([1.0, 1.1, 10.0, 1.2]) == pytest.approx(1.2 * 3 + 10.0)
    assert packed_padded_seconds([5.0]) == 5.0
    assert packed_padded_seconds([]) == 0.0
