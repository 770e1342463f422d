"""Canary prompt formats: slot values → the decoder's prompt token ids.

Two formats exist (``prompt_format`` in the checkpoint config):

* ``canary`` (canary-1b), 5 tokens:
  ``<|startoftranscript|> <|src|> <|transcribe|>|<|translate|> <|tgt|> <|pnc|>|<|nopnc|>``
* ``canary2`` (canary-1b-flash, canary-180m-flash, canary-1b-v2), 9 tokens with an empty context:
  ``<|startofcontext|> [context] <|startoftranscript|> <|emo:…|> <|src|> <|tgt|> <|pnc|> <|itn|> <|timestamp|>
  <|diarize|>`` (each flag or its ``<|no…|>`` form). There is no task token: translation is ``src != tgt``.

Slot values are normalised as NeMo does (``en`` → ``<|en|>``; booleans from ``yes/no/true/false/1/0`` or the
slot's own name), and additionally accept Python booleans and any letter case (NeMo rejects ``pnc=True`` and
maps ``"Yes"`` to *no* punctuation). Defaults, lowest precedence first: NeMo's (``en → en``, ASR, pnc on, all
canary2 flags off, emotion undefined), the checkpoint's ``prompt_defaults``, then whatever the caller gives.
When a caller names a source language but no target for an ASR request, the target is the source (NeMo
would fall back to English and translate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from models.aed.tokenizer import BOCTX, BOS, AEDTokenizer

TRUE_WORDS = {"yes", "true", "1"}
FALSE_WORDS = {"no", "false", "0"}
TASK_ASR = {"asr", "transcribe", "<|transcribe|>"}
TASK_AST = {"ast", "translate", "<|translate|>", "s2t_translation"}
EMOTIONS = ("undefined", "neutral", "angry", "happy", "sad")
SLOT_ALIASES = {"taskname": "task", "context": "decodercontext"}


def as_flag(slot: str, value: Any) -> str:
    """A boolean slot value → ``<|slot|>`` or ``<|noslot|>``."""
    if isinstance(value, bool):
        on = value
    else:
        text = str(value).strip()
        low = text.lower()
        if low in TRUE_WORDS or low == slot or text == f"<|{slot}|>":
            on = True
        elif low in FALSE_WORDS or low == f"no{slot}" or text == f"<|no{slot}|>":
            on = False
        else:
            raise ValueError(f"{slot}={value!r} is not a boolean (use true/false, yes/no, 1/0)")
    return f"<|{slot}|>" if on else f"<|no{slot}|>"


def as_lang(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("an empty language code")
    return text if text.startswith("<|") and text.endswith("|>") else f"<|{text}|>"


def bare_lang(token: str) -> str:
    return token[2:-2] if token.startswith("<|") and token.endswith("|>") else token


def as_task(value: Any) -> str:
    text = str(value).strip().lower()
    if text in TASK_ASR:
        return "asr"
    if text in TASK_AST:
        return "ast"
    raise ValueError(f"task={value!r} is not supported; use 'asr' (transcribe) or 'ast' (translate)")


def as_emotion(value: Any) -> str:
    text = str(value).strip()
    name = text[len("<|emo:"):-2] if text.startswith("<|emo:") and text.endswith("|>") else text.lower()
    if name not in EMOTIONS:
        raise ValueError(f"emotion={value!r} is not one of {', '.join(EMOTIONS)}")
    return f"<|emo:{name}|>"


def user_slots(prompt_defaults: Any) -> dict[str, Any]:
    """The ``user`` turn of a checkpoint's ``prompt_defaults`` (a list of ``{role, slots}``)."""
    for turn in prompt_defaults or []:
        if isinstance(turn, Mapping) and turn.get("role") == "user":
            return dict(turn.get("slots") or {})
    return {}


def canonical(slots: Mapping[str, Any] | None) -> dict[str, Any]:
    """Rename legacy slot names and drop unset values."""
    out: dict[str, Any] = {}
    for key, value in (slots or {}).items():
        if value is not None:
            out[SLOT_ALIASES.get(key, key)] = value
    return out


