"""NGC checkpoints: plain HTTPS downloads of ``.nemo`` files, made safe for a shared cache.

A download goes to a process-unique ``*.incomplete`` file next to its destination, resumes with ``Range``
after a dropped connection, is checked against the announced size and opened as a tar archive, and only
then is renamed into place (atomic on one filesystem). A failed download leaves nothing behind, so a file
in the cache is always complete. ``AVIARY_NGC_ENDPOINT`` points the NGC API URL at a mirror.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
import time
import uuid
import zlib
from pathlib import Path
from typing import BinaryIO

import httpx

from models.errors import DownloadError, HubAccessError, HubUnavailableError, UnknownModelError

log = logging.getLogger("aviary.models.hub")

NGC_API = "https://api.ngc.nvidia.com"
ENDPOINT_ENV = "AVIARY_NGC_ENDPOINT"
MAX_FAILURES = 4  # consecutive attempts that receive no byte; any progress resets the count
RETRY_WAIT_S = 1.0  # grows linearly with consecutive failures
PROGRESS_EVERY_S = 5.0
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
_VERSIONED = re.compile(r"/versions/([^/]+)/files/([^/]+)$")


class _Retryable(Exception):
    """A server-side hiccup (429/5xx) worth another attempt."""


def download_url(location: str) -> str:
    """The catalog location, with the NGC API host replaced by ``$AVIARY_NGC_ENDPOINT`` when set."""
    override = os.environ.get(ENDPOINT_ENV)
    if override and location.startswith(NGC_API):
        return override.rstrip("/") + location[len(NGC_API):]
    return location


def version_and_file(location: str) -> tuple[str, str]:
    """``(version, filename)`` of an NGC file URL (``.../versions/<v>/files/<f>``)."""
    match = _VERSIONED.search(location)
    if match is None:
        return "unversioned", location.rstrip("/").rsplit("/", 1)[-1]
    return match.group(1), match.group(2)


def with_version(location: str, version: str) -> str:
    """The same NGC file at another version (``name@version``)."""
    if _VERSIONED.search(location) is None:
        raise UnknownModelError(f"{location} has no version to pin")
    return _VERSIONED.sub(lambda m: f"/versions/{version}/files/{m.group(2)}", location)


def cache_path(root: Path, name: str, location: str) -> Path:
    """``<cache>/ngc/<name>/<version>/<file>``."""
    version, filename = version_and_file(location)
    return root / "ngc" / name / version / filename


class _Progress:
    """Byte counts of one download, logged every few seconds so long pulls show they are alive."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.total: int | None = None
        self.start = self.last_log = time.monotonic()
        self.received = 0  # bytes fetched by this process (not counting a restart's discarded bytes)

    def advance(self, n: int, position: int) -> None:
        self.received += n
        now = time.monotonic()
        if now - self.last_log >= PROGRESS_EVERY_S:
            self.last_log = now
            rate = self.received / max(now - self.start, 1e-6) / 1e6
            of = f" of {self.total / 1e6:.1f} MB ({100 * position / self.total:.0f}%)" if self.total else ""
            log.info("downloading %s: %.1f MB%s at %.1f MB/s", self.label, position / 1e6, of, rate)


