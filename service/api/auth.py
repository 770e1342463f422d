"""Bearer-token access control: transcription keys (``AVIARY_API_KEYS``) and the admin key
(``AVIARY_ADMIN_KEY``), as FastAPI dependencies.

Health, readiness, metrics and the docs stay open. The admin key is accepted everywhere; without one,
management is guarded exactly like transcription, so it is never the weaker door.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from fastapi import Request
from pydantic import SecretStr

from service.errors import Forbidden, Unauthorized
from service.settings import Settings

_MISSING = "this endpoint needs an API key: send the header 'Authorization: Bearer <key>'"


def require_api_key(request: Request) -> None:
    """Transcription endpoints and ``GET /models``: any API key or the admin key, when keys are configured.

    Raises:
        Unauthorized: no bearer token, or one that is not configured.
    """
    settings = _settings(request)
    if not settings.api_keys:  # an admin key alone guards management only
        return
    token = bearer_token(request)
    if token is None:
        raise Unauthorized(_MISSING)
    if not _matches(token, [*settings.api_keys, *_admin(settings)]):
        raise Unauthorized("invalid API key (AVIARY_API_KEYS)", invalid_token=True)


def require_admin_key(request: Request) -> None:
    """Management endpoints: the admin key; without one configured, whatever transcription requires.

    Raises:
        Unauthorized: no bearer token, or an unknown one.
        Forbidden: a transcription key (valid, but not for management).
    """
    settings = _settings(request)
    if settings.admin_key is None:
        require_api_key(request)
        return
    token = bearer_token(request)
    if token is None:
        raise Unauthorized(_MISSING + " (the admin key, AVIARY_ADMIN_KEY)")
    if _matches(token, _admin(settings)):
        return
    if _matches(token, settings.api_keys):
        raise Forbidden("this API key may transcribe but not manage models; use the admin key (AVIARY_ADMIN_KEY)")
    raise Unauthorized("invalid admin key (AVIARY_ADMIN_KEY)", invalid_token=True)


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _matches(token: str, keys: Iterable[SecretStr]) -> bool:
    """Constant-time comparison against every key (no early exit that would time which one matched)."""
    given = token.encode()
    matches = [secrets.compare_digest(given, key.get_secret_value().encode()) for key in keys]
    return any(matches)


def _admin(settings: Settings) -> list[SecretStr]:
    return [settings.admin_key] if settings.admin_key is not None else []


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.engine.settings
    return settings
