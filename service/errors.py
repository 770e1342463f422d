"""The service's closed error taxonomy.

Every failure a client can see is an :class:`AviaryError` subclass carrying its HTTP ``status``, a stable
machine-readable ``code``, an OpenAI-style ``type`` and, where one input or field is at fault, ``param``.
``service/api/errors.py`` renders them in one place; nothing else in the service knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from models.errors import (
    AudioError,
    CheckpointError,
    DownloadError,
    HubAccessError,
    HubUnavailableError,
    UnknownModelError,
    UnsupportedOptionError,
)


class ConfigurationError(ValueError):
    """The service's configuration is unusable (raised at start-up, never sent to a client)."""


class AviaryError(Exception):
    """Base of every error a client can receive."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    type: ClassVar[str] = "server_error"

    def __init__(self, message: str, *, param: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI-shaped JSON body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(AviaryError):
    """Malformed request: bad JSON, missing parts, wrong field types."""

    status, code, type = 400, "invalid_request", "invalid_request_error"


class InvalidAudio(InvalidRequest):
    """An input is empty, undecodable, or holds unusable samples (NaN, wrong dtype or shape)."""

    code = "invalid_audio"


class Unauthorized(AviaryError):
    """No API key, or one the service does not know (``WWW-Authenticate: Bearer``)."""

    status, code, type = 401, "invalid_api_key", "authentication_error"

    def __init__(self, message: str, *, invalid_token: bool = False):
        challenge = 'Bearer realm="aviary"' + (', error="invalid_token"' if invalid_token else "")
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class Forbidden(AviaryError):
    """A valid key that may not do this (a transcription key on a management endpoint)."""

    status, code, type = 403, "permission_denied", "permission_error"


class PathNotAllowed(Forbidden):
    """A manifest names a server-side path outside ``AVIARY_MEDIA_ROOT`` (or server paths are disabled)."""

    code = "path_not_allowed"


class NotFound(AviaryError):
    """No such route."""

    status, code, type = 404, "not_found", "invalid_request_error"


class ModelNotFound(NotFound):
    """The requested model is not among the available ones."""

    code = "model_not_found"


class MethodNotAllowed(AviaryError):
    status, code, type = 405, "method_not_allowed", "invalid_request_error"


class ModelBusy(AviaryError):
    """The model cannot be unloaded now: requests are using it or it is loading."""

    status, code, type = 409, "model_busy", "invalid_request_error"


class PayloadTooLarge(AviaryError):
    """The upload exceeds ``AVIARY_MAX_UPLOAD_MB`` (or too many files)."""

    status, code, type = 413, "payload_too_large", "invalid_request_error"


class AudioTooLong(PayloadTooLarge):
    """One input is longer than ``AVIARY_MAX_AUDIO_S``."""

    code = "audio_too_long"


class UnsupportedMediaType(AviaryError):
    status, code, type = 415, "unsupported_media_type", "invalid_request_error"


class ValidationFailed(AviaryError):
    """Well-formed request whose fields do not validate."""

    status, code, type = 422, "validation_error", "invalid_request_error"


class UnsupportedOption(ValidationFailed):
    """An option the chosen model cannot honour (e.g. ``decoder=ctc`` on a pure transducer)."""

    code = "unsupported_option"


class Overloaded(AviaryError):
    """The model's queue is full; the client should retry after ``retry_after`` seconds."""

    status, code, type = 429, "overloaded", "rate_limit_error"

    def __init__(self, message: str, *, retry_after: int, param: str | None = None):
        super().__init__(message, param=param, headers={"Retry-After": str(int(retry_after))})
        self.retry_after = int(retry_after)


class ClientClosedRequest(AviaryError):
    """The client went away before its result was ready (nginx's 499; nobody reads the body)."""

    status, code, type = 499, "client_closed_request", "invalid_request_error"


class InternalError(AviaryError):
    """Anything unexpected. The message says what failed; the traceback goes to the log."""


class ModelUnavailable(AviaryError):
    """The model failed to load, or was unloaded / shut down while the request waited."""

    status, code, type = 503, "model_unavailable", "server_error"


class HubUnavailable(ModelUnavailable):
    """A hub model is not cached and cannot be downloaded: the hub is unreachable or downloads are disabled."""

    code = "hub_unavailable"


class HubAccessDenied(ModelUnavailable):
    """The hub refuses the service's credentials (gated or private repo). A 503, not a 403: the client's
    request is fine, the operator has to set ``HF_TOKEN``."""

    code = "hub_access_denied"


class DownloadFailed(AviaryError):
    """A download broke off or arrived corrupt (nothing was kept); retrying may succeed."""

    status, code, type = 502, "download_failed", "server_error"


class NotReady(AviaryError):
    """``/ready`` before the preloaded models are warm."""

    status, code, type = 503, "not_ready", "server_error"


class RequestTimeout(AviaryError):
    """The request waited in the queue past ``AVIARY_REQUEST_TIMEOUT_S`` and was dropped unrun."""

    status, code, type = 504, "timeout", "server_error"


def from_runtime(exc: BaseException, model: str) -> AviaryError:
    """Map an exception raised by a backend (the runtime's own taxonomy included) onto ours."""
    if isinstance(exc, AviaryError):
        return exc
    if isinstance(exc, AudioError):
        return InvalidAudio(str(exc))
    if isinstance(exc, UnsupportedOptionError):
        return UnsupportedOption(f"model '{model}': {exc}")
    if isinstance(exc, CheckpointError):
        return ModelUnavailable(f"model '{model}' cannot be used: {exc}")
    if isinstance(exc, (UnknownModelError, HubUnavailableError, DownloadError)):
        return from_hub(exc, model)
    return InternalError(f"model '{model}' failed: {type(exc).__name__}: {exc}")


def from_hub(exc: BaseException, model: str) -> AviaryError:
    """Map the runtime's hub errors (raised while fetching a model) onto ours; the runtime's messages already
    say what to do (pre-download with ``aviary pull``, set ``HF_TOKEN``, retry)."""
    if isinstance(exc, UnknownModelError):
        return ModelNotFound(f"model '{model}': {exc}", param="model")
    if isinstance(exc, HubAccessError):
        return HubAccessDenied(f"model '{model}' cannot be downloaded: {exc}")
    if isinstance(exc, HubUnavailableError):
        return HubUnavailable(f"model '{model}' is not available here: {exc}")
    if isinstance(exc, DownloadError):
        return DownloadFailed(f"model '{model}': {exc}")
    return from_runtime(exc, model)
