"""Manifest entries: parse the text (JSON Lines or a JSON array), check each entry, and find its audio — an
uploaded part, or a server-side file under ``AVIARY_MEDIA_ROOT`` (nothing else, however the path is spelt).

Pure functions: no HTTP, no model. Everything a request could get wrong about its manifest is found here,
before any audio is decoded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from service.audio import AudioInput
from service.errors import InvalidRequest, PathNotAllowed, PayloadTooLarge
from service.pool import DecodeOptions
from service.pool.prompt import prompt_fields


@dataclass(frozen=True)
class Upload:
    """An audio part of a multipart manifest request."""

    filename: str
    data: bytes
    content_type: str | None = None


@dataclass(frozen=True)
class ManifestItem:
    """One entry, ready to run: the entry as given, where its audio comes from, and its prompt (the
    request's defaults overridden by the entry's own fields, as NeMo does)."""

    index: int
    entry: dict[str, Any]
    audio: AudioInput
    prompt: dict[str, Any]


@dataclass(frozen=True)
class ManifestRequest:
    """One ``POST /transcribe/manifest``."""

    items: list[ManifestItem]
    model: str | None = None
    options: DecodeOptions = field(default_factory=DecodeOptions)
    return_hypotheses: bool = False


def parse_manifest(text: str, max_entries: int) -> list[dict[str, Any]]:
    """Entries of a manifest: a JSON array, or JSON Lines (one object per non-blank line).

    Raises:
        InvalidRequest: not JSON, or an entry without a usable ``audio_filepath``/``offset``/``duration``.
        PayloadTooLarge: more than ``max_entries`` entries.
    """
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            entries = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"the manifest is not a valid JSON array: {exc}", param="manifest") from None
    else:
        entries = [_line(line, number) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not entries:
        raise InvalidRequest("the manifest has no entries", param="manifest")
    if len(entries) > max_entries:
        raise PayloadTooLarge(
            f"the manifest has {len(entries)} entries; at most {max_entries} are allowed "
            "(AVIARY_MAX_MANIFEST_ENTRIES) — split it", param="manifest",
        )
    return [check_entry(entry, index) for index, entry in enumerate(entries)]


def _line(line: str, number: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"manifest line {number} is not valid JSON: {exc}", param="manifest") from None


def check_entry(entry: Any, index: int) -> dict[str, Any]:
    """``entry`` if it is an object with a string ``audio_filepath`` and sane ``offset``/``duration``.

    Raises:
        InvalidRequest: naming the entry and the field.
    """
    where = f"manifest entry {index}"
    if not isinstance(entry, dict):
        raise InvalidRequest(f"{where} is not a JSON object", param=f"manifest.{index}")
    path = entry.get("audio_filepath")
    if not isinstance(path, str) or not path.strip() or "\0" in path:
        raise InvalidRequest(f"{where} needs an 'audio_filepath' string", param=f"manifest.{index}.audio_filepath")
    _check_seconds(entry, "offset", index, positive=False)
    _check_seconds(entry, "duration", index, positive=True)
    return entry


def _check_seconds(entry: dict[str, Any], key: str, index: int, *, positive: bool) -> None:
    value = entry.get(key)
    if value is None:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise InvalidRequest(f"manifest entry {index}: '{key}' must be a {kind} number of seconds, not {value!r}",
                             param=f"manifest.{index}.{key}")


def build_items(
    entries: Sequence[dict[str, Any]], uploads: Sequence[Upload], media_root: Path | None,
    defaults: Mapping[str, Any],
) -> list[ManifestItem]:
    """Find each entry's audio and merge its prompt over the request's ``defaults``.

    Raises:
        PathNotAllowed: an entry names a server path while server paths are disabled, or one outside the
            media root (403; the whole request is refused, nothing runs).
    """
    by_name = {u.filename: u for u in uploads}
    by_base: dict[str, list[Upload]] = {}
    for upload in uploads:
        by_base.setdefault(PurePath(upload.filename).name, []).append(upload)
    items = []
    for index, entry in enumerate(entries):
        raw = entry["audio_filepath"]
        upload = by_name.get(raw) or _single(by_base.get(PurePath(raw).name, []))
        audio = _input(entry, raw, upload, media_root, index)
        items.append(ManifestItem(index, entry, audio, {**defaults, **prompt_fields(entry)}))
    return items


def _single(candidates: list[Upload]) -> Upload | None:
    return candidates[0] if len(candidates) == 1 else None


def _input(entry: dict[str, Any], raw: str, upload: Upload | None, root: Path | None, index: int) -> AudioInput:
    offset, duration = float(entry.get("offset") or 0.0), entry.get("duration")
    span = {"offset": offset, "duration": float(duration) if duration is not None else None}
    if upload is not None:
        return AudioInput(label=raw, filename=raw, data=upload.data, content_type=upload.content_type, **span)
    return AudioInput(label=raw, filename=raw, path=resolve_media(raw, root, f"manifest entry {index}"), **span)


def resolve_media(raw: str, root: Path | None, where: str) -> Path:
    """The real path of a server-side file named by a manifest, which must lie inside ``root`` once every
    ``..`` and symlink is resolved (relative names are relative to ``root``).

    Raises:
        PathNotAllowed: ``root`` is None (server paths disabled) or the path resolves outside it.
    """
    if root is None:
        raise PathNotAllowed(
            f"{where}: '{raw}' is not an uploaded part and server-side paths are disabled; upload the audio as "
            "multipart parts named 'files' whose filenames match the entries' audio_filepath, or have the "
            "operator set AVIARY_MEDIA_ROOT to a directory the service may read", param="audio_filepath",
        )
    base = root.resolve()
    resolved = (base / raw).resolve()  # an absolute raw replaces base; symlinks and .. are resolved here
    if not resolved.is_relative_to(base):
        raise PathNotAllowed(
            f"{where}: '{raw}' is outside the media root (AVIARY_MEDIA_ROOT); only files inside it may be named",
            param="audio_filepath",
        )
    return resolved
