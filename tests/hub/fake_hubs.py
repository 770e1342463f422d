"""In-process stand-ins for the Hugging Face Hub and NGC on 127.0.0.1, for the hub tests.

``FakeHFHub`` answers the requests huggingface_hub makes, with the hub's headers and error codes:

* ``HEAD|GET /{repo}/resolve/{revision}/{file}``: small files answer 200 with ``ETag`` (git blob id),
  ``X-Repo-Commit`` and ``Content-Length``; LFS files (``*.nemo``, ``*.ckpt``) answer 302 to a CDN URL
  on another host name (``localhost``) with ``X-Linked-Etag`` (sha256), ``X-Linked-Size`` and
  ``X-Repo-Commit``, as the real hub does, so the client stops at the redirect for metadata and
  drops ``Authorization`` for the CDN.
* ``GET /cdn/{sha256}``: the bytes, honouring ``Range`` (206 + ``Content-Range``).
* ``GET /api/models/{repo}[/revision/{rev}]`` (``repo_info``) and ``/api/models/{repo}/tree/{rev}``
  (``list_repo_tree``, used by ``snapshot_download``).
* Errors: unknown repo → 401 ``X-Error-Code: RepoNotFound`` (404 when a token is sent), gated repo
  without the right token → 401 ``GatedRepo``, unknown revision → 404 ``RevisionNotFound``, unknown
  file → 404 ``EntryNotFound`` (with ``X-Repo-Commit``).

``FakeNGC`` serves ``/v2/models/...`` URLs by redirecting to ``/s3/...`` (like NGC's signed URLs).

Both record every request and can misbehave per file: ``drop`` (close the connection after N bytes,
for the first k responses), ``truncate`` (a consistently short body with an honest length),
``slow`` (pause between chunks, so concurrent clients overlap), ``ignore_range``, ``fail`` (503s),
``short_resume`` (206 bodies shorter than their Content-Range).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".nemo", ".ckpt")
TOKEN = "hf_test_token"


@dataclass
class Misbehaviour:
    drop_after: int | None = None  # close the connection after this many body bytes ...
    drop_times: int = 1  # ... for this many responses
    truncate_to: int | None = None  # serve only this many bytes, with an honest Content-Length
    slow_s: float = 0.0  # pause after each chunk
    ignore_range: bool = False
    fail_times: int = 0  # answer 503 this many times first
    short_resume: int = 0  # 206 answers leave out this many final bytes (a buggy proxy/cache)


@dataclass
class _Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    gated: bool = False


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up mid-response (tests that give up, dropped transfers) are expected here."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Server:
    """A threading HTTP/1.1 server on 127.0.0.1 with a request log; subclasses route requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.misbehave: dict[str, Misbehaviour] = {}  # keyed by file name (last path component)
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner._handle(self, "GET")

            def do_HEAD(self) -> None:
                owner._handle(self, "HEAD")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.misbehave.clear()

    def count(self, method: str, pattern: str) -> int:
        with self.lock:
            return sum(1 for m, p in self.requests if m == method and re.search(pattern, p))

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        with self.lock:
            self.requests.append((method, h.path))
        self.route(h, method, urlsplit(h.path))

    def route(self, h: BaseHTTPRequestHandler, method: str, url: Any) -> None:
        raise NotImplementedError

    # ---- responses --------------------------------------------------------------------------------
    @staticmethod
    def reply(h: BaseHTTPRequestHandler, status: int, body: bytes = b"",
              headers: dict[str, str] | None = None, method: str = "GET") -> None:
        h.send_response(status)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if method != "HEAD" and body:
            h.wfile.write(body)

    def reply_json(self, h: BaseHTTPRequestHandler, payload: Any, status: int = 200,
                   headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.reply(h, status, body, {"Content-Type": "application/json", **(headers or {})})

    def send_file(self, h: BaseHTTPRequestHandler, method: str, name: str, data: bytes,
                  headers: dict[str, str]) -> None:
        """The file's bytes, honouring ``Range`` and this file's misbehaviour."""
        mis = self.misbehave.get(name, Misbehaviour())
        if mis.fail_times > 0:
            mis.fail_times -= 1
            return self.reply(h, 503, b"busy", method=method)
        if mis.truncate_to is not None:
            data = data[: mis.truncate_to]
        start, status, extra = 0, 200, {}
        match = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range", ""))
        if match and not mis.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                return self.reply(h, 416, headers={"Content-Range": f"bytes */{len(data)}"}, method=method)
            status, extra = 206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        body = data[start:]
        if status == 206 and mis.short_resume:
            body = body[: -mis.short_resume]  # Content-Range still claims the whole rest
        h.send_response(status)
        for key, value in {**headers, **extra, "Accept-Ranges": "bytes"}.items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if method == "HEAD":
            return None
        self._stream(h, body, mis)
        return None

    @staticmethod
    def _stream(h: BaseHTTPRequestHandler, body: bytes, mis: Misbehaviour) -> None:
        limit = len(body)
        if mis.drop_after is not None and mis.drop_times > 0:
            mis.drop_times -= 1
            limit = min(limit, mis.drop_after)
        for pos in range(0, limit, 16384):
            h.wfile.write(body[pos: min(pos + 16384, limit)])
            h.wfile.flush()
            if mis.slow_s:
                time.sleep(mis.slow_s)
        if limit < len(body):
            h.close_connection = True  # the client sees the body end early


class FakeHFHub(_Server):
    """Repos with commits, refs and gating; see the module docstring for the routes."""

    def __init__(self) -> None:
        super().__init__()
        self.repos: dict[str, _Repo] = {}
        self.outage: int | None = None  # answer every request with this status (e.g. 503)
        self.cdn = f"http://localhost:{self.port}"  # another host name: the client treats it as a CDN

    def reset(self) -> None:
        super().reset()
        self.repos.clear()
        self.outage = None

    def add_commit(self, repo_id: str, files: dict[str, bytes], ref: str = "main",
                   gated: bool = False) -> str:
        """Add a commit holding exactly ``files``; ``ref`` (a branch or tag) points at it. Returns its sha."""
        repo = self.repos.setdefault(repo_id, _Repo(gated=gated))
        sha = hashlib.sha1(f"{repo_id}/{len(repo.commits)}/{sorted(files)}".encode()).hexdigest()
        repo.commits[sha] = dict(files)
        repo.refs[ref] = sha
        return sha

    # ---- routing ----------------------------------------------------------------------------------
    def route(self, h: BaseHTTPRequestHandler, method: str, url: Any) -> None:
        path = unquote(url.path)
        if self.outage is not None:
            return self.reply(h, self.outage, b"upstream trouble", method=method)
        if m := re.fullmatch(r"/cdn/([0-9a-f]{64})", path):
            return self._cdn(h, method, m.group(1))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/.*)?", path):
            return self._tree(h, m.group(1), m.group(2))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            return self._info(h, m.group(1), m.group(2) or "main")
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._resolve(h, method, m.group(1), m.group(2), m.group(3))
        return self.reply(h, 404, b"Not Found", method=method)

    def _commit(self, h: BaseHTTPRequestHandler, method: str, repo_id: str,
                revision: str) -> tuple[str, dict[str, bytes]] | None:
        """The commit for ``revision``, or None after answering with the hub's error."""
        repo = self.repos.get(repo_id)
        authorized = h.headers.get("Authorization") == f"Bearer {TOKEN}"
        if repo is None:
            status = 404 if h.headers.get("Authorization") else 401
            self.reply(h, status, b"Repository not found",
                       {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, method)
            return None
        if repo.gated and not authorized:
            self.reply(h, 401, b"gated", {"X-Error-Code": "GatedRepo", "X-Error-Message":
                                          f"Access to model {repo_id} is restricted."}, method)
            return None
        sha = repo.refs.get(revision, revision if revision in repo.commits else None)
        if sha is None:
            self.reply(h, 404, b"Invalid rev id", {"X-Error-Code": "RevisionNotFound",
                                                   "X-Error-Message": f"Invalid rev id: {revision}"}, method)
            return None
        return sha, repo.commits[sha]

    def _resolve(self, h: BaseHTTPRequestHandler, method: str, repo_id: str, revision: str,
                 filename: str) -> None:
        found = self._commit(h, method, repo_id, revision)
        if found is None:
            return
        sha, files = found
        if filename not in files:
            error = {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}
            return self.reply(h, 404, b"Entry not found", {**error, "X-Repo-Commit": sha}, method)
        data = files[filename]
        if filename.endswith(LFS_SUFFIXES):
            return self.reply(h, 302, b"", {
                "Location": f"{self.cdn}/cdn/{sha256(data)}", "X-Repo-Commit": sha,
                "X-Linked-Etag": f'"{sha256(data)}"', "X-Linked-Size": str(len(data)),
                "ETag": f'"{git_blob_id(data)}"'}, method)
        headers = {"ETag": f'"{git_blob_id(data)}"', "X-Repo-Commit": sha}
        return self.send_file(h, method, filename, data, headers)

    def _cdn(self, h: BaseHTTPRequestHandler, method: str, digest: str) -> None:
        for repo in self.repos.values():
            for files in repo.commits.values():
                for name, data in files.items():
                    if sha256(data) == digest:
                        return self.send_file(h, method, name, data, {"ETag": f'"{digest}"'})
        return self.reply(h, 404, b"NoSuchKey", method=method)

    def _info(self, h: BaseHTTPRequestHandler, repo_id: str, revision: str) -> None:
        found = self._commit(h, "GET", repo_id, revision)
        if found is not None:
            sha, files = found
            self.reply_json(h, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
                                "gated": "auto" if self.repos[repo_id].gated else False,
                                "siblings": [{"rfilename": f} for f in sorted(files)], "tags": [],
                                "downloads": 0, "likes": 0, "library_name": "nemo"})

    def _tree(self, h: BaseHTTPRequestHandler, repo_id: str, revision: str) -> None:
        found = self._commit(h, "GET", repo_id, revision)
        if found is None:
            return
        _, files = found
        entries = []
        for path, data in sorted(files.items()):
            entry: dict[str, Any] = {"type": "file", "oid": git_blob_id(data), "size": len(data),
                                     "path": path}
            if path.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"oid": sha256(data), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        self.reply_json(h, entries)


