"""Errors → HTTP, in one place: every failure leaves as ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from service.errors import (
    AviaryError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)

log = logging.getLogger("aviary.api")

_BY_STATUS: dict[int, type[AviaryError]] = {
    400: InvalidRequest, 404: NotFound, 405: MethodNotAllowed, 413: PayloadTooLarge,
    415: UnsupportedMediaType, 422: ValidationFailed,
}


def error_response(error: AviaryError) -> JSONResponse:
    """The HTTP response for ``error``: its status, its headers (e.g. Retry-After), the OpenAI-shaped body."""
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def validation_error(errors: Sequence[Any]) -> ValidationFailed:
    """Pydantic/FastAPI validation errors → one 422 naming the first offending field."""
    parts, params = [], []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        param = ".".join(loc) or None
        params.append(param)
        parts.append(f"{param}: {err.get('msg')}" if param else str(err.get("msg")))
    return ValidationFailed("invalid request: " + "; ".join(parts[:5]), param=params[0] if params else None)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception type the app can raise through :func:`error_response`."""
    app.add_exception_handler(AviaryError, _aviary_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ValidationError, _request_validation)
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)


async def _aviary_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AviaryError)
    return error_response(exc)


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, (RequestValidationError, ValidationError))
    return error_response(validation_error(exc.errors()))


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    kind = _BY_STATUS.get(exc.status_code, InternalError if exc.status_code >= 500 else InvalidRequest)
    message = str(exc.detail)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /docs for the API"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}; see /docs for the API"
    error = kind(message)
    response = error_response(error)
    response.status_code = exc.status_code
    response.headers.update(exc.headers or {})
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(InternalError(f"internal error: {type(exc).__name__}: {exc}"))
