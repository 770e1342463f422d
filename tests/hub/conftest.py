"""Fixtures of the hub tests: fake hubs on 127.0.0.1, a private cache per test, tiny ``.nemo`` files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_hubs import FakeHFHub, FakeNGC, free_port
from huggingface_hub import constants as hf_constants

from models import hub_ngc

HUB_ENV = ("HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "AVIARY_OFFLINE", "HF_HOME",
           "HF_HUB_CACHE", "AVIARY_CACHE_DIR", "AVIARY_NGC_ENDPOINT")


@pytest.fixture(scope="session")
def _hf_server() -> Iterator[FakeHFHub]:
    server = FakeHFHub()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _ngc_server() -> Iterator[FakeNGC]:
    server = FakeNGC()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test: a fresh cache, no hub settings inherited from the machine, fast NGC retries."""
    for var in HUB_ENV:
        monkeypatch.delenv(var, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("AVIARY_CACHE_DIR", str(cache))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setattr(hub_ngc, "RETRY_WAIT_S", 0.0)
    # huggingface_hub reads HF_HUB_OFFLINE once at import; the tests switch it per test through the env.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    return cache


@pytest.fixture
def hf(_hf_server: FakeHFHub, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHFHub]:
    """The fake Hugging Face Hub, empty, with ``HF_ENDPOINT`` pointing at it."""
    _hf_server.reset()
    monkeypatch.setenv("HF_ENDPOINT", _hf_server.url)
    yield _hf_server
    _hf_server.reset()


@pytest.fixture
def ngc(_ngc_server: FakeNGC, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNGC]:
    """The fake NGC, empty, with ``AVIARY_NGC_ENDPOINT`` pointing at it."""
    _ngc_server.reset()
    monkeypatch.setenv("AVIARY_NGC_ENDPOINT", _ngc_server.url)
    yield _ngc_server
    _ngc_server.reset()


@pytest.fixture
def hub_down(monkeypatch: pytest.MonkeyPatch) -> str:
    """Both hubs point at a closed port."""
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("AVIARY_NGC_ENDPOINT", url)
    return url