class FakeNGC(_Server):
    """``/v2/models/<path>`` → 302 → ``/s3/<path>`` → the file (``Range`` honoured)."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, bytes] = {}  # keyed by the path after /v2/models/

    def reset(self) -> None:
        super().reset()
        self.files.clear()

    def route(self, h: BaseHTTPRequestHandler, method: str, url: Any) -> None:
        path = unquote(url.path)
        if m := re.fullmatch(r"/v2/models/(.+)", path):
            if m.group(1) not in self.files:
                return self.reply(h, 404, b'{"requestStatus": {"statusCode": "NOT_FOUND"}}', method=method)
            return self.reply(h, 302, b"", {"Location": f"/s3/{m.group(1)}?X-Amz-Signature=fake"}, method)
        if (m := re.fullmatch(r"/s3/(.+)", path)) and m.group(1) in self.files:
            name = m.group(1).rsplit("/", 1)[-1]
            return self.send_file(h, method, name, self.files[m.group(1)], {"ETag": '"s3etag"'})
        return self.reply(h, 404, b"NoSuchKey", method=method)


def make_nemo(size: int = 200_000, seed: int = 0, config: str = "target: x.EncDecCTCModel\n") -> bytes:
    """A small uncompressed tar shaped like a ``.nemo`` (config + weights), ``size`` bytes of weights."""
    weights = (bytes(range(256)) * (size // 256 + 1))[:size]
    weights = bytes((b + seed) % 256 for b in weights[:256]) + weights[256:]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:") as tar:
        for name, data in (("./model_config.yaml", config.encode()), ("./model_weights.ckpt", weights)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def free_port() -> int:
    """A port nothing listens on (for 'hub unreachable')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_under(root: Path) -> list[str]:
    """Every file below ``root``, relative."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
