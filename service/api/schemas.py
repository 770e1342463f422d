"""Request and response schemas of the HTTP API (they also drive the OpenAPI docs at ``/docs``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


SampleRate = Field(default=16000, ge=1000, le=768_000, description="Sample rate of the samples, in Hz.")
_LANG = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})?$"


class PromptOptions(BaseModel):
    """Multitask (Canary) prompt slots. Other models take `task=asr` or none and ignore the rest."""

    task: Literal["asr", "ast", "transcribe", "translate"] | None = Field(
        default=None, description="asr (transcribe) or ast (translate: set target_lang); default asr."
    )
    source_lang: str | None = Field(default=None, pattern=_LANG, description="Language spoken, e.g. en.")
    target_lang: str | None = Field(
        default=None, pattern=_LANG, description="Language of the text; differs from source_lang to translate."
    )
    pnc: bool | None = Field(default=None, description="Punctuation and capitalisation (model default: on).")
    itn: bool | None = Field(default=None, description="canary2: inverse text normalisation.")
    diarize: bool | None = Field(default=None, description="canary2: speaker-change tokens.")
    emotion: str | None = Field(default=None, max_length=32, description="canary2: emotion slot.")
    decodercontext: str | None = Field(default=None, max_length=2000, description="canary2: decoder context text.")


class TranscribeOptions(PromptOptions):
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
    strategy: str | None = Field(
        default=None, description="How the encoder saw the input: full, local_attention or chunked (long audio)."
    )
    hypothesis: HypothesisOut | None = Field(default=None, description="Only with return_hypotheses.")
    timestamps: Timestamps | None = Field(default=None, description="Only with timestamps.")


class TranscriptionResponse(BaseModel):
    model: str
    results: list[TranscriptionResult]


class ManifestSummary(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    entries: int
    errors: int = Field(description="Entries whose result is an error object.")
    audio_seconds: float = Field(description="Audio transcribed (successful entries).")
    wall_seconds: float
    wer: float | None = Field(description="Corpus WER over ASR entries with an `answer` (lower-cased, no punctuation).")
    bleu: float | None = Field(description="Corpus BLEU-4 (0-100) over AST entries with an `answer`.")


class ManifestResult(BaseModel):
    """One entry's result: the transcript, or an error object for this entry alone."""

    model_config = ConfigDict(extra="allow")

    index: int
    audio_filepath: str
    duration: float | None = None
    text: str | None = None
    task: str | None = None
    source_lang: str | None = None
    target_lang: str | None = None
    answer: str | None = None
    error: ErrorDetail | None = None


class ManifestResponse(BaseModel):
    model: str
    results: list[ManifestResult]
    summary: ManifestSummary


class ModelCard(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    source: Literal["bundled", "directory", "explicit", "pretrained"] = Field(
        description="Where it was declared: shipped with aviary (the demo model), AVIARY_MODEL_DIR, AVIARY_MODELS, "
        "or the pretrained catalog."
    )
    location: str = Field(description="Local path, or the hub name it downloads from.")
    hub: Literal["hf", "ngc"] | None = Field(description="Hub it downloads from; null for local files.")
    cached: bool = Field(description="Loads without the network (local files always do).")
    description: str | None = Field(description="The catalog's description.")
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


class UnloadResult(BaseModel):
    name: str
    unloaded: bool = Field(description="false: it was not loaded (nothing to do).")


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


def manifest_request_body() -> dict[str, Any]:
    """The request body of ``POST /transcribe/manifest`` for the docs."""
    entry = {"type": "object", "required": ["audio_filepath"], "additionalProperties": True, "properties": {
        "audio_filepath": {"type": "string", "description": "An uploaded part's filename, or a path under "
                           "AVIARY_MEDIA_ROOT."},
        "offset": {"type": "number"}, "duration": {"type": "number"},
        "taskname": {"type": "string", "enum": ["asr", "ast"]}, "source_lang": {"type": "string"},
        "target_lang": {"type": "string"}, "pnc": {"type": ["boolean", "string"]},
        "answer": {"type": "string", "description": "Reference text: scored in the summary."},
    }}
    form = TranscribeOptions.model_json_schema()
    form["properties"] = {
        "manifest": {"type": "string", "format": "binary", "description": "JSON Lines or a JSON array."},
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        **form["properties"],
    }
    form["required"] = ["manifest"]
    text = {"schema": {"type": "string", "description": "One JSON entry per line."}}
    return {"required": True, "content": {
        "application/x-ndjson": text, "text/plain": text,
        "application/json": {"schema": {"type": "array", "items": entry}},
        "multipart/form-data": {"schema": _inlined(form)},
    }}


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
