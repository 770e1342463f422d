"""Token ids ↔ text, the way NeMo's CTC/RNNT decoders detokenise.

Two vocabularies occur in CTC/RNNT checkpoints: character labels (``EncDecCTCModel`` and friends keep the
label list in the config) and SentencePiece models (``tokenizer.type: bpe``). Both share NeMo's
post-processing: one whitespace directly before a punctuation mark that the vocabulary contains is removed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from models.errors import CheckpointError

_SPECIAL_TOKEN = re.compile(r"^\[.*\]$|^<.*>$|^##|^▁|^\s*$")


def extract_punctuation(vocabulary: Sequence[str]) -> frozenset[str]:
    """Unicode punctuation characters that occur in non-special vocabulary entries (NeMo's rule)."""
    return frozenset(
        ch
        for token in vocabulary
        if not _SPECIAL_TOKEN.match(token)
        for ch in token
        if unicodedata.category(ch).startswith("P")
    )


class Tokenizer:
    """Common detokenisation logic; subclasses provide pieces and piece-joining."""

    kind = "base"  # NeMo's tokenizer_type for timestamp word rules: "char" or "bpe"

    def __init__(self, vocabulary: Sequence[str]) -> None:
        self.vocabulary = list(vocabulary)
        self.punctuation = extract_punctuation(self.vocabulary)
        pattern = "|".join(re.escape(p) for p in sorted(self.punctuation))
        self._space_before_punct = re.compile(rf"(\s)({pattern})") if pattern else None

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def ids_to_pieces(self, ids: Sequence[int]) -> list[str]:
        raise NotImplementedError

    def pieces_to_text(self, pieces: Sequence[str]) -> str:
        raise NotImplementedError

    def fix_punctuation(self, text: str) -> str:
        return self._space_before_punct.sub(r"\2", text) if self._space_before_punct else text

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids (no blanks) → text with NeMo's space-before-punctuation fix."""
        return self.fix_punctuation(self.pieces_to_text(self.ids_to_pieces(ids)))

    def text_to_ids(self, text: str) -> list[int]:
        raise NotImplementedError


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, labels: Sequence[str]) -> None:
        super().__init__(labels)
        self._index = {label: i for i, label in enumerate(self.vocabulary)}

    def ids_to_pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.vocabulary[i] for i in ids if 0 <= i < len(self.vocabulary)]

    def pieces_to_text(self, pieces: Sequence[str]) -> str:
        return "".join(pieces)

    def text_to_ids(self, text: str) -> list[int]:
        return [self._index[ch] for ch in text if ch in self._index]


class SentencePieceTokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, model_path: str | Path) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor()
        if not self.sp.Load(str(model_path)):
            raise CheckpointError(f"could not load the SentencePiece model {model_path}")
        super().__init__([self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())])

    def ids_to_pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.vocabulary[i] for i in ids if 0 <= i < len(self.vocabulary)]

    def pieces_to_text(self, pieces: Sequence[str]) -> str:
        return self.sp.decode_pieces(list(pieces))

    def text_to_ids(self, text: str) -> list[int]:
        return list(self.sp.encode_as_ids(text))


def build_tokenizer(cfg: dict[str, Any], resolve: Callable[[str], Path | None]) -> Tokenizer:
    """The tokenizer of a CTC/RNNT checkpoint.

    Args:
        cfg: the whole model config.
        resolve: maps a config artifact reference (``nemo:...`` or a path) to a local file.
    """
    tok_cfg = cfg.get("tokenizer")
    if tok_cfg:
        kind = str(tok_cfg.get("type", "bpe")).lower()
        if kind != "bpe":
            raise CheckpointError(
                f"tokenizer type {kind!r} is not supported (aviary reads SentencePiece 'bpe' tokenizers and "
                "character vocabularies)"
            )
        model_ref = tok_cfg.get("model_path") or str(Path(tok_cfg.get("dir", "")) / "tokenizer.model")
        model_path = resolve(model_ref)
        if model_path is None:
            raise CheckpointError(f"the tokenizer model {model_ref!r} is not in the checkpoint")
        return SentencePieceTokenizer(model_path)
    labels = _char_labels(cfg)
    if not labels:
        raise CheckpointError("the checkpoint has neither a tokenizer section nor a label list")
    return CharTokenizer(labels)


def _char_labels(cfg: dict[str, Any]) -> list[str] | None:
    for section in ("decoder", "joint"):
        vocab = (cfg.get(section) or {}).get("vocabulary")
        if vocab:
            return list(vocab)
    labels = cfg.get("labels")
    return list(labels) if labels else None