def download(url: str, dest: Path, label: str) -> Path:
    """Fetch ``url`` into ``dest`` atomically (see the module docstring).

    Raises:
        UnknownModelError: NGC has no such file (HTTP 404).
        HubAccessError: NGC refuses access (HTTP 401/403).
        HubUnavailableError: NGC cannot be reached at all.
        DownloadError: the transfer kept failing part-way, or the file is truncated or not a .nemo archive.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{uuid.uuid4().hex[:8]}.incomplete")
    progress = _Progress(label)
    log.info("downloading %s from %s", label, url)
    try:
        with httpx.Client(follow_redirects=True, timeout=TIMEOUT) as client, tmp.open("wb") as out:
            _fetch_with_retries(client, url, out, progress)
        _check_size(tmp, progress.total, label)
        _check_archive(tmp, label)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    elapsed = time.monotonic() - progress.start
    log.info("downloaded %s (%.1f MB) in %.1fs to %s", label, dest.stat().st_size / 1e6, elapsed, dest)
    return dest


def _fetch_with_retries(client: httpx.Client, url: str, out: BinaryIO, progress: _Progress) -> None:
    failures = 0
    while True:
        before = out.tell()
        try:
            _fetch_once(client, url, out, progress)
            return
        except (httpx.TransportError, _Retryable) as exc:
            failures = 0 if out.tell() > before else failures + 1
            if failures >= MAX_FAILURES:
                raise _give_up(exc, out.tell(), progress) from exc
            log.warning("%s: %s; resuming at byte %d (%d of %d tries without progress used)", progress.label,
                        exc or type(exc).__name__, out.tell(), failures, MAX_FAILURES)
            time.sleep(RETRY_WAIT_S * failures)


def _fetch_once(client: httpx.Client, url: str, out: BinaryIO, progress: _Progress) -> None:
    """One GET from the current end of ``out`` (a ``Range`` request when resuming)."""
    offset = out.tell()
    headers = {"Accept-Encoding": "identity"}  # the size check needs the stored bytes, not a compressed body
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 416 and offset and offset == progress.total:
            return  # the previous attempt had in fact received everything
        _raise_for_status(response, progress.label)
        if offset and response.status_code != 206:
            out.seek(0)  # the server ignored Range: start over
            out.truncate()
        _note_total(response, progress)
        # No chunk_size: a fixed-size buffer would hold back the bytes received before a connection drop.
        for chunk in response.iter_bytes():
            out.write(chunk)
            progress.advance(len(chunk), out.tell())


def _raise_for_status(response: httpx.Response, label: str) -> None:
    status = response.status_code
    if status in (200, 206):
        return
    if status == 404:
        raise UnknownModelError(f"{label}: NGC has no file at {response.url} (HTTP 404); the catalog "
                                "entry or the pinned version is wrong", name=label)
    if status in (401, 403):
        raise HubAccessError(f"{label}: NGC refused the download of {response.url} (HTTP {status})")
    if status == 429 or status >= 500:
        raise _Retryable(f"HTTP {status}")
    raise DownloadError(f"{label}: unexpected HTTP {status} from {response.url}")


def _note_total(response: httpx.Response, progress: _Progress) -> None:
    """Record the file size the server announces; a size that changes between attempts is a different file."""
    if response.headers.get("Content-Encoding", "identity") != "identity":
        return
    content_range = response.headers.get("Content-Range", "")
    if response.status_code == 206 and "/" in content_range and not content_range.endswith("*"):
        total: int | None = int(content_range.rsplit("/", 1)[1])
    else:
        length = response.headers.get("Content-Length")
        total = int(length) if length is not None and response.status_code == 200 else None
    if total is None:
        return
    if progress.total is not None and total != progress.total:
        raise DownloadError(f"{progress.label}: the file changed size during the download "
                            f"({progress.total} then {total} bytes); retry")
    progress.total = total


def _give_up(exc: Exception, received: int, progress: _Progress) -> Exception:
    if received == 0 and progress.received == 0:
        return HubUnavailableError(f"{progress.label} is not in the local cache and NGC cannot be reached "
                                   f"({type(exc).__name__}: {exc})")
    of = f" of {progress.total}" if progress.total else ""
    return DownloadError(f"{progress.label}: the download kept failing after {received}{of} bytes "
                         f"({type(exc).__name__}: {exc}); nothing was kept in the cache")


def _check_size(path: Path, expected: int | None, label: str) -> None:
    size = path.stat().st_size
    if expected is not None and size != expected:
        raise DownloadError(f"{label}: truncated download, {size} of {expected} bytes; nothing was kept "
                            "in the cache")


def _check_archive(path: Path, label: str) -> None:
    """Walk every tar header: a truncated or corrupt ``.nemo`` fails here instead of at load time."""
    for mode in ("r:", "r:gz"):  # .nemo files are plain tars since NeMo 1.7, gzip before
        try:
            with tarfile.open(path, mode) as tar:
                names = tar.getnames()
        except (tarfile.TarError, EOFError, OSError, zlib.error):
            continue
        if any(n.rsplit("/", 1)[-1] == "model_config.yaml" for n in names):
            return
        raise DownloadError(f"{label}: the downloaded file is a tar archive without model_config.yaml, "
                            "not a .nemo checkpoint; nothing was kept in the cache")
    raise DownloadError(f"{label}: the downloaded file is truncated or not a .nemo archive "
                        f"({path.stat().st_size} bytes); nothing was kept in the cache")
