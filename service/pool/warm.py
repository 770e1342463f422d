"""The warm pool: loads models on first use, keeps them warm, and unloads them by LRU and idle TTL.

Used as ``async with pool.lease(name) as backend``; a lease keeps its model loaded until it ends. Concurrent
first requests share one load (a per-model lock guards the single load task, whose outcome every waiter
gets); a hub model is fetched (downloaded if needed) inside that load, so they share one download too. Unloading drops every reference the service holds (listeners stop the model's worker first), then
collects garbage and empties the accelerator cache, so the memory really comes back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from models.errors import CheckpointError, DownloadError, HubUnavailableError, UnknownModelError
from service.errors import AviaryError, ModelUnavailable, from_hub
from service.metrics import Metrics
from service.pool.backend import Backend, BackendFactory
from service.pool.devices import release_memory
from service.pool.registry import ModelRegistry, ModelSpec

log = logging.getLogger("aviary.pool")

#: Called (on the event loop) when a model is about to be unloaded, before the pool closes it.
UnloadListener = Callable[[str, Backend], Awaitable[None]]
#: Turns a spec into one whose location is a local checkpoint (downloading hub models). Runs in a thread.
Fetcher = Callable[[ModelSpec], ModelSpec]
_HUB_ERRORS = (UnknownModelError, HubUnavailableError, DownloadError)


def _local(spec: ModelSpec) -> ModelSpec:
    return spec


@dataclass(eq=False)
class _Slot:
    spec: ModelSpec
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    backend: Backend | None = None
    loading: asyncio.Task[None] | None = None
    leases: int = 0
    pinned: bool = False
    last_used: float = 0.0
    info: dict[str, Any] | None = None  # kept after unload: what the model was
    load_seconds: float | None = None

    @property
    def idle(self) -> bool:
        return self.backend is not None and self.leases == 0 and self.loading is None


class WarmPool:
    """Loaded models, at most ``max_loaded`` of them (pinned and leased ones are never evicted).

    Args:
        registry: the available models.
        factory: builds a backend for a spec on a device; runs in a worker thread.
        device: resolved device string every model is loaded onto.
        max_loaded: LRU capacity.
        ttl_s: idle seconds before an unpinned model is unloaded; -1 never.
        fetch: makes a spec's checkpoint local before the factory sees it (hub downloads); default: as is.
    """

    def __init__(
        self, registry: ModelRegistry, factory: BackendFactory, *, device: str, max_loaded: int,
        ttl_s: float = -1, metrics: Metrics | None = None, fetch: Fetcher | None = None,
    ):
        self.registry = registry
        self.device = device
        self._factory = factory
        self._fetch = fetch or _local
        self._max_loaded = max_loaded
        self._ttl_s = ttl_s
        self._metrics = metrics or Metrics()
        self._slots = {spec.name: _Slot(spec) for spec in registry.specs()}
        self._listeners: list[UnloadListener] = []
        self._reaper: asyncio.Task[None] | None = None

    def add_unload_listener(self, listener: UnloadListener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        """Start the background task that enforces the idle TTL and the LRU capacity."""
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever(), name="aviary-pool-reaper")

    async def close(self) -> None:
        """Stop the reaper, let running loads finish, and unload everything."""
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
            self._reaper = None
        loads = [s.loading for s in self._slots.values() if s.loading is not None]
        await asyncio.gather(*loads, return_exceptions=True)
        for slot in self._slots.values():
            await self._unload(slot, "shutdown", force=True, release=False)
        await asyncio.to_thread(release_memory, self.device)  # once for all of them

    @asynccontextmanager
    async def lease(self, name: str | None = None) -> AsyncIterator[Backend]:
        """Hold the named (or default) model loaded for the duration of the block.

        Raises:
            ModelNotFound: no such model.
            ModelUnavailable: it failed to load.
        """
        slot = self._slots[self.registry.resolve(name).name]
        slot.leases += 1
        try:
            yield await self._ensure_loaded(slot)
        finally:
            slot.leases -= 1
            slot.last_used = time.monotonic()

    async def preload(self, names: Iterable[str]) -> None:
        """Load, warm and pin ``names`` one after another (pinned models are exempt from TTL and LRU)."""
        for name in names:
            await self.load(name, pin=True)

    async def load(self, name: str, *, pin: bool = False) -> None:
        """Load and warm ``name`` now (no-op when loaded); ``pin`` exempts it from TTL and LRU."""
        async with self.lease(name):
            if pin:
                self._slots[self.registry.get(name).name].pinned = True

    async def unload(self, name: str, reason: str = "requested") -> bool:
        """Unload ``name`` now if it is loaded and idle (unpinning it); returns whether it was."""
        slot = self._slots[self.registry.get(name).name]
        unloaded = await self._unload(slot, reason)
        if unloaded:
            slot.pinned = False
        return unloaded

    async def reap(self) -> None:
        """Unload models idle past the TTL, then the least recently used idle ones while over capacity."""
        now = time.monotonic()
        if self._ttl_s >= 0:
            for slot in list(self._slots.values()):
                if slot.idle and not slot.pinned and now - slot.last_used > self._ttl_s:
                    await self._unload(slot, f"idle for {now - slot.last_used:.1f} s")
        while len(self.loaded()) > self._max_loaded:
            victim = self._least_recently_used(exclude=None)
            if victim is None or not await self._unload(victim, "over AVIARY_MAX_LOADED"):
                break

    def loaded(self) -> list[str]:
        return [name for name, slot in self._slots.items() if slot.backend is not None]

    def status(self, name: str) -> dict[str, Any]:
        """Load state of one model, and what its backend reported about itself when it was last loaded."""
        slot = self._slots[name]
        loaded = slot.backend is not None
        return {
            "loaded": loaded, "loading": slot.loading is not None, "device": self.device if loaded else None,
            "pinned": slot.pinned, "leases": slot.leases, "load_seconds": slot.load_seconds,
            "info": dict(slot.info) if slot.info else None,
        }

    async def _ensure_loaded(self, slot: _Slot) -> Backend:
        while slot.backend is None:
            async with slot.lock:
                if slot.backend is None and slot.loading is None:
                    slot.loading = asyncio.create_task(self._load(slot), name=f"aviary-load[{slot.spec.name}]")
                    # A load whose waiters all left must not warn "exception never retrieved".
                    slot.loading.add_done_callback(lambda t: t.cancelled() or t.exception())
                task = slot.loading
            if task is not None:
                await asyncio.shield(task)  # every waiter of this load gets its outcome
        slot.last_used = time.monotonic()
        return slot.backend

    async def _load(self, slot: _Slot) -> None:
        spec = slot.spec
        try:
            await self._make_room(exclude=slot)
            backend, fetch_s, load_s, warm_s = await asyncio.to_thread(self._load_sync, spec)
            slot.info, slot.load_seconds = backend.info(), load_s + warm_s
            slot.backend, slot.last_used = backend, time.monotonic()
        except Exception as exc:
            log.error("model %s failed to load from %s: %s", spec.name, spec.location, exc)
            if isinstance(exc, AviaryError):
                raise
            if isinstance(exc, _HUB_ERRORS):
                raise from_hub(exc, spec.name) from exc
            detail = str(exc) if isinstance(exc, CheckpointError) else (
                f"{type(exc).__name__}: {exc} (from {spec.location}); check that it is a valid .nemo checkpoint "
                "of a supported architecture"
            )
            raise ModelUnavailable(f"model '{spec.name}' failed to load: {detail}") from exc
        finally:
            slot.loading = None
        self._metrics.load_seconds.labels(spec.name).observe(load_s + warm_s)
        self._metrics.loaded_models.set(len(self.loaded()))
        log.info("loaded model %s on %s in %.2f s (warm-up %.2f s%s)", spec.name, self.device, load_s, warm_s,
                 f", fetched in {fetch_s:.2f} s" if spec.hub else "")

    def _load_sync(self, spec: ModelSpec) -> tuple[Backend, float, float, float]:
        t0 = time.perf_counter()
        local = self._fetch(spec)
        t1 = time.perf_counter()
        backend = self._factory(local, self.device)
        t2 = time.perf_counter()
        try:
            backend.warmup()
        except Exception:
            _close_quietly(backend)
            raise
        return backend, t1 - t0, t2 - t1, time.perf_counter() - t2

    async def _make_room(self, exclude: _Slot) -> None:
        while len(self.loaded()) >= self._max_loaded:
            victim = self._least_recently_used(exclude)
            if victim is None:
                log.warning("all loaded models are in use; loading %s beyond max_loaded", exclude.spec.name)
                return
            if not await self._unload(victim, "least recently used"):
                return

    def _least_recently_used(self, exclude: _Slot | None) -> _Slot | None:
        idle = [
            s for s in self._slots.values()
            if s.idle and not s.pinned and s is not exclude and not s.lock.locked()
        ]
        return min(idle, key=lambda s: s.last_used, default=None)

    async def _unload(self, slot: _Slot, reason: str, force: bool = False, release: bool = True) -> bool:
        async with slot.lock:
            if slot.backend is None or not (force or slot.idle):
                return False
            backend, slot.backend = slot.backend, None  # before any await: new leases now wait for a reload
            for listener in self._listeners:
                await listener(slot.spec.name, backend)
            await asyncio.to_thread(_close_quietly, backend)
            del backend
        if release:
            await asyncio.to_thread(release_memory, self.device)
        self._metrics.loaded_models.set(len(self.loaded()))
        log.info("unloaded model %s (%s)", slot.spec.name, reason)
        return True

    async def _reap_forever(self) -> None:
        interval = min(max(self._ttl_s / 4, 0.05), 5.0) if self._ttl_s > 0 else 5.0
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap()
            except Exception:  # the reaper must outlive any one failure
                log.exception("model reaper failed")


def _close_quietly(backend: Backend) -> None:
    try:
        backend.close()
    except Exception:  # a failing close must not keep the model referenced
        log.exception("closing model %s failed", getattr(backend, "name", "?"))
