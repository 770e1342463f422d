"""Parse a ``POST /transcribe/manifest`` body into one :class:`ManifestRequest`, and stream a run as NDJSON.

The body is the manifest itself (JSON Lines as ``application/x-ndjson`` / ``text/plain``, or a JSON array as
``application/json``), with the options as query parameters; or ``multipart/form-data`` with a ``manifest``
part, audio parts named ``files`` whose filenames the entries' ``audio_filepath`` name, and the options as
form fields (or query parameters).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from service.api.parsing import decode_options
from service.api.schemas import TranscribeOptions
from service.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from service.manifest import ManifestRequest, ManifestRun, Upload, build_items, parse_manifest
from service.pool.prompt import prompt_fields
from service.settings import Settings

NDJSON = "application/x-ndjson"
_TEXT_TYPES = {NDJSON, "application/jsonl", "application/x-jsonlines", "application/json", "text/plain"}
_FILE_FIELDS = ("files", "file")


async def read_manifest_request(request: Request, settings: Settings) -> ManifestRequest:
    """Dispatch on the media type; every entry's audio is located (uploads or media root) before returning.

    Raises:
        UnsupportedMediaType (415), InvalidRequest (400), PayloadTooLarge (413), ValidationFailed (422),
        PathNotAllowed (403).
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        text, uploads, fields = await _from_multipart(request, settings)
    elif media_type in _TEXT_TYPES or media_type.endswith("+json"):
        text, uploads, fields = _utf8(await request.body()), [], {}
    else:
        raise UnsupportedMediaType(
            f"Content-Type {media_type or '(none)'} is not supported; send the manifest as application/x-ndjson "
            "(JSON Lines) or application/json (an array), or multipart/form-data with a 'manifest' part and "
            "audio parts named 'files'"
        )
    options = _options({**request.query_params, **fields})
    entries = await run_in_threadpool(parse_manifest, text, settings.max_manifest_entries)
    defaults = prompt_fields(options.model_dump())
    items = build_items(entries, uploads, settings.media_root, defaults)
    return ManifestRequest(items, options.model, decode_options(options), options.return_hypotheses)


def wants_ndjson(request: Request) -> bool:
    return NDJSON in request.headers.get("accept", "").lower()


async def ndjson_lines(run: ManifestRun) -> AsyncIterator[bytes]:
    """One JSON line per entry as it completes (manifest order), then ``{"summary": ...}``; closing the
    stream early (client gone) closes the run."""
    try:
        async for result in run.results():
            yield _line(result)
        yield _line({"summary": run.summary()})
    finally:
        await run.close()


def _line(payload: Mapping[str, Any]) -> bytes:
    return (json.dumps(payload, ensure_ascii=False) + "\n").encode()


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"the manifest is not UTF-8 text ({exc})", param="manifest") from None


def _options(fields: Mapping[str, Any]) -> TranscribeOptions:
    try:
        return TranscribeOptions.model_validate(dict(fields))
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


async def _from_multipart(request: Request, settings: Settings) -> tuple[str, list[Upload], dict[str, str]]:
    try:
        async with request.form(max_files=settings.max_files + 1, max_fields=64) as form:
            parts = list(form.multi_items())
            manifest = [value for key, value in parts if key == "manifest"]
            uploads = [await _upload(key, value) for key, value in parts if key in _FILE_FIELDS]
            text = await _manifest_text(manifest)
    except HTTPException as exc:  # Starlette's multipart parser reports its limits and syntax errors so
        if "Too many files" in str(exc.detail):
            raise PayloadTooLarge(f"{exc.detail} (AVIARY_MAX_FILES={settings.max_files}); split the request",
                                  param="files") from None
        raise InvalidRequest(f"malformed multipart body: {exc.detail}") from None
    fields = {key: value for key, value in parts if key != "manifest" and key not in _FILE_FIELDS}
    if any(not isinstance(value, str) for value in fields.values()):
        raise InvalidRequest("only the parts named 'manifest' and 'files' may hold files", param="files")
    names = [upload.filename for upload in uploads]
    if len(set(names)) != len(names):
        raise InvalidRequest("two audio parts have the same filename; entries could not tell them apart",
                             param="files")
    return text, uploads, {key: str(value) for key, value in fields.items()}


async def _manifest_text(parts: list[UploadFile | str]) -> str:
    if len(parts) != 1:
        raise InvalidRequest("send exactly one part named 'manifest' (JSON Lines or a JSON array)",
                             param="manifest")
    part = parts[0]
    return part if isinstance(part, str) else _utf8(await part.read())


async def _upload(key: str, value: UploadFile | str) -> Upload:
    if not isinstance(value, UploadFile) or not value.filename:
        raise InvalidRequest(f"the '{key}' parts must be files with a filename (the entries name them)", param=key)
    return Upload(value.filename, await value.read(), value.content_type)
