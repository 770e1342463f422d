"""Where ``from_pretrained`` finds checkpoints: local paths, catalog names, Hugging Face repos, NGC files.

Names resolve without the network (:func:`parse_name`): an existing local path; a catalog name or alias
(``parakeet-tdt-0.6b-v2``, ``stt_en_fastconformer_hybrid_large_pc``) to its Hugging Face repo or NGC URL;
any other ``org/name`` to that Hugging Face repo. ``name@revision`` pins a Hugging Face branch/tag/commit
or an NGC version. A cached model never touches the network; otherwise one download runs per model
across threads and processes (a file lock in ``$AVIARY_CACHE_DIR/.locks``) and the others wait for it.

Environment: ``AVIARY_CACHE_DIR`` (default ``~/.cache/aviary``; NGC files live in ``<cache>/ngc/<name>/
<version>/<file>``, Hugging Face files in huggingface_hub's layout, see ``models.hub_hf.cache_dir``),
``AVIARY_OFFLINE`` or ``HF_HUB_OFFLINE`` (no network at all: cached models only), ``HF_ENDPOINT``,
``HF_TOKEN``, ``AVIARY_NGC_ENDPOINT``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from filelock import FileLock, Timeout

from models import catalog, hub_hf, hub_ngc
from models.bundled import bundled_path
from models.catalog import CatalogEntry
from models.errors import CheckpointError, HubUnavailableError, UnknownModelError

log = logging.getLogger("aviary.models.hub")

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TRUE = {"1", "true", "yes", "on"}


def cache_dir() -> Path:
    """aviary's cache root (``$AVIARY_CACHE_DIR``, default ``~/.cache/aviary``)."""
    return Path(os.environ.get("AVIARY_CACHE_DIR") or "~/.cache/aviary").expanduser()


