"""Concurrency over real HTTP: shared batches, backpressure, disconnects, deadlines, failures, the pool."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from service_helpers import EchoFactory, Server, npy, tone, wav

from service.pool.echo import echo_text

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def multipart(*seconds: float, **fields: str) -> dict:
    return {"files": [("files", (f"{s}.wav", wav(s), "audio/wav")) for s in seconds], "data": fields}


def test_many_concurrent_clients_each_get_their_own_results(serve: Callable[..., Server]) -> None:
    server = serve(EchoFactory({"seconds_per_second": 0.005}), max_wait_ms=20, max_batch_size=16)

    async def client(i: int, http: httpx.AsyncClient) -> None:
        seconds = [round(0.25 + 0.0125 * (3 * i + k), 4) for k in range(1 + i % 3)]
        stamps = i % 4 == 0
        if i % 2:
            payload = {"audio": [{"npy_b64": base64.b64encode(npy(tone(s))).decode()} for s in seconds],
                       "timestamps": stamps}
            response = await http.post("/transcribe", json=payload)
        else:
            response = await http.post("/transcribe", **multipart(*seconds, timestamps=str(stamps).lower()))
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["text"] for r in results] == [echo_text(s) for s in seconds]
        assert all(("timestamps" in r) == stamps for r in results)

    async def main() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            await asyncio.gather(*(client(i, http) for i in range(40)))

    asyncio.run(main())
    batches = server.backend().batches
    assert sum(len(b) for b in batches) == sum(1 + i % 3 for i in range(40))
    assert max(len(b) for b in batches) > 3  # items of different requests shared batches
    assert max(len(b) for b in batches) <= 16


async def post_after(http: httpx.AsyncClient, delay: float, seconds: float) -> httpx.Response:
    await asyncio.sleep(delay)
    return await http.post("/transcribe", **multipart(seconds))


def test_full_queue_answers_429_with_retry_after(serve: Callable[..., Server]) -> None:
    server = serve(EchoFactory({"seconds_per_second": 0.25}), max_queue_audio_s=3.0, max_wait_ms=0)

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            await http.post("/transcribe", **multipart(0.1))  # load the model first
            return await asyncio.gather(
                post_after(http, 0, 2.0), post_after(http, 0.15, 2.0), post_after(http, 0.3, 1.5)
            )

    running, queued, refused = asyncio.run(main())
    assert running.status_code == 200 and queued.status_code == 200
    assert refused.status_code == 429, refused.text
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"]["code"] == "overloaded"


def test_client_disconnect_cancels_queued_items(serve: Callable[..., Server]) -> None:
    server = serve(EchoFactory({"seconds_per_second": 0.3}), max_wait_ms=0)
    server.client.post("/transcribe", **multipart(0.1))

    async def main() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            running = asyncio.ensure_future(http.post("/transcribe", **multipart(2.0)))  # ~0.6 s of compute
            await asyncio.sleep(0.1)
            await asyncio.to_thread(_send_and_hang_up, server.port, wav(1.777), 0.15)
            assert (await running).status_code == 200

    asyncio.run(main())
    time.sleep(0.2)
    ran = [d for batch in server.backend().batches for d in batch]
    assert 2.0 in ran and all(abs(d - 1.777) > 1e-6 for d in ran)
    assert 'aviary_items_total{model="echo",outcome="cancelled"} 1.0' in server.client.get("/metrics").text


def _send_and_hang_up(port: int, audio: bytes, linger: float) -> None:
    boundary = b"aviaryboundary"
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="files"; filename="gone.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n" + audio + b"\r\n--" + boundary + b"--\r\n")
    head = (f"POST /transcribe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary.decode()}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body)
        time.sleep(linger)  # queued behind the running request by now


def test_queue_wait_past_the_deadline_is_504_unrun(serve: Callable[..., Server]) -> None:
    server = serve(EchoFactory({"seconds_per_second": 0.3}), request_timeout_s=0.3, max_wait_ms=0)
    server.client.post("/transcribe", **multipart(0.1))

    async def main() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            return await asyncio.gather(post_after(http, 0, 3.0), post_after(http, 0.1, 1.234))

    running, late = asyncio.run(main())
    assert running.status_code == 200
    assert late.status_code == 504 and late.json()["error"]["code"] == "timeout"
    assert "AVIARY_REQUEST_TIMEOUT_S" in late.json()["error"]["message"]
    time.sleep(0.1)
    assert all(abs(d - 1.234) > 1e-6 for batch in server.backend().batches for d in batch)


def test_a_model_exception_fails_only_the_bad_request(serve: Callable[..., Server]) -> None:
    factory = EchoFactory({"fail_if": lambda a: bool(a.max() > 0.5)})
    server = serve(factory, max_wait_ms=200, max_batch_size=4)

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            await http.post("/transcribe", **multipart(0.1))
            loud = {"audio": [{"samples": tone(1.0, amplitude=0.9).tolist()}]}
            good = [http.post("/transcribe", **multipart(s)) for s in (0.5, 0.75, 1.25)]
            return await asyncio.gather(*good, http.post("/transcribe", json=loud))

    *good, bad = asyncio.run(main())
    assert [r.json()["results"][0]["text"] for r in good] == [echo_text(s) for s in (0.5, 0.75, 1.25)]
    assert bad.status_code == 500 and bad.json()["error"]["code"] == "internal_error"
    assert "asked to fail" in bad.json()["error"]["message"]
    assert server.client.post("/transcribe", **multipart(0.3)).status_code == 200  # the worker lives on


def test_ready_waits_for_preloaded_models(serve: Callable[..., Server]) -> None:
    server = serve(EchoFactory({"load_seconds": 0.3}), preload=["echo", "rnnt"])
    first = server.client.get("/ready")
    assert first.status_code == 503 and first.json()["error"]["code"] == "not_ready"
    assert server.client.get("/health").status_code == 200  # alive while loading
    deadline = time.monotonic() + 10
    while server.client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    loaded = {m["name"] for m in server.client.get("/models").json()["models"] if m["loaded"]}
    assert loaded == {"echo", "rnnt"}


def test_failed_preload_keeps_ready_503(serve: Callable[..., Server]) -> None:
    server = serve(preload=["broken"])
    asyncio.run(asyncio.sleep(0.3))
    response = server.client.get("/ready")
    assert response.status_code == 503 and "preloading failed" in response.json()["error"]["message"]


def test_lru_and_ttl_over_http(serve: Callable[..., Server]) -> None:
    server = serve(max_loaded=1, model_ttl=0.3)

    def loaded() -> set[str]:
        return {m["name"] for m in server.client.get("/models").json()["models"] if m["loaded"]}

    assert server.client.post("/transcribe", **multipart(0.2)).status_code == 200
    assert loaded() == {"echo"}
    assert server.client.post("/transcribe", **multipart(0.2, model="rnnt")).status_code == 200
    assert loaded() == {"rnnt"}
    deadline = time.monotonic() + 5
    while loaded():
        assert time.monotonic() < deadline, "the idle model was never unloaded"
        time.sleep(0.05)


def test_aviary_serve_command(echo_model_dir: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AVIARY_")},
           "PYTHONPATH": str(ROOT), "AVIARY_BACKEND": "echo", "AVIARY_DEVICE": "cpu", "AVIARY_PORT": str(port)}
    command = [sys.executable, "-m", "service.cli", "serve", "--model-dir", str(echo_model_dir),
               "--log-level", "warning"]
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "aviary serve did not come up"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        response = httpx.post(f"{url}/transcribe", **multipart(0.5), timeout=30)
        assert response.status_code == 200 and response.json()["results"][0]["text"] == echo_text(0.5)
    finally:
        proc.terminate()
        proc.wait(10)
