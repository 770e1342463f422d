"""The service's configuration: one pydantic-settings class, read from ``AVIARY_*`` environment variables.

It is built once (by the CLI or by whoever calls ``create_app``) and injected everywhere; the CLI only
overrides fields. Every field is validated here so that a bad value fails at start-up with the variable's
name, not on the first request.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_DEVICE = r"^(auto|cpu|mps|cuda(:\d+)?)$"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$")


def parse_model_entries(value: Any) -> dict[str, str]:
    """``"a=/m/a.nemo, b=/m/b.nemo"`` → ``{"a": "/m/a.nemo", "b": "/m/b.nemo"}`` (dicts pass through)."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    entries: dict[str, str] = {}
    for raw in str(value or "").split(","):
        if not raw.strip():
            continue
        name, sep, location = (part.strip() for part in raw.partition("="))
        if not sep or not name or not location:
            raise ValueError(f"entry {raw.strip()!r} is not of the form name=location")
        if not _NAME.match(name):
            raise ValueError(f"model name {name!r} may only use letters, digits and . _ @ + -")
        if name in entries:
            raise ValueError(f"model {name!r} is listed twice")
        entries[name] = location
    return entries


def parse_name_list(value: Any) -> list[str]:
    """``"a, b"`` → ``["a", "b"]`` (lists pass through)."""
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    return [str(item).strip() for item in items if str(item).strip()]


