"""Helpers for the service's integration tests: the app under uvicorn on a loopback port, httpx clients.

Models are EchoBackends (declared by empty ``.nemo`` files in a temporary models directory) unless a test
serves the real runtime; EchoBackend's transcript encodes each input's duration, so every client can check
that it got its own results back.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
import uvicorn

from service.api import create_app
from service.engine import Engine
from service.pool import ModelSpec
from service.pool.echo import EchoBackend
from service.settings import Settings

FIXTURE_AUDIO = Path(__file__).resolve().parents[1] / "fixtures" / "audio"
#: Models every test server has: a hybrid-like default, a pure transducer, an 8 kHz one, one that fails to load.
ECHO_MODELS = ("echo", "rnnt", "echo8k", "broken")


@dataclass
class EchoFactory:
    """Builds an EchoBackend per model; ``per_model`` overrides its arguments, ``broken`` names fail."""

    defaults: dict[str, Any] = field(default_factory=dict)
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    broken: set[str] = field(default_factory=lambda: {"broken"})
    backends: dict[str, EchoBackend] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.per_model.setdefault("rnnt", {"decoders": ("rnnt",)})
        self.per_model.setdefault("echo8k", {"sample_rate": 8000})

    def __call__(self, spec: ModelSpec, device: str) -> EchoBackend:
        if spec.name in self.broken:
            raise RuntimeError("this checkpoint is corrupt")
        backend = EchoBackend(spec.name, **{**self.defaults, **self.per_model.get(spec.name, {})})
        self.backends[spec.name] = backend
        return backend


@dataclass
class Server:
    url: str
    port: int
    engine: Engine
    factory: EchoFactory | None
    client: httpx.Client

    def backend(self, name: str = "echo") -> EchoBackend:
        assert self.factory is not None
        return self.factory.backends[name]


@contextmanager
def run_server(settings: Settings, factory: Callable[..., Any] | None) -> Iterator[Server]:
    """Serve ``create_app(settings, factory)`` under uvicorn in a thread, on a socket bound to a free port."""
    app = create_app(settings, factory)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=30)
    try:
        yield Server(url, port, app.state.engine, factory if isinstance(factory, EchoFactory) else None, client)
    finally:
        client.close()  # first: an open keep-alive connection would hold up the server's shutdown
        server.should_exit = True
        thread.join(15)
        sock.close()


def echo_settings(model_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "model_dir": model_dir, "default_model": "echo", "device": "cpu", "max_wait_ms": 5,
        "max_upload_mb": 4, "max_audio_s": 30, "max_files": 8, "models": {}, "catalog": False,
    }
    return Settings(**{**base, **overrides})


# -- audio ------------------------------------------------------------------------------------------------


def tone(seconds: float, rate: int = 16000, channels: int = 1, amplitude: float = 0.1) -> np.ndarray:
    """A sine of exactly ``round(seconds * rate)`` frames, ``[N]`` or ``[N, C]`` float32."""
    t = np.arange(round(seconds * rate)) / rate
    mono = (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return mono if channels == 1 else np.repeat(mono[:, None], channels, axis=1)


def encode(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def wav(seconds: float, rate: int = 16000) -> bytes:
    return encode(tone(seconds, rate), rate)


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def duration_of(text: str) -> float:
    """The duration an echo transcript states."""
    return float(text.split()[-1])
