"""Parse a ``POST /transcribe`` body — multipart form or JSON — into one typed :class:`TranscribeRequest`."""

from __future__ import annotations

import base64
import binascii

import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from service.api.schemas import AudioItem, TranscribeForm, TranscribeJSON, TranscribeOptions
from service.audio import AudioInput
from service.batching import TranscribeRequest
from service.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from service.pool import DecodeOptions
from service.pool.prompt import prompt_fields
from service.settings import Settings

_FILE_FIELDS = ("files", "file")


async def read_transcribe_request(request: Request, settings: Settings) -> TranscribeRequest:
    """Dispatch on the media type.

    Raises:
        UnsupportedMediaType: neither multipart/form-data nor application/json.
        InvalidRequest / ValidationFailed: malformed body or fields.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        return await _from_multipart(request, settings)
    if media_type == "application/json" or media_type.endswith("+json"):
        return await _from_json(request, settings)
    raise UnsupportedMediaType(
        f"Content-Type {media_type or '(none)'} is not supported; send multipart/form-data with audio parts "
        "named 'files', or application/json with an 'audio' list"
    )


async def _from_multipart(request: Request, settings: Settings) -> TranscribeRequest:
    try:
        async with request.form(max_files=settings.max_files, max_fields=64) as form:
            uploads = [(key, value) for key, value in form.multi_items() if key in _FILE_FIELDS]
            fields = {key: value for key, value in form.multi_items() if key not in _FILE_FIELDS}
            inputs = [await _read_part(key, value, i) for i, (key, value) in enumerate(uploads)]
    except HTTPException as exc:  # Starlette's multipart parser reports its limits and syntax errors so
        if "Too many files" in str(exc.detail):
            raise PayloadTooLarge(
                f"{exc.detail} (AVIARY_MAX_FILES={settings.max_files}); split the request", param="files"
            ) from None
        raise InvalidRequest(f"malformed multipart body: {exc.detail}") from None
    if not inputs:
        raise InvalidRequest("no audio: send one or more file parts named 'files'", param="files")
    if any(not isinstance(value, str) for value in fields.values()):
        raise InvalidRequest("only parts named 'files' (or 'file') may hold files", param="files")
    try:
        form_fields = TranscribeForm.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    inputs = [_with_rate(item, form_fields.sample_rate) for item in inputs]
    return _request(inputs, form_fields, settings)


async def _read_part(key: str, value: UploadFile | str, index: int) -> AudioInput:
    if not isinstance(value, UploadFile):
        raise InvalidRequest(f"the '{key}' part #{index} must be a file, not a text field", param=key)
    label = value.filename or f"{key}[{index}]"
    return AudioInput(label=label, filename=value.filename, data=await value.read(), content_type=value.content_type)


def _with_rate(item: AudioInput, sample_rate: int) -> AudioInput:
    return AudioInput(item.label, item.filename, item.data, None, item.content_type, sample_rate)


async def _from_json(request: Request, settings: Settings) -> TranscribeRequest:
    # Parsed off the event loop: a body of raw samples can be tens of megabytes of JSON.
    payload, inputs = await run_in_threadpool(_parse_json, await request.body())
    return _request(inputs, payload, settings)


def _parse_json(body: bytes) -> tuple[TranscribeJSON, list[AudioInput]]:
    try:
        payload = TranscribeJSON.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors()
        if any(err["type"] == "json_invalid" for err in errors):
            raise InvalidRequest(f"the body is not valid JSON: {errors[0]['msg']}") from None
        raise RequestValidationError(errors) from None
    return payload, [_json_item(item, i) for i, item in enumerate(payload.audio)]


def _json_item(item: AudioItem, index: int) -> AudioInput:
    label = item.name or f"audio[{index}]"
    if item.samples is not None:
        samples = np.asarray(item.samples, dtype=np.float32)
        return AudioInput(label=label, filename=item.name, samples=samples, sample_rate=item.sample_rate)
    try:
        data = base64.b64decode(item.npy_b64 or "", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{label}: npy_b64 is not valid base64", param=f"audio.{index}.npy_b64") from None
    return AudioInput(label=label, filename=item.name, data=data, sample_rate=item.sample_rate)


def _request(inputs: list[AudioInput], options: TranscribeOptions, settings: Settings) -> TranscribeRequest:
    if len(inputs) > settings.max_files:
        raise PayloadTooLarge(
            f"the request holds {len(inputs)} inputs; at most {settings.max_files} are allowed "
            "(AVIARY_MAX_FILES) — split it", param="files",
        )
    return TranscribeRequest(
        inputs=inputs, model=options.model, options=decode_options(options),
        return_hypotheses=options.return_hypotheses, prompt=prompt_fields(options.model_dump()),
    )


def decode_options(options: TranscribeOptions) -> DecodeOptions:
    return DecodeOptions(None if options.decoder == "default" else options.decoder, options.timestamps)
