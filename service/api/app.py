"""The app factory: ``create_app(settings, backend_factory=None)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.api.errors import install_error_handlers
from service.api.middleware import BodySizeLimit
from service.api.routes import router
from service.engine import Engine
from service.pool import BackendFactory, Catalog
from service.settings import Settings

DESCRIPTION = """REST inference for NVIDIA NeMo speech-recognition checkpoints.

Errors always come back as `{"error": {"message", "type", "param", "code"}}`."""


def create_app(
    settings: Settings | None = None, backend_factory: BackendFactory | None = None, catalog: Catalog | None = None
) -> FastAPI:
    """Build the application around one :class:`Engine`.

    Args:
        settings: the configuration (default: read from the environment).
        backend_factory: builds a backend per model (default: per ``settings.backend``); tests pass
            EchoBackend factories here.
        catalog: pretrained models beyond the directory and explicit entries (default: NeMo's catalog when
            ``settings.catalog``; tests pass their own).

    Raises:
        ConfigurationError: the settings name models or devices that do not exist.
    """
    engine = Engine(settings or Settings(), backend_factory, catalog)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.close()

    app = FastAPI(title="aviary", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.engine = engine
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=engine.settings.max_upload_bytes)
    app.include_router(router)
    return app