def offline() -> bool:
    """True when downloads are disabled (``AVIARY_OFFLINE`` or ``HF_HUB_OFFLINE``), read at call time."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("AVIARY_OFFLINE", "HF_HUB_OFFLINE"))


@dataclass(frozen=True)
class ModelRef:
    """What a model name points at, before any network access."""

    name: str  # the catalog name when there is one, else as given; without ``@revision``
    label: str  # as given, for messages
    source: Literal["local", "hf", "ngc"]
    path: Path | None = None  # local
    repo_id: str | None = None  # hf
    revision: str | None = None  # hf branch/tag/commit, or NGC version
    url: str | None = None  # ngc
    info: CatalogEntry | None = None


@dataclass(frozen=True)
class CachedModel:
    """A model that loads without the network."""

    name: str  # what to pass to ``from_pretrained`` / ``pull`` (catalog name when there is one)
    source: Literal["hf", "ngc"]
    revision: str  # HF ref or commit; NGC version
    path: Path
    size_bytes: int


def _looks_like_path(name: str) -> bool:
    return name.endswith(".nemo") or name.startswith(("/", "./", "../", "~"))


def _split_revision(name: str) -> tuple[str, str | None]:
    base, sep, revision = name.rpartition("@")
    if sep and base and revision and "/" not in revision:
        return base, revision
    return name, None


def unknown_model(name: str) -> UnknownModelError:
    hint = catalog.closest_names(name)
    more = f" Did you mean: {', '.join(hint)}?" if hint else ""
    return UnknownModelError(
        f"unknown model {name!r}: not a local file, a catalog name (ASRModel.list_available_models()) or a "
        f"Hugging Face repo id (org/name).{more}", name=name, suggestions=hint)


def parse_name(model_name: str) -> ModelRef:
    """Classify a model name; no network access.

    Raises:
        CheckpointError: it looks like a file path but there is no such file.
        UnknownModelError: not a local path, catalog name or ``org/name`` repo id.
    """
    path = Path(model_name).expanduser()
    if model_name and path.exists():
        return ModelRef(model_name, model_name, "local", path=path)
    if _looks_like_path(model_name):
        raise CheckpointError(f"{model_name}: no such checkpoint file or directory")
    label = model_name.strip()
    if (bundled := bundled_path(label)) is not None:  # aviary-demo-en, shipped in the package
        return ModelRef(label, label, "local", path=bundled)
    name, revision = _split_revision(label)
    info = catalog.find(name)
    if info is not None and info.hf_repo_id:
        return ModelRef(info.pretrained_model_name, label, "hf", repo_id=info.hf_repo_id, revision=revision,
                        info=info)
    if info is not None:
        url = hub_ngc.with_version(info.location, revision) if revision else info.location
        return ModelRef(info.pretrained_model_name, label, "ngc", url=url,
                        revision=hub_ngc.version_and_file(url)[0], info=info)
    if _REPO_ID.match(name):
        return ModelRef(name, label, "hf", repo_id=name, revision=revision)
    raise unknown_model(label)


def _cached_path(ref: ModelRef) -> Path | None:
    if ref.source == "local":
        return ref.path
    if ref.source == "hf":
        return hub_hf.cached(ref.repo_id or "", ref.revision)
    dest = hub_ngc.cache_path(cache_dir(), ref.name, ref.url or "")
    return dest if dest.is_file() else None


def _lock_key(ref: ModelRef) -> str:
    if ref.source == "hf":
        raw = f"hf--{ref.repo_id}--{ref.revision or hub_hf.DEFAULT_REVISION}"
    else:
        raw = f"ngc--{ref.name}--{ref.revision}"
    return re.sub(r"[^\w.-]+", "--", raw)


@contextmanager
def _download_lock(ref: ModelRef) -> Iterator[None]:
    """One download per model: other threads and processes wait here, then find it in the cache."""
    path = cache_dir() / ".locks" / f"{_lock_key(ref)}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another download of %s", ref.label)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _offline_error(ref: ModelRef) -> HubUnavailableError:
    hint = hub_hf.PULL_HINT.format(name=ref.label, cache=cache_dir())
    return HubUnavailableError(f"{ref.label} is not in the local cache and downloads are disabled "
                               f"(AVIARY_OFFLINE / HF_HUB_OFFLINE is set); {hint}")


def _download(ref: ModelRef) -> Path:
    if ref.source == "hf":
        return hub_hf.download(ref.repo_id or "", ref.revision, ref.label)
    url = hub_ngc.download_url(ref.url or "")
    return hub_ngc.download(url, hub_ngc.cache_path(cache_dir(), ref.name, ref.url or ""), ref.label)


def resolve_pretrained(model_name: str, refresh_cache: bool = False) -> Path:
    """A local ``.nemo`` file or extracted checkpoint directory for ``model_name``, downloading it if needed.

    ``refresh_cache`` skips the cache lookup: Hugging Face is asked for the revision's current files
    (unchanged blobs are not fetched again), NGC files are downloaded again.

    Raises:
        CheckpointError: a path-like name with no such file, or a repo that is not a NeMo checkpoint.
        UnknownModelError: unknown name, repo or revision (message lists the closest names).
        HubUnavailableError: not cached and the hub is unreachable or downloads are disabled
            (``HubAccessError``: gated/private repo, set ``HF_TOKEN``).
        DownloadError: the download broke off or was truncated/corrupt; nothing was left in the cache.
    """
    ref = parse_name(model_name)
    if not refresh_cache and (hit := _cached_path(ref)) is not None:
        log.debug("%s: using %s", ref.label, hit)
        return hit
    if offline():
        if refresh_cache and (hit := _cached_path(ref)) is not None:
            log.warning("%s: cannot refresh while offline; using the cached copy %s", ref.label, hit)
            return hit
        raise _offline_error(ref)
    with _download_lock(ref):
        # Whoever held the lock before us may have just fetched it.
        if not refresh_cache and (hit := _cached_path(ref)) is not None:
            return hit
        return _download(ref)


def pull(model_name: str, refresh: bool = False) -> Path:
    """Download a model into the cache now (``aviary pull``); returns its local path.

    Raises:
        The errors of :func:`resolve_pretrained`.
    """
    return resolve_pretrained(model_name, refresh_cache=refresh)


def is_cached(model_name: str) -> bool:
    """Whether ``model_name`` loads without the network (local paths count). No network access.

    Raises:
        UnknownModelError: the name is not a path, catalog name or ``org/name`` repo id.
    """
    try:
        return _cached_path(parse_name(model_name)) is not None
    except CheckpointError:  # a path-like name with no file
        return False


def _catalog_name(repo_id: str) -> str:
    info = catalog.find(repo_id)
    return info.pretrained_model_name if info is not None else repo_id


def _ngc_cached() -> Iterator[CachedModel]:
    root = cache_dir() / "ngc"
    for file in sorted(root.glob("*/*/*.nemo")) if root.is_dir() else ():
        name, version = file.parent.parent.name, file.parent.name
        info = catalog.find(name)
        current = info is not None and hub_ngc.version_and_file(info.location)[0] == version
        yield CachedModel(name if current else f"{name}@{version}", "ngc", version, file, file.stat().st_size)


def cached_models() -> list[CachedModel]:
    """Every checkpoint that loads without the network, from the NGC and Hugging Face caches."""
    found = list(_ngc_cached())
    for repo in hub_hf.scan():
        name = _catalog_name(repo.repo_id)
        name = name if repo.revision == hub_hf.DEFAULT_REVISION else f"{name}@{repo.revision}"
        found.append(CachedModel(name, "hf", repo.revision, repo.path, repo.size_bytes))
    return found
