"""Request and response schemas of the HTTP API (they also drive the OpenAPI docs at ``/docs``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SampleRate = Field(default=16000, ge=1000, le=768_000, description="Sample rate of the samples, in Hz.")


class TranscribeOptions(BaseModel):
    """Options shared by the multipart and the JSON forms of ``POST /transcribe``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(
        default=None, description="Model name (GET /models); the default model if omitted."
    )
    return_hypotheses: bool = Field(default=False, description="Add token ids, score and alignment log-probs.")
    timestamps: bool = Field(default=False, description="Add word and segment start/end times in seconds.")
    decoder: Literal["default", "ctc"] = Field(
        default="default", description="`ctc` decodes a hybrid RNNT/TDT+CTC model with its CTC head."
    )


class TranscribeForm(TranscribeOptions):
    """The non-file fields of a multipart request."""

    sample_rate: int = SampleRate


class AudioItem(BaseModel):
    """One JSON input: base64 ``.npy`` bytes or a list of samples."""

    model_config = ConfigDict(extra="forbid")

    npy_b64: str | None = Field(
        default=None, description="Base64 of a .npy file (float32/float64/int16, 1-D or 2-D)."
    )
    samples: list[float] | None = Field(default=None, description="Mono samples as floats in [-1, 1].")
    sample_rate: int = SampleRate
    name: str | None = Field(default=None, description="Echoed back as the result's filename.")

    @model_validator(mode="after")
    def _exactly_one(self) -> AudioItem:
        if (self.npy_b64 is None) == (self.samples is None):
            raise ValueError("give exactly one of npy_b64 and samples")
        return self


class TranscribeJSON(TranscribeOptions):
    """``POST /transcribe`` with ``Content-Type: application/json``."""

    audio: list[AudioItem] = Field(min_length=1, description="The inputs, transcribed in this order.")


class Word(BaseModel):
    word: str
    start: float
    end: float


class Segment(BaseModel):
    segment: str
    start: float
    end: float


class Timestamps(BaseModel):
    word: list[Word]
    segment: list[Segment]


class HypothesisOut(BaseModel):
    tokens: list[int]
    score: float
    alignments: list[list[float]] | None = Field(
        default=None, description="CTC: per-frame log-probs [T, V+1] (blank last); transducers: null."
    )


class TranscriptionResult(BaseModel):
    index: int
    filename: str | None
    duration: float = Field(description="Seconds.")
    text: str
    hypothesis: HypothesisOut | None = Field(default=None, description="Only with return_hypotheses.")
    timestamps: Timestamps | None = Field(default=None, description="Only with timestamps.")


class TranscriptionResponse(BaseModel):
    model: str
    results: list[TranscriptionResult]


class ModelCard(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    source: Literal["directory", "explicit", "pretrained"]
    location: str
    architecture: str | None = Field(description="The checkpoint's target class.")
    decoders: list[str] | None = Field(description="Decoder types, default first.")
    sample_rate: int | None
    languages: list[str] | None
    tasks: list[str] | None
    loaded: bool
    device: str | None
    default: bool


class ModelList(BaseModel):
    default: str | None
    models: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    return {status: {"model": ErrorBody} for status in statuses}


def transcribe_request_body() -> dict[str, Any]:
    """The request body of ``POST /transcribe`` for the docs: multipart or JSON (the route parses either)."""
    form = TranscribeForm.model_json_schema()
    form["properties"] = {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "Audio files (any format soundfile or ffmpeg reads) or .npy waveforms."},
        **form["properties"],
    }
    form["required"] = ["files"]
    return {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": form},
            "application/json": {"schema": _inlined(TranscribeJSON.model_json_schema())},
        },
    }


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace ``#/$defs/...`` references by their definitions (they would not resolve inside OpenAPI)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.rsplit("/", 1)[1]])
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined
