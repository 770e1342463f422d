"""Multitask (Canary) prompts: the per-item fields a request or manifest entry may carry, and their check
against what the model supports.

A prompt is a small dict of slots — ``task`` (asr | ast), ``source_lang``, ``target_lang``, ``pnc``, and for
canary2 checkpoints ``itn``, ``diarize``, ``emotion``, ``decodercontext`` — that the runtime turns into the
decoder's prompt tokens. It is per item, so items with different prompts share batches. Models that are not
multitask only transcribe: they take ``task=asr`` (or none) and ignore the other slots.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.errors import UnsupportedOption

#: Slots a request (form/JSON field or query parameter) or a manifest entry may set, with NeMo's aliases.
PROMPT_FIELDS = ("task", "source_lang", "target_lang", "pnc", "itn", "diarize", "emotion", "decodercontext")
ALIASES = {"taskname": "task", "context": "decodercontext"}
TASKS = {"asr": "asr", "transcribe": "asr", "ast": "ast", "translate": "ast", "s2t_translation": "ast"}


def prompt_fields(source: Mapping[str, Any]) -> dict[str, Any]:
    """The prompt slots found in ``source`` (a manifest entry or the request's options), aliases resolved,
    ``None`` values dropped."""
    prompt: dict[str, Any] = {}
    for key, value in source.items():
        slot = ALIASES.get(key, key)
        if slot in PROMPT_FIELDS and value is not None and not (slot in prompt and key != slot):
            prompt[slot] = value
    return prompt


def is_multitask(info: Mapping[str, Any]) -> bool:
    """Whether the model takes prompts (its info names a prompt format)."""
    return bool(info.get("prompt_format"))


def check_prompt(model: str, info: Mapping[str, Any], prompt: Mapping[str, Any], *, timestamps: bool = False,
                 where: str = "") -> dict[str, Any]:
    """Check ``prompt`` against the model; the prompt the backend gets (``task`` normalised to asr/ast;
    empty for models that are not multitask).

    Raises:
        UnsupportedOption: a task or language the model does not support (the message lists those it
            does), translation asked of a model that only transcribes, or timestamps on a canary-format model.
    """
    task = _task(model, prompt.get("task"), where)
    if not is_multitask(info):
        source, target = prompt.get("source_lang"), prompt.get("target_lang")
        if task == "ast" or (source is not None and target is not None and str(source) != str(target)):
            raise UnsupportedOption(
                f"{where}model '{model}' only transcribes (task asr): translation needs a multitask (Canary) "
                "model — see GET /models for models whose tasks include ast", param="task",
            )
        return {}
    tasks = list(info.get("tasks") or ["asr"])
    if task is not None and task not in tasks:
        raise UnsupportedOption(
            f"{where}model '{model}' does not support task={task}; it supports: {', '.join(tasks)}", param="task"
        )
    _check_languages(model, info, prompt, where)
    if task == "ast" and prompt.get("target_lang") is None:
        raise UnsupportedOption(f"{where}task=ast (translation) needs target_lang", param="target_lang")
    if timestamps and info.get("prompt_format") == "canary":
        raise UnsupportedOption(
            f"model '{model}' cannot give timestamps (a canary-format checkpoint; canary2 ones can)",
            param="timestamps",
        )
    return {**prompt, "task": task} if task is not None else dict(prompt)


def _task(model: str, value: Any, where: str) -> str | None:
    if value is None:
        return None
    task = TASKS.get(str(value).strip().lower())
    if task is None:
        raise UnsupportedOption(
            f"{where}task={value!r} is not a task; use asr (transcribe) or ast (translate)", param="task"
        )
    return task


def _check_languages(model: str, info: Mapping[str, Any], prompt: Mapping[str, Any], where: str) -> None:
    languages = [str(lang) for lang in info.get("languages") or []]
    for slot in ("source_lang", "target_lang"):
        value = prompt.get(slot)
        if value is not None and languages and str(value) not in languages:
            raise UnsupportedOption(
                f"{where}model '{model}' does not support {slot}={value}; its languages are: "
                f"{', '.join(languages)}", param=slot,
            )
