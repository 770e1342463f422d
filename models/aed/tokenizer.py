"""Canary tokenizers: the aggregate ``CanaryTokenizer`` and the monolingual ``CanaryBPETokenizer``.

**Aggregate** (canary-1b, canary-1b-flash, canary-180m-flash): one SentencePiece model per config key of
``tokenizer.langs`` — ``spl_tokens`` (the ``<|…|>`` control tokens) and one per language. A global id is a
local id plus the offset of its sub-tokenizer; offsets are cumulative vocabulary sizes in config order, so
the special tokens get the smallest ids. Text is always produced NeMo's way: every id's piece from its own
sub-tokenizer, concatenated, ``▁`` → space, no stripping — transcripts usually start with a space and keep
any special token the model emitted (``<|nospeech|>``, frame tokens ``<|12|>`` …).

**Monolingual** (canary-1b-v2): one SentencePiece model whose user-defined symbols are the control tokens;
prompts are SentencePiece-encoded as whole strings (a model with ``add_dummy_prefix`` yields an extra ``▁``
before the first control token, exactly as in NeMo) and text is ``decode_ids``.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from models.errors import CheckpointError

BOS = "<|startoftranscript|>"
EOS = "<|endoftext|>"
PAD = "<pad>"
NOSPEECH = "<|nospeech|>"
BOCTX = "<|startofcontext|>"
SPECIAL_LANG = "spl_tokens"
# canary2 checkpoints may key their sub-tokenizers by locale; prompts and callers use two-letter codes
LOCALES = {"en": "en-US", "es": "es-ES", "fr": "fr-FR", "de": "de-DE"}
_CONTROL = re.compile(r"^<\|[^|]+\|>$")
# control tokens that look like language codes but are not
_NOT_LANGUAGES = {"pnc", "nopnc", "itn", "noitn", "timestamp", "notimestamp", "diarize", "nodiarize",
                  "transcribe", "translate", "nospeech", "endoftext", "startoftranscript", "startofcontext",
                  "unklang", "unk"}
_LANG_CODE = re.compile(r"^<\|([a-z]{2,3}(?:-[A-Za-z]{2,4})?)\|>$")


def _load_spm(path: Path | str):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    if not sp.Load(str(path)):
        raise CheckpointError(f"could not load the SentencePiece model {path}")
    return sp


def is_control(piece: str) -> bool:
    return bool(_CONTROL.match(piece)) or piece == PAD


class CanaryTokenizer:
    """Aggregate tokenizer: per-language SentencePiece models behind one id space."""

    kind = "agg"

    def __init__(self, models: Mapping[str, Path | str]) -> None:
        if SPECIAL_LANG not in models:
            raise CheckpointError("an aggregate Canary tokenizer needs a 'spl_tokens' sub-tokenizer")
        self.sub = {lang: _load_spm(path) for lang, path in models.items()}  # config order is id order
        self.offsets: dict[str, int] = {}
        self.vocabulary: list[str] = []
        for lang, sp in self.sub.items():
            self.offsets[lang] = len(self.vocabulary)
            self.vocabulary.extend(sp.id_to_piece(i) for i in range(sp.get_piece_size()))
        self._starts = list(self.offsets.values())
        self._langs = list(self.offsets)
        spl = self.sub[SPECIAL_LANG]
        base = self.offsets[SPECIAL_LANG]
        self.special_tokens = {spl.id_to_piece(i): base + i for i in range(spl.get_piece_size())
                               if is_control(spl.id_to_piece(i))}
        self.bos_id, self.eos_id = self._special(BOS), self._special(EOS)
        self.pad_id, self.nospeech_id = self._special(PAD), self._special(NOSPEECH)

    def _special(self, piece: str) -> int:
        if piece not in self.special_tokens:
            raise CheckpointError(f"the Canary special-token tokenizer has no {piece!r}")
        return self.special_tokens[piece]

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @property
    def languages(self) -> list[str]:
        """Languages with a text sub-tokenizer (config keys, e.g. ``en`` or ``en-US``)."""
        return [lang for lang in self.sub if lang != SPECIAL_LANG]

    def resolve_lang(self, lang: str) -> str:
        """The sub-tokenizer key for ``lang``: itself, or its locale (``en`` → ``en-US``) if keyed so."""
        if lang in self.sub:
            return lang
        if len(lang) == 2 and LOCALES.get(lang) in self.sub:
            return LOCALES[lang]
        raise ValueError(f"language {lang!r} is not supported by this tokenizer; available: {self.languages}")

    def text_to_ids(self, text: str, lang: str) -> list[int]:
        """Plain text in ``lang`` (or a control-token string for ``spl_tokens``) → global ids."""
        if lang == SPECIAL_LANG:
            return self.control_ids(text)
        key = self.resolve_lang(lang)
        eos = text.endswith(EOS)
        if eos:  # NeMo strips a trailing <|endoftext|> and appends the eos id
            text = text[: -len(EOS)]
        ids = [self.offsets[key] + i for i in self.sub[key].encode_as_ids(text)]
        return ids + [self.eos_id] if eos else ids

    def control_ids(self, text: str) -> list[int]:
        """``"<|a|><|b|>"`` → ids, token by token (never through SentencePiece)."""
        ids = []
        while text:
            end = text.find(">") + 1
            if end == 0:
                raise ValueError(f"not a control-token string: {text!r}")
            token, text = text[:end], text[end:]
            if token not in self.special_tokens:
                raise ValueError(f"{token} is not a special token of this model")
            ids.append(self.special_tokens[token])
        return ids

    def encode_prompt(self, prompt: str, context_lang: str | None = None) -> list[int]:
        """A rendered prompt → ids. A canary2 decoder context (between ``<|startofcontext|>`` and
        ``<|startoftranscript|>``) is plain text in ``context_lang`` (NeMo: the target language)."""
        if not prompt.startswith(BOCTX):
            return self.control_ids(prompt)
        rest = prompt[len(BOCTX):]
        cut = rest.find(BOS)
        context, controls = rest[:cut], rest[cut:]
        ctx_ids = self.text_to_ids(context, context_lang or "en") if context else []
        return [self.special_tokens[BOCTX], *ctx_ids, *self.control_ids(controls)]

    def _owner(self, gid: int) -> str:
        return self._langs[bisect.bisect_right(self._starts, gid) - 1]

    def ids_to_pieces(self, ids: Sequence[int]) -> list[str]:
        # ids in the padded tail of the embedding (>= vocab_size) have no piece: NeMo raises KeyError on
        # them; we render them as nothing.
        return [self.vocabulary[i] for i in ids if 0 <= i < len(self.vocabulary)]

    def ids_to_text(self, ids: Sequence[int]) -> str:
        return "".join(self.ids_to_pieces(ids)).replace("▁", " ")

    decode = ids_to_text

    def ids_to_langs(self, ids: Sequence[int]) -> list[str]:
        return [self._owner(i) for i in ids if 0 <= i < len(self.vocabulary)]


class CanaryBPETokenizer:
    """One SentencePiece model holding text pieces and the control tokens (canary-1b-v2)."""

    kind = "bpe"

    def __init__(self, model_path: Path | str) -> None:
        self.sp = _load_spm(model_path)
        self.vocabulary = [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]
        self.special_tokens = {p: i for i, p in enumerate(self.vocabulary) if is_control(p)}
        for piece in (BOS, EOS, PAD, NOSPEECH):
            if piece not in self.special_tokens:
                raise CheckpointError(f"the Canary SentencePiece model has no {piece!r} symbol")
        self.bos_id, self.eos_id = self.special_tokens[BOS], self.special_tokens[EOS]
        self.pad_id, self.nospeech_id = self.special_tokens[PAD], self.special_tokens[NOSPEECH]

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @property
    def languages(self) -> list[str]:
        """Language codes that have a prompt token (``<|de|>`` …)."""
        found = (_LANG_CODE.match(p) for p in self.special_tokens)
        return [m.group(1) for m in found if m and m.group(1) not in _NOT_LANGUAGES]

    def resolve_lang(self, lang: str) -> str:
        return lang

    def text_to_ids(self, text: str, lang: str | None = None) -> list[int]:
        return list(self.sp.encode_as_ids(text))

    def control_ids(self, text: str) -> list[int]:
        return self.text_to_ids(text)

    def encode_prompt(self, prompt: str, context_lang: str | None = None) -> list[int]:
        # the whole string through SentencePiece, as NeMo does (keeps a dummy-prefix "▁" if the model has one)
        return self.text_to_ids(prompt)

    def ids_to_pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.vocabulary[i] for i in ids if 0 <= i < len(self.vocabulary)]

    def ids_to_text(self, ids: Sequence[int]) -> str:
        return self.sp.decode_ids([int(i) for i in ids if 0 <= i < len(self.vocabulary)])

    decode = ids_to_text

    def ids_to_langs(self, ids: Sequence[int]) -> list[str]:
        return []


AEDTokenizer = CanaryTokenizer | CanaryBPETokenizer


def _model_ref(cfg: Mapping[str, Any]) -> str:
    return str(cfg.get("model_path") or Path(str(cfg.get("dir") or "")) / "tokenizer.model")


def build_aed_tokenizer(cfg: Mapping[str, Any], resolve: Callable[[str], Path | None]) -> AEDTokenizer:
    """The tokenizer of a Canary checkpoint config (``tokenizer.type`` ``agg`` or ``bpe``).

    Args:
        cfg: the whole model config.
        resolve: maps an artifact reference (``nemo:…`` or a path) to a local file.
    """
    tok = cfg.get("tokenizer") or {}
    kind = str(tok.get("type", "")).lower()

    def path_of(section: Mapping[str, Any], what: str) -> Path:
        found = resolve(_model_ref(section))
        if found is None:
            raise CheckpointError(f"the {what} tokenizer {_model_ref(section)!r} is not in the checkpoint")
        return found

    if kind == "agg":
        langs = tok.get("langs") or {}
        return CanaryTokenizer({lang: path_of(section, lang) for lang, section in langs.items()})
    if kind == "bpe":
        return CanaryBPETokenizer(path_of(tok, "SentencePiece"))
    raise CheckpointError(f"Canary tokenizer type {kind!r} is not supported (expected 'agg' or 'bpe')")
