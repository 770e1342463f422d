"""Everything behind the HTTP layer, wired once from the settings: registry → warm pool → batcher.

The app factory and the CLI's in-process ``transcribe`` both use an :class:`Engine`; it knows nothing
about HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from service.batching import Batcher, BatchPolicy
from service.errors import AviaryError, ModelBusy
from service.metrics import Metrics
from service.pool import BackendFactory, Catalog, ModelRegistry, ModelSpec, WarmPool, describe, hub
from service.pool.devices import resolve_device
from service.settings import Settings

log = logging.getLogger("aviary")


def default_backend_factory(settings: Settings) -> BackendFactory:
    """The factory ``settings.backend`` names: the real runtime, or the echo test double."""
    if settings.backend == "echo":
        from service.pool.echo import EchoBackend

        return lambda spec, device: EchoBackend(spec.name)
    from service.pool.runtime import RuntimeBackend

    return lambda spec, device: RuntimeBackend.load(spec, device, long_audio_s=settings.long_audio_s)


def default_catalog(settings: Settings) -> Catalog | None:
    """The pretrained catalog when ``settings.catalog`` is on."""
    if not settings.catalog:
        return None
    from service.pool.catalog import HubCatalog

    return HubCatalog()


def batch_policy(settings: Settings) -> BatchPolicy:
    return BatchPolicy(
        max_items=settings.max_batch_size, max_padded_seconds=settings.max_batch_audio_s,
        max_padding_waste=settings.max_padding_waste,
        max_wait_s=settings.max_wait_ms / 1000, max_queue_audio_s=settings.max_queue_audio_s,
        max_queue_items=settings.max_queue_items,
    )


class Engine:
    """Registry, pool, batcher, metrics and the decode threads of one service instance.

    Raises:
        ConfigurationError: unknown default/preloaded model, missing model files, absent device.
    """

    def __init__(
        self, settings: Settings, backend_factory: BackendFactory | None = None, catalog: Catalog | None = None
    ):
        self.settings = settings
        self.metrics = Metrics()
        hub.configure_cache(settings)
        catalog = catalog if catalog is not None else default_catalog(settings)
        self.registry = ModelRegistry.from_settings(settings, catalog)
        self.device = resolve_device(settings.device)
        self.pool = WarmPool(
            self.registry, backend_factory or default_backend_factory(settings), device=self.device,
            max_loaded=settings.max_loaded, ttl_s=settings.model_ttl, metrics=self.metrics,
            fetch=partial(hub.fetch, allow_downloads=settings.allow_downloads),
        )
        self.decode_executor = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="aviary-decode")
        self.batcher = Batcher(
            self.pool, batch_policy(settings), self.decode_executor, max_audio_s=settings.max_audio_s,
            request_timeout_s=settings.request_timeout_s, metrics=self.metrics,
        )
        self.ready = not settings.preload
        self.preload_error: str | None = None
        self._preload_task: asyncio.Task[None] | None = None

    async def start(self, *, preload: bool = True) -> None:
        """Start the pool's reaper and, in the background, the preloading (``ready`` flips when done)."""
        await self.pool.start()
        names = self.registry.names()
        log.info("%d model(s) available on %s (default: %s): %s", len(names), self.device,
                 self.registry.default, ", ".join(names) or "none — set AVIARY_MODEL_DIR or AVIARY_MODELS")
        if preload and self.settings.preload:
            self._preload_task = asyncio.create_task(self._preload(), name="aviary-preload")

    async def close(self) -> None:
        if self._preload_task is not None:
            self._preload_task.cancel()
            await asyncio.gather(self._preload_task, return_exceptions=True)
        await self.batcher.close()
        await self.pool.close()
        self.decode_executor.shutdown(wait=False, cancel_futures=True)

    async def wait_ready(self) -> bool:
        """Wait for preloading to end; whether it succeeded."""
        if self._preload_task is not None:
            await asyncio.gather(self._preload_task, return_exceptions=True)
        return self.ready

    def describe_models(self) -> list[dict[str, Any]]:
        """Every available model: what the registry, catalog and checkpoint say, and what the pool knows.
        Configured models first, then the catalog. Reads the disk (cache lookups), never the network."""
        specs = sorted(self.registry.specs(), key=lambda spec: spec.source == "pretrained")
        return [self.describe_model(spec.name) for spec in specs]

    def describe_model(self, name: str) -> dict[str, Any]:
        """One model's card (``name`` may be a catalog alias).

        Raises:
            ModelNotFound: no such model.
        """
        spec = self.registry.get(name)
        status = self.pool.status(spec.name)
        # Lowest precedence first: the catalog, the checkpoint's config, the loaded model's own report.
        info = {**self._catalog_details(spec), **describe(spec), **(status["info"] or {})}
        return {
            "name": spec.name, "source": spec.source, "location": spec.location, "hub": spec.hub,
            "cached": hub.is_cached(spec), "description": info.get("description"),
            "architecture": info.get("target"), "decoders": info.get("decoders"),
            "sample_rate": info.get("sample_rate"), "languages": info.get("languages"),
            "tasks": info.get("tasks"), "loaded": status["loaded"], "device": status["device"],
            "default": spec.name == self.registry.default,
        }

    async def load_model(self, name: str, *, pin: bool = False) -> dict[str, Any]:
        """Fetch (download if needed), load and warm ``name``; its card afterwards.

        Raises:
            ModelNotFound, ModelUnavailable, HubUnavailable, HubAccessDenied, DownloadFailed.
        """
        spec = self.registry.get(name)
        await self.pool.load(spec.name, pin=pin)
        return await asyncio.to_thread(self.describe_model, spec.name)

    async def unload_model(self, name: str) -> dict[str, Any]:
        """Unload ``name`` now: ``{"name", "unloaded"}``, ``unloaded`` false when it was not loaded.

        Raises:
            ModelNotFound: no such model.
            ModelBusy: requests are using it, or it is loading.
        """
        spec = self.registry.get(name)
        if await self.pool.unload(spec.name, "unloaded by request"):
            return {"name": spec.name, "unloaded": True}
        status = self.pool.status(spec.name)
        if status["loaded"] or status["loading"]:
            raise ModelBusy(
                f"model '{spec.name}' is in use ({status['leases']} request(s)) or loading; retry when it is "
                "idle", param="name",
            )
        return {"name": spec.name, "unloaded": False}

    def _catalog_details(self, spec: ModelSpec) -> dict[str, Any]:
        catalog = self.registry.catalog
        if catalog is None or spec.hub is None:
            return {}
        details = dict(catalog.details(spec.location.partition("@")[0]))
        target = str(details.get("target") or "")
        details.setdefault("tasks", ["asr", "ast"] if "MultiTask" in target else ["asr"] if target else None)
        return details

    async def _preload(self) -> None:
        started = time.perf_counter()
        try:
            await self.pool.preload(self.settings.preload)
        except AviaryError as exc:
            self.preload_error = exc.message
            log.error("preloading failed: %s", exc.message)
            return
        self.ready = True
        log.info("preloaded %s in %.2f s; ready", ", ".join(self.settings.preload), time.perf_counter() - started)