class PromptFormat:
    """One prompt format: merges slot layers, normalises them and encodes the user turn."""

    name: ClassVar[str] = ""
    slots: ClassVar[tuple[str, ...]] = ()
    nemo_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, prompt_defaults: Any = None) -> None:
        self.defaults = {**self.nemo_defaults, **canonical(user_slots(prompt_defaults))}

    def resolve(self, *layers: Mapping[str, Any] | None) -> dict[str, str]:
        """Merge ``layers`` (later wins) over the defaults; return normalised slot values."""
        known = set(self.slots) | {"task", "source_lang", "target_lang"}
        given: dict[str, Any] = {}
        for layer in layers:
            # like NeMo, slots this format does not have are ignored (manifests carry other fields too)
            given.update({k: v for k, v in canonical(layer).items() if k in known})
        merged = {**self.defaults, **given}
        task = as_task(merged.get("task", "asr"))
        if "target_lang" not in given and "source_lang" in given and task == "asr":
            merged["target_lang"] = given["source_lang"]
        if task == "ast" and "target_lang" not in given:
            raise ValueError("translation (task='ast') needs a target_lang")
        return self.normalise(merged, task)

    def normalise(self, merged: dict[str, Any], task: str) -> dict[str, str]:
        raise NotImplementedError

    def render(self, slots: Mapping[str, str]) -> str:
        raise NotImplementedError

    def encode(self, tokenizer: AEDTokenizer, slots: Mapping[str, str]) -> list[int]:
        """Normalised slots → prompt ids (unknown languages raise ``ValueError``)."""
        return tokenizer.encode_prompt(self.render(slots), context_lang=bare_lang(slots["target_lang"]))

    def ids(self, tokenizer: AEDTokenizer, *layers: Mapping[str, Any] | None) -> list[int]:
        return self.encode(tokenizer, self.resolve(*layers))


class CanaryPrompt(PromptFormat):
    name: ClassVar[str] = "canary"
    slots: ClassVar[tuple[str, ...]] = ("source_lang", "task", "target_lang", "pnc")
    nemo_defaults: ClassVar[dict[str, Any]] = {"source_lang": "en", "target_lang": "en", "task": "asr",
                                               "pnc": "yes"}

    def normalise(self, merged: dict[str, Any], task: str) -> dict[str, str]:
        return {"source_lang": as_lang(merged["source_lang"]), "target_lang": as_lang(merged["target_lang"]),
                "task": "<|translate|>" if task == "ast" else "<|transcribe|>",
                "pnc": as_flag("pnc", merged["pnc"])}

    def render(self, slots: Mapping[str, str]) -> str:
        return f"{BOS}{slots['source_lang']}{slots['task']}{slots['target_lang']}{slots['pnc']}"

    def resolve(self, *layers: Mapping[str, Any] | None) -> dict[str, str]:
        for layer in layers:
            layer = canonical(layer)
            if layer.get("decodercontext"):
                raise ValueError("the 'canary' prompt format has no decoder context (canary2 models do)")
            if "timestamp" in layer and as_flag("timestamp", layer["timestamp"]) == "<|timestamp|>":
                raise ValueError("the 'canary' prompt format cannot ask for timestamps (canary2 models can)")
        return super().resolve(*layers)


class Canary2Prompt(PromptFormat):
    name: ClassVar[str] = "canary2"
    slots: ClassVar[tuple[str, ...]] = ("decodercontext", "emotion", "source_lang", "target_lang", "pnc",
                                        "itn", "timestamp", "diarize")
    nemo_defaults: ClassVar[dict[str, Any]] = {
        "decodercontext": "", "emotion": "undefined", "source_lang": "en", "target_lang": "en", "pnc": "yes",
        "itn": "no", "timestamp": "no", "diarize": "no"}
    FLAGS: ClassVar[tuple[str, ...]] = ("pnc", "itn", "timestamp", "diarize")

    def normalise(self, merged: dict[str, Any], task: str) -> dict[str, str]:
        out = {"decodercontext": str(merged["decodercontext"]), "emotion": as_emotion(merged["emotion"]),
               "source_lang": as_lang(merged["source_lang"]), "target_lang": as_lang(merged["target_lang"])}
        if task == "ast" and out["source_lang"] == out["target_lang"]:
            raise ValueError("translation (task='ast') needs a target_lang different from the source_lang")
        return out | {flag: as_flag(flag, merged[flag]) for flag in self.FLAGS}

    def render(self, slots: Mapping[str, str]) -> str:
        flags = "".join(slots[f] for f in self.FLAGS)
        return (f"{BOCTX}{slots['decodercontext']}{BOS}{slots['emotion']}{slots['source_lang']}"
                f"{slots['target_lang']}{flags}")


FORMATS: dict[str, type[PromptFormat]] = {"canary": CanaryPrompt, "canary2": Canary2Prompt}


def prompt_format(name: str, prompt_defaults: Any = None) -> PromptFormat:
    if name not in FORMATS:
        raise ValueError(f"unknown Canary prompt format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name](prompt_defaults)


def flatten_prompt(prompt: Mapping[str, Any]) -> dict[str, Any]:
    """NeMo's three ``transcribe(**prompt)`` shapes → one slot dict: ``turns=[{role, slots}]``,
    ``role=..., slots={...}``, or flat legacy keywords (``source_lang=..., pnc=...``)."""
    if "turns" in prompt:
        turns: Sequence[Mapping[str, Any]] = prompt["turns"]
        return dict(user_slots(turns))
    if "slots" in prompt:
        return dict(prompt["slots"] or {})
    return {k: v for k, v in prompt.items() if k != "role"}
