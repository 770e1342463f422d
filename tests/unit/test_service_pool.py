"""The warm pool with EchoBackend: shared loads, LRU, TTL, pinning, failures, and memory really freed."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from service.audio import AudioInput
from service.batching import Batcher, BatchPolicy, TranscribeRequest
from service.errors import ModelNotFound, ModelUnavailable
from service.pool import ModelRegistry, ModelSpec, WarmPool
from service.pool.echo import EchoBackend


class Factory:
    """Counts loads; makes EchoBackends (or fails for the names in ``broken``)."""

    def __init__(self, load_seconds: float = 0.0, broken: tuple[str, ...] = ()):
        self.load_seconds = load_seconds
        self.broken = broken
        self.calls: list[str] = []
        self.made: list[weakref.ref[EchoBackend]] = []
        self.lock = threading.Lock()

    def __call__(self, spec: ModelSpec, device: str) -> EchoBackend:
        with self.lock:
            self.calls.append(spec.name)
        if spec.name in self.broken:
            raise RuntimeError("checkpoint is corrupt")
        backend = EchoBackend(spec.name, load_seconds=self.load_seconds)
        self.made.append(weakref.ref(backend))
        return backend


def make_pool(factory: Factory, names: str = "abc", **kwargs: Any) -> WarmPool:
    registry = ModelRegistry([ModelSpec(n, "explicit", f"/models/{n}.nemo") for n in names])
    return WarmPool(registry, factory, device="cpu", max_loaded=kwargs.pop("max_loaded", 4), **kwargs)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def test_lease_loads_on_first_use_and_reuses() -> None:
    factory = Factory()

    async def scenario() -> None:
        pool = make_pool(factory)
        async with pool.lease("a") as first:
            assert first.warmed and pool.loaded() == ["a"]
        async with pool.lease("a") as second:
            assert second is first
        async with pool.lease(None) as default:  # the first model is the default
            assert default is first
        await pool.close()

    run(scenario())
    assert factory.calls == ["a"]


def test_concurrent_first_requests_share_one_load() -> None:
    factory = Factory(load_seconds=0.1)

    async def scenario() -> None:
        pool = make_pool(factory)

        async def use() -> EchoBackend:
            async with pool.lease("a") as backend:
                return backend

        backends = await asyncio.gather(*(use() for _ in range(10)))
        assert len({id(b) for b in backends}) == 1
        await pool.close()

    run(scenario())
    assert factory.calls == ["a"]


def test_unknown_model_is_404_with_the_names() -> None:
    async def scenario() -> None:
        pool = make_pool(Factory())
        with pytest.raises(ModelNotFound, match="available models: a, b, c"):
            async with pool.lease("zz"):
                pass

    run(scenario())


def test_load_failure_is_shared_by_concurrent_waiters_then_retried() -> None:
    factory = Factory(broken=("a",))

    async def scenario() -> None:
        pool = make_pool(factory)

        async def use() -> None:
            async with pool.lease("a"):
                pass

        results = await asyncio.gather(*(use() for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, ModelUnavailable) for r in results)
        assert "failed to load" in str(results[0]) and "checkpoint is corrupt" in str(results[0])
        assert factory.calls == ["a"]
        with pytest.raises(ModelUnavailable):
            await use()  # a later request tries again
        assert factory.calls == ["a", "a"]
        async with pool.lease("b"):
            pass  # other models are unaffected
        await pool.close()

    run(scenario())


def test_lru_eviction_past_max_loaded() -> None:
    factory = Factory()

    async def scenario() -> None:
        pool = make_pool(factory, max_loaded=2)
        for name in "ab":
            async with pool.lease(name):
                pass
        async with pool.lease("a"):
            pass  # a is now more recently used than b
        async with pool.lease("c"):
            assert sorted(pool.loaded()) == ["a", "c"]
        await pool.close()

    run(scenario())


def test_leased_and_pinned_models_are_not_evicted() -> None:
    factory = Factory()

    async def scenario() -> None:
        pool = make_pool(factory, max_loaded=1)
        await pool.preload(["a"])  # pinned
        async with pool.lease("b"):
            assert sorted(pool.loaded()) == ["a", "b"]  # over capacity rather than evicting the pin
            async with pool.lease("c"):
                assert sorted(pool.loaded()) == ["a", "b", "c"]  # b is leased
        await pool.reap()
        assert pool.loaded() == ["a"]
        await pool.close()

    run(scenario())


def test_idle_ttl_unloads_and_frees_the_model() -> None:
    factory = Factory()

    async def scenario() -> None:
        pool = make_pool(factory, ttl_s=0.1)
        await pool.start()
        async with pool.lease("a"):
            await asyncio.sleep(0.3)  # leased models never expire
            assert pool.loaded() == ["a"]
        for _ in range(50):
            await asyncio.sleep(0.05)
            if not pool.loaded():
                break
        assert pool.loaded() == []
        await pool.close()

    run(scenario())
    gc.collect()
    assert factory.made[0]() is None


def test_unload_with_a_worker_frees_the_model_and_its_thread() -> None:
    factory = Factory()

    async def scenario() -> threading.Thread:
        pool = make_pool(factory)
        batcher = Batcher(pool, BatchPolicy(max_wait_s=0), None, max_audio_s=60, request_timeout_s=10)
        audio = np.zeros(8000, np.float32)
        request = TranscribeRequest([AudioInput("x", samples=audio)], model="a")
        outcome = await batcher.submit(request)
        assert outcome.items[0].hypothesis.text == "echo 0.5000"
        worker = batcher.worker("a")
        assert worker is not None
        thread = worker._thread
        assert await pool.unload("a")
        assert batcher.worker("a") is None and worker.backend is None
        del worker, outcome
        await pool.close()
        return thread

    thread = run(scenario())
    assert not thread.is_alive()
    gc.collect()
    backend = factory.made[0]()
    assert backend is None, gc.get_referrers(backend)


def test_close_unloads_everything() -> None:
    factory = Factory()

    async def scenario() -> None:
        pool = make_pool(factory)
        for name in "abc":
            async with pool.lease(name):
                pass
        await pool.close()
        assert pool.loaded() == []

    run(scenario())
    gc.collect()
    assert all(ref() is None for ref in factory.made)


def test_status_reports_the_models_info() -> None:
    async def scenario() -> None:
        pool = make_pool(Factory())
        assert pool.status("a")["loaded"] is False and pool.status("a")["info"] is None
        async with pool.lease("a"):
            status = pool.status("a")
            assert status["loaded"] and status["device"] == "cpu" and status["leases"] == 1
            assert status["info"]["decoders"] == ["rnnt", "ctc"]
        await pool.close()
        assert pool.status("a")["info"]["sample_rate"] == 16000  # remembered after unload

    run(scenario())