class Settings(BaseSettings):
    """Everything configurable about the service. Environment variables are the field names, upper-cased,
    with the ``AVIARY_`` prefix (``max_batch_size`` ↔ ``AVIARY_MAX_BATCH_SIZE``)."""

    model_config = SettingsConfigDict(
        env_prefix="AVIARY_", extra="ignore", validate_default=True, protected_namespaces=()
    )

    # -- server ---------------------------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Interface `aviary serve` binds to (0.0.0.0: all).")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port `aviary serve` listens on.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log verbosity.")

    # -- which models exist ---------------------------------------------------------------------------------
    model_dir: Path | None = Field(
        default=None, description="Directory whose *.nemo files are all available, each named by its file stem."
    )
    models: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Explicit models as comma-separated name=location pairs; location is a local .nemo path or "
        "a hub model: a catalog name (parakeet-tdt-0.6b-v2), a Hugging Face repo id (nvidia/canary-1b-flash), "
        "either with an optional @revision. Hub models download on first use. Overrides a same-named file "
        "from model_dir and a same-named catalog entry.",
    )
    default_model: str | None = Field(
        default=None,
        description="Model used when a request names none. Unset: the first `models` entry, "
        "else the alphabetically first file in model_dir, else the bundled aviary-demo-en.",
    )
    demo_model: bool = Field(
        default=True,
        description="Offer the bundled demo model `aviary-demo-en` (a small English CTC model trained on "
        "synthetic speech, for trying aviary offline). false hides it.",
    )
    preload: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated models loaded and warmed at start-up and kept loaded (pinned); "
        "/ready answers 503 until they are warm.",
    )
    backend: Literal["runtime", "echo"] = Field(
        default="runtime",
        description="`runtime` runs the checkpoints; `echo` is the test double (answers with each input's "
        "duration, no model needed) for smoke and load tests of the service itself.",
    )

    # -- the pretrained catalog and the hub cache -------------------------------------------------------------
    catalog: bool = Field(
        default=True,
        description="Offer NeMo's pretrained catalog (Parakeet, Canary, FastConformer...) by name: GET /models "
        "lists it and requests may name an entry, which is downloaded on first use.",
    )
    allow_downloads: bool = Field(
        default=True,
        description="Download hub models that are not cached when they are first used. false: only cached "
        "ones load (others answer 503 saying how to pre-download them with `aviary pull`).",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Where downloaded checkpoints are kept (the runtime's AVIARY_CACHE_DIR; default "
        "~/.cache/aviary). HF_HUB_CACHE / HF_HOME, when set, still win for Hugging Face files.",
    )

    # -- access ---------------------------------------------------------------------------------------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated bearer tokens accepted by the transcription endpoints and GET /models "
        "(Authorization: Bearer <key>). Empty: those endpoints are open.",
    )
    admin_key: SecretStr | None = Field(
        default=None,
        description="Bearer token of the management endpoints (POST /models/{name}/load, DELETE "
        "/models/{name}); it is accepted by every other endpoint too. Unset: management is guarded like "
        "transcription (by api_keys if any, else open).",
    )

    # -- devices and the warm pool --------------------------------------------------------------------------
    device: str = Field(
        default="auto", pattern=_DEVICE, description="auto | cpu | cuda | cuda:N | mps; auto: cuda, else mps, else cpu."
    )
    max_loaded: int = Field(
        default=4, ge=1, le=64,
        description="Most models kept loaded; the least recently used idle one is unloaded to make room.",
    )
    model_ttl: float = Field(
        default=-1, ge=-1, le=30 * 86400, description="Seconds a model may stay idle before it is unloaded; -1: never."
    )

    # -- batching -------------------------------------------------------------------------------------------
    max_batch_size: int = Field(default=32, ge=1, le=1024, description="Most items in one model batch.")
    max_batch_audio_s: float = Field(
        default=600.0, gt=0, le=86400,
        description="Most padded audio seconds in one batch: longest item's duration × number of items.",
    )
    max_padding_waste: float = Field(
        default=0.15, ge=0, le=100,
        description="Most padding a batch may carry, as a fraction of its real audio: items of very different "
        "lengths run in separate batches (padding costs more than batching saves, especially on CPU). Models "
        "that run batches packed (Conformer/FastConformer with full or limited-context attention) pad only "
        "within length groups of their own (<= 15 %) and are not bound by it.",
    )
    max_wait_ms: float = Field(
        default=10.0, ge=0, le=10_000, description="Longest time the oldest queued item waits for its batch to fill."
    )
    max_queue_audio_s: float = Field(
        default=3600.0, gt=0, le=10 * 86400,
        description="Audio seconds a model's queue may hold; more is refused with 429 and Retry-After.",
    )
    max_queue_items: int = Field(
        default=4096, ge=1, le=1_000_000, description="Items a model's queue may hold (429 past it)."
    )
    request_timeout_s: float = Field(
        default=300.0, gt=0, le=86400, description="Longest queue wait; an item not started by then gets 504, unrun."
    )

    # -- input limits ---------------------------------------------------------------------------------------
    max_upload_mb: float = Field(default=512.0, gt=0, le=10_240, description="Largest request body in MiB (413).")
    max_audio_s: float = Field(default=7200.0, gt=0, le=86400, description="Longest single input in seconds (413).")
    long_audio_s: float = Field(
        default=300.0, gt=0, le=86400,
        description="Inputs longer than this are encoded with linear-memory local attention (Conformer encoders) "
        "or chunked with context (others) instead of full attention; the result's `strategy` says which.",
    )
    max_files: int = Field(default=64, ge=1, le=10_000, description="Most audio inputs in one request (413).")
    decode_threads: int = Field(default=4, ge=1, le=64, description="Threads decoding and resampling uploads.")

    # -- manifests ------------------------------------------------------------------------------------------
    media_root: Path | None = Field(
        default=None,
        description="Directory whose files manifests may name by server-side path (relative to it, or absolute "
        "inside it; no escape by .. or symlinks). Unset: manifests must upload their audio.",
    )
    max_manifest_entries: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Most entries in one POST /transcribe/manifest (413)."
    )

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: Any) -> dict[str, str]:
        return parse_model_entries(value)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: Any) -> list[str]:
        keys = parse_name_list(value)
        if any(any(ch.isspace() for ch in key) for key in keys):
            raise ValueError("an API key may not contain whitespace")
        return keys

    @field_validator("admin_key", mode="before")
    @classmethod
    def _check_admin_key(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip() or None
            if value is not None and any(ch.isspace() for ch in value):
                raise ValueError("the admin key may not contain whitespace")
        return value

    @field_validator("preload", mode="before")
    @classmethod
    def _parse_preload(cls, value: Any) -> list[str]:
        return parse_name_list(value)

    @field_validator("media_root")
    @classmethod
    def _check_media_root(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_dir():
            raise ValueError(f"{str(value)!r} is not a directory")
        return value.expanduser().resolve() if value is not None else None

    @field_validator("model_ttl")
    @classmethod
    def _check_ttl(cls, value: float) -> float:
        if value != -1 and value <= 0:
            raise ValueError("must be -1 (never unload) or a positive number of seconds")
        return value

    @model_validator(mode="after")
    def _check_preload(self) -> Settings:
        if len(set(self.preload)) > self.max_loaded:
            raise ValueError(
                f"preload names {len(set(self.preload))} models but max_loaded is {self.max_loaded}; "
                "raise AVIARY_MAX_LOADED or preload fewer"
            )
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
