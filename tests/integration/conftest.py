"""Fixtures of the service's integration tests: real uvicorn servers on loopback ports (see service_helpers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from service_helpers import ECHO_MODELS, EchoFactory, Server, echo_settings, run_server


@pytest.fixture(scope="module")
def echo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    for name in ECHO_MODELS:
        (directory / f"{name}.nemo").write_bytes(b"")
    return directory


@pytest.fixture(scope="module")
def server(echo_model_dir: Path) -> Iterator[Server]:
    """One shared echo server per test module (for tests that do not change its state)."""
    with run_server(echo_settings(echo_model_dir), EchoFactory()) as srv:
        yield srv


@pytest.fixture
def serve(echo_model_dir: Path) -> Iterator[Callable[..., Server]]:
    """Start a dedicated echo server: ``serve(factory=EchoFactory(...), **settings_overrides)``."""
    with ExitStack() as stack:

        def start(factory: EchoFactory | None = None, **overrides: Any) -> Server:
            settings = echo_settings(echo_model_dir, **overrides)
            return stack.enter_context(run_server(settings, factory or EchoFactory()))

        yield start
