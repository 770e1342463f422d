"""The error taxonomy and its rendering: one OpenAI-shaped body, one status per class."""

from __future__ import annotations

import json

import pytest

from models.errors import (
    AudioError,
    CheckpointError,
    DownloadError,
    HubAccessError,
    HubUnavailableError,
    UnknownModelError,
    UnsupportedOptionError,
)
from service import errors as e
from service.api.errors import error_response, validation_error


@pytest.mark.parametrize(
    "cls,status,code",
    [
        (e.InvalidRequest, 400, "invalid_request"),
        (e.InvalidAudio, 400, "invalid_audio"),
        (e.Unauthorized, 401, "invalid_api_key"),
        (e.Forbidden, 403, "permission_denied"),
        (e.PathNotAllowed, 403, "path_not_allowed"),
        (e.ModelNotFound, 404, "model_not_found"),
        (e.ModelBusy, 409, "model_busy"),
        (e.PayloadTooLarge, 413, "payload_too_large"),
        (e.AudioTooLong, 413, "audio_too_long"),
        (e.UnsupportedMediaType, 415, "unsupported_media_type"),
        (e.ValidationFailed, 422, "validation_error"),
        (e.UnsupportedOption, 422, "unsupported_option"),
        (e.InternalError, 500, "internal_error"),
        (e.DownloadFailed, 502, "download_failed"),
        (e.ModelUnavailable, 503, "model_unavailable"),
        (e.HubUnavailable, 503, "hub_unavailable"),
        (e.HubAccessDenied, 503, "hub_access_denied"),
        (e.NotReady, 503, "not_ready"),
        (e.RequestTimeout, 504, "timeout"),
    ],
)
def test_status_code_and_body(cls: type[e.AviaryError], status: int, code: str) -> None:
    error = cls("what went wrong; what to do") if cls is e.Unauthorized else cls("what went wrong; what to do",
                                                                                   param="files")
    response = error_response(error)
    assert response.status_code == status
    body = json.loads(response.body)
    param = None if cls is e.Unauthorized else "files"
    assert body == {"error": {"message": "what went wrong; what to do", "type": cls.type, "param": param,
                              "code": code}}


def test_unauthorized_challenges_for_a_bearer_token() -> None:
    assert error_response(e.Unauthorized("no key")).headers["www-authenticate"] == 'Bearer realm="aviary"'
    wrong = error_response(e.Unauthorized("bad key", invalid_token=True))
    assert wrong.headers["www-authenticate"] == 'Bearer realm="aviary", error="invalid_token"'


def test_overloaded_carries_retry_after() -> None:
    response = error_response(e.Overloaded("busy", retry_after=7))
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert json.loads(response.body)["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    "exc,cls",
    [
        (AudioError("x.wav: could not decode"), e.InvalidAudio),
        (UnsupportedOptionError("no ctc head"), e.UnsupportedOption),
        (CheckpointError("bad archive"), e.ModelUnavailable),
        (UnknownModelError("no such repo", suggestions=("a",)), e.ModelNotFound),
        (HubUnavailableError("not cached; aviary pull m"), e.HubUnavailable),
        (HubAccessError("gated; set HF_TOKEN"), e.HubAccessDenied),
        (DownloadError("broke off; retry"), e.DownloadFailed),
        (RuntimeError("CUDA out of memory"), e.InternalError),
    ],
)
def test_runtime_errors_map_onto_the_taxonomy(exc: Exception, cls: type[e.AviaryError]) -> None:
    mapped = e.from_runtime(exc, "m")
    assert type(mapped) is cls and str(exc) in mapped.message
    same = e.RequestTimeout("late")
    assert e.from_runtime(same, "m") is same


def test_validation_errors_become_one_422() -> None:
    error = validation_error([
        {"loc": ("body", "audio", 0, "sample_rate"), "msg": "Input should be greater than or equal to 1000"},
        {"loc": ("body", "decoder"), "msg": "Input should be 'default' or 'ctc'"},
    ])
    assert error.status == 422 and error.param == "audio.0.sample_rate"
    assert error.message == ("invalid request: audio.0.sample_rate: Input should be greater than or equal to "
                             "1000; decoder: Input should be 'default' or 'ctc'")
