"""Hub models on the service side: where the cache is, whether a model is cached, and fetching it.

The runtime (``models.hub``) does the work — name resolution, the Hugging Face and NGC clients, the cache,
one download per model across threads and processes. This module adds the service's policy: the cache
directory from the settings, ``AVIARY_ALLOW_DOWNLOADS``, and never touching the network while listing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from service.errors import HubUnavailable
from service.pool.registry import ModelSpec
from service.settings import Settings

log = logging.getLogger("aviary.hub")

#: The runtime's cache variable (``models.hub.cache_dir``); the setting of the same name is passed through.
CACHE_ENV = "AVIARY_CACHE_DIR"


def configure_cache(settings: Settings) -> None:
    """Point the runtime at ``settings.cache_dir`` (it reads the variable at call time, so this holds for
    every later download and cache lookup in this process)."""
    if settings.cache_dir is not None:
        os.environ[CACHE_ENV] = str(settings.cache_dir.expanduser())


def cache_dir() -> Path:
    from models import hub

    return hub.cache_dir()


def is_cached(spec: ModelSpec) -> bool:
    """Whether ``spec`` loads without the network: a local file that exists, or a cached hub model.
    Looks at the disk only."""
    if spec.hub is None:
        return Path(spec.location).exists()
    from models import hub

    try:
        return hub.is_cached(spec.location)
    except Exception as exc:  # noqa: BLE001 - a listing must not fail on one odd cache entry
        log.debug("cannot tell whether %s is cached: %s", spec.location, exc)
        return False


def fetch(spec: ModelSpec, *, allow_downloads: bool) -> ModelSpec:
    """The spec of a local checkpoint for ``spec``: itself for local files; for hub models the cached copy,
    downloaded first when needed and allowed. Blocking: runs in the pool's loading thread.

    Raises:
        HubUnavailable: not cached and downloads are disabled.
        models.errors.UnknownModelError / HubUnavailableError / DownloadError / CheckpointError: from the
            runtime's hub client (the pool maps them onto the taxonomy).
    """
    if spec.hub is None:
        return spec
    from models import hub
    from models.hub_hf import PULL_HINT

    if not allow_downloads and not hub.is_cached(spec.location):
        hint = PULL_HINT.format(name=spec.location, cache=hub.cache_dir())
        raise HubUnavailable(
            f"model '{spec.name}' ({spec.location}) is not in the local cache and downloads are disabled "
            f"(AVIARY_ALLOW_DOWNLOADS=false); {hint}"
        )
    path = hub.resolve_pretrained(spec.location)
    return replace(spec, location=str(path))
