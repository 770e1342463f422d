"""Hugging Face Hub checkpoints, through ``huggingface_hub`` and its cache layout.

NeMo's rule: repo ``org/name`` holds ``name.nemo``; a repo without it is used whole, as an extracted
checkpoint directory (its snapshot must hold ``model_config.yaml``). The lookup order follows NeMo too:
cache first (no request at all), then one metadata request, then the download.

Environment, read at call time (``huggingface_hub`` reads some of these only at import):
``HF_ENDPOINT`` (hub or mirror URL), ``HF_TOKEN`` (gated/private repos), ``HF_HUB_CACHE`` / ``HF_HOME``
(cache location; else ``$AVIARY_CACHE_DIR/huggingface`` when set; else huggingface_hub's default).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import (
    HfApi,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    scan_cache_dir,
    snapshot_download,
    try_to_load_from_cache,
)
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    CacheNotFound,
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from models.catalog import closest_names
from models.errors import (
    CheckpointError,
    DownloadError,
    HubAccessError,
    HubUnavailableError,
    RuntimeErrorBase,
    UnknownModelError,
)

log = logging.getLogger("aviary.models.hub")

CONFIG_NAME = "model_config.yaml"
LIBRARY_NAME = "aviary"
DEFAULT_REVISION = "main"
PULL_HINT = ("pre-download it where the hub is reachable with `aviary pull {name}` and copy the cache "
             "directory ({cache}) here, or copy the .nemo file here and pass its path")


def cache_dir() -> Path:
    """Where Hugging Face files go: an explicit HF setting wins, then ``$AVIARY_CACHE_DIR/huggingface``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    if os.environ.get("AVIARY_CACHE_DIR"):
        return Path(os.environ["AVIARY_CACHE_DIR"]).expanduser() / "huggingface"
    return Path(hf_constants.HF_HUB_CACHE)


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or hf_constants.ENDPOINT).rstrip("/")


def nemo_filename(repo_id: str) -> str:
    """NeMo's convention: ``nvidia/parakeet-tdt-0.6b-v2`` holds ``parakeet-tdt-0.6b-v2.nemo``."""
    return repo_id.rsplit("/", 1)[-1] + ".nemo"


def is_checkpoint_dir(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() or any(folder.glob(f"*/{CONFIG_NAME}"))


def cached(repo_id: str, revision: str | None) -> Path | None:
    """The cached ``.nemo`` (or complete checkpoint snapshot) of that revision; never touches the network."""
    revision = revision or DEFAULT_REVISION
    filename = nemo_filename(repo_id)
    hit = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache_dir()), revision=revision)
    if isinstance(hit, str):
        return Path(hit)
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=str(cache_dir()),
                                        local_files_only=True))
    except LocalEntryNotFoundError:  # includes an incomplete snapshot
        return None
    # A failed .nemo download can leave an empty snapshot folder behind: only a real checkpoint counts.
    return folder if is_checkpoint_dir(folder) else None


def download(repo_id: str, revision: str | None, label: str) -> Path:
    """Download the repo's ``.nemo`` (or its whole snapshot when it has none) into the HF cache.

    Raises:
        UnknownModelError: no such repo or revision (or private, without a token).
        HubAccessError: gated repo, or the token is refused.
        HubUnavailableError: the hub cannot be reached or answers with a server error.
        CheckpointError: the repo is neither a ``.nemo`` holder nor an extracted NeMo checkpoint.
        DownloadError: the transfer broke off or the file failed its size check.
    """
    revision = revision or DEFAULT_REVISION
    filename = nemo_filename(repo_id)
    has_nemo = _probe(repo_id, filename, revision, label)
    start = time.perf_counter()
    log.info("downloading %s from %s (%s)", label, endpoint(), filename if has_nemo else "whole repo")
    try:
        if has_nemo:
            path = Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=str(cache_dir()),
                                        endpoint=endpoint(), library_name=LIBRARY_NAME))
        else:
            _require_checkpoint_repo(repo_id, revision, label)
            path = Path(snapshot_download(repo_id, revision=revision, cache_dir=str(cache_dir()),
                                          endpoint=endpoint(), library_name=LIBRARY_NAME))
    except RuntimeErrorBase:
        raise
    except Exception as exc:
        if not _is_hub_error(exc):
            raise  # a bug, not a hub problem: keep its traceback
        raise _map_error(exc, repo_id, revision, label, during_download=True) from exc
    log.info("downloaded %s to %s in %.1fs", label, path, time.perf_counter() - start)
    return path


def _probe(repo_id: str, filename: str, revision: str, label: str) -> bool:
    """Whether the repo holds ``filename``: one HEAD request, no retries, so a dead hub fails fast."""
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint())
    try:
        get_hf_file_metadata(url, endpoint=endpoint(), library_name=LIBRARY_NAME)
    except LocalEntryNotFoundError as exc:
        raise _map_error(exc, repo_id, revision, label) from exc
    except EntryNotFoundError:  # the repo and revision exist, the file does not
        return False
    except Exception as exc:
        if not _is_hub_error(exc):
            raise
        raise _map_error(exc, repo_id, revision, label) from exc
    return True


def _require_checkpoint_repo(repo_id: str, revision: str, label: str) -> None:
    """Refuse before downloading a whole repo that is not an extracted NeMo checkpoint."""
    files = HfApi(endpoint=endpoint(), library_name=LIBRARY_NAME).list_repo_files(repo_id, revision=revision)
    if any(f == CONFIG_NAME or f.endswith("/" + CONFIG_NAME) for f in files):
        return
    nemo_files = [f for f in files if f.endswith(".nemo")]
    if nemo_files:
        found = f"it holds {', '.join(nemo_files)}; download that file and pass its path"
    else:
        found = "it holds no .nemo file at all"
    raise CheckpointError(f"{label}: the Hugging Face repo {repo_id} has no {nemo_filename(repo_id)} and is "
                          f"not an extracted NeMo checkpoint (no {CONFIG_NAME}); {found}")


def _map_error(exc: Exception, repo_id: str, revision: str, label: str,
               during_download: bool = False) -> RuntimeErrorBase:
    """huggingface_hub's and the HTTP stack's exceptions as aviary's error taxonomy."""
    if isinstance(exc, GatedRepoError):
        return HubAccessError(f"{label}: {repo_id} is a gated repo; accept its conditions on the Hub and set "
                              "HF_TOKEN to a token of that account")
    if isinstance(exc, RepositoryNotFoundError):
        hint = closest_names(repo_id)
        more = f" Did you mean: {', '.join(hint)}?" if hint else ""
        return UnknownModelError(f"{label}: no Hugging Face repo {repo_id!r} (if it is private, set "
                                 f"HF_TOKEN).{more}", name=label, suggestions=hint)
    if isinstance(exc, RevisionNotFoundError):
        return UnknownModelError(f"{label}: {repo_id} has no revision {revision!r}", name=label)
    status = _status(exc)
    if status in (401, 403):
        return HubAccessError(f"{label}: the Hub refused access to {repo_id} (HTTP {status}); check HF_TOKEN")
    # Mid-transfer failures (broken connection, size mismatch) are download errors; a failed metadata
    # request (LocalEntryNotFoundError) or a server error means the hub itself is unavailable.
    if during_download and (status or 0) < 500 and not isinstance(exc, LocalEntryNotFoundError):
        what = "the connection broke off" if _is_connection_error(exc) else "the transfer failed"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__  # drop huggingface_hub's advice
        return DownloadError(f"{label}: downloading from {endpoint()}/{repo_id} failed ({what}: {detail}); "
                             "nothing was kept in the cache, retry")
    reason = f"HTTP {status}" if status is not None else type(exc).__name__
    hint = PULL_HINT.format(name=label, cache=cache_dir())
    return HubUnavailableError(f"{label} is not in the local cache and the Hugging Face Hub ({endpoint()}) "
                               f"cannot be reached ({reason}); {hint}")


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None) if isinstance(exc, HfHubHTTPError) else None
    return response.status_code if response is not None else None


def _is_hub_error(exc: BaseException) -> bool:
    """Errors of the hub, the network or the transfer (``OSError`` covers huggingface_hub's HTTP and
    size-check errors), as opposed to programming errors."""
    return isinstance(exc, OSError) or _is_connection_error(exc)


def _is_connection_error(exc: BaseException) -> bool:
    """Network failures of whichever HTTP stack huggingface_hub uses (httpx, httpx2 or requests)."""
    if isinstance(exc, (ConnectionError, TimeoutError, LocalEntryNotFoundError)):
        return True
    if isinstance(exc, HfHubHTTPError):
        return (_status(exc) or 0) >= 500
    return type(exc).__module__.split(".")[0] in {"httpx", "httpx2", "httpcore", "requests", "urllib3"}


@dataclass(frozen=True)
class CachedRepo:
    """One cached revision of a Hugging Face repo that ``from_pretrained`` can load."""

    repo_id: str
    revision: str  # "main" when it is the cached head of main, else a ref name or the commit hash
    path: Path
    size_bytes: int


def scan() -> list[CachedRepo]:
    """The loadable checkpoints in the HF cache (repos holding ``<name>.nemo`` or a checkpoint snapshot)."""
    try:
        info = scan_cache_dir(cache_dir())
    except CacheNotFound:
        return []
    found = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for rev in repo.revisions:
            nemo = rev.snapshot_path / nemo_filename(repo.repo_id)
            if nemo.is_file():
                path = nemo
            elif is_checkpoint_dir(rev.snapshot_path):
                path = rev.snapshot_path
            else:
                continue
            ref = DEFAULT_REVISION if DEFAULT_REVISION in rev.refs else min(rev.refs, default=rev.commit_hash)
            found.append(CachedRepo(repo.repo_id, ref, path, rev.size_on_disk))
    return found
