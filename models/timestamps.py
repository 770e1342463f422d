"""Char/token, word and segment timestamps, computed the way NeMo's CTC and RNNT/TDT decoders do.

Offsets are in encoder frames; ``start``/``end`` are seconds (offset × window_stride × subsampling).
NeMo's rules, which we keep so results match it exactly:

* CTC: a token spans from the previous token's first frame to its own first frame (the first token
  from one frame before its onset); a punctuation token ends where it starts.
* RNNT: a token emitted at frame ``t`` spans ``[t, t+1]``.
* TDT: ``[t, t+duration]``; a punctuation token collapses onto the previous token's end.
* Words: a SentencePiece piece that carries ``▁`` starts a word; punctuation joins the previous word.
* Segments: close after a word ending in ``.``, ``!`` or ``?`` (or at a silence gap, if configured).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.tokenizers import Tokenizer

SEGMENT_SEPARATORS = (".", "!", "?")
_SPACE_PIECES = (" ", "_", "▁")


@dataclass
class TokenTime:
    piece: str  # the raw vocabulary entry ("▁the")
    text: str  # the entry decoded alone ("the")
    start: int
    end: int


def ctc_spans(token_frames: Sequence[int]) -> list[tuple[int, int]]:
    """Each CTC token spans from the previous token's onset to its own onset."""
    if not token_frames:
        return []
    starts = [max(0, token_frames[0] - 1), *token_frames[:-1]]
    return list(zip(starts, token_frames))


def rnnt_spans(frames: Sequence[int]) -> list[tuple[int, int]]:
    return [(t, t + 1) for t in frames]


def tdt_spans(frames: Sequence[int], durations: Sequence[int]) -> list[tuple[int, int]]:
    return [(t, t + d) for t, d in zip(frames, durations)]


def token_times(tokenizer: Tokenizer, tokens: Sequence[int], spans: Sequence[tuple[int, int]]) -> list[TokenTime]:
    pieces = tokenizer.ids_to_pieces(tokens)
    return [TokenTime(p, tokenizer.pieces_to_text([p]), s, e) for p, (s, e) in zip(pieces, spans)]


def refine_ctc(items: list[TokenTime], punctuation: frozenset[str]) -> None:
    for i, item in enumerate(items):
        if i > 0 and item.text and item.text[0] in punctuation:
            item.end = item.start


def refine_tdt(items: list[TokenTime], punctuation: frozenset[str]) -> None:
    for i, item in enumerate(items):
        if i > 0 and item.text in punctuation:
            item.start = item.end = items[i - 1].end


def _next_word_text(items: Sequence[TokenTime], i: int, separator: str) -> str | None:
    for item in items[i + 1:]:
        if item.text and item.text != separator:
            return item.text
    return None


def _starts_word(kind: str, item: TokenTime, next_text: str | None, punctuation: frozenset[str], sep: str) -> bool:
    separator_start = item.text == sep and next_text not in punctuation
    if kind == "bpe" and sep == " ":
        return item.piece != item.text or separator_start
    return separator_start if sep == " " else item.text == sep


def words(tokenizer: Tokenizer, items: Sequence[TokenTime], separator: str = " ") -> list[dict[str, Any]]:
    """Group token times into words (NeMo's ``get_words_offsets`` semantics)."""
    punct = tokenizer.punctuation
    out: list[dict[str, Any]] = []
    built: list[str] = []
    first = 0

    def close(last: int) -> None:
        out.append({"word": tokenizer.pieces_to_text(built), "start_offset": items[first].start,
                    "end_offset": items[last].end})

    for i, item in enumerate(items):
        is_punct = item.text in punct and item.text != separator
        if _starts_word(tokenizer.kind, item, _next_word_text(items, i, separator), punct, separator) and not is_punct:
            if built:
                close(i - 1)
            built = []
            if item.text != separator:
                built, first = [item.piece], i
        elif is_punct and not built and out:
            word = out[-1]
            word["end_offset"] = item.end
            word["word"] = word["word"].removesuffix(" ") + item.text
        elif is_punct and built:
            if built[-1] in _SPACE_PIECES:
                built.pop()
            built.append(item.piece)
        else:
            if not built:
                first = i
            built.append(item.piece)
    if not out:
        if built:
            first = 0
            close(len(items) - 1)
        return out
    out[0]["start_offset"] = items[0].start
    if built:
        close(len(items) - 1)
    return out


def segments(
    word_list: Sequence[dict[str, Any]],
    separators: Sequence[str] = SEGMENT_SEPARATORS,
    gap_threshold: int | None = None,
) -> list[dict[str, Any]]:
    """Group words into segments (NeMo's ``get_segment_offsets`` semantics)."""
    out: list[dict[str, Any]] = []
    current: list[str] = []
    first = 0

    def close(last: int) -> None:
        out.append({"segment": " ".join(current), "start_offset": word_list[first]["start_offset"],
                    "end_offset": word_list[last]["end_offset"]})

    for i, entry in enumerate(word_list):
        word = entry["word"]
        if gap_threshold and current:
            # NeMo only looks at the gap here; separators are not checked while a segment is open.
            if entry["start_offset"] - word_list[i - 1]["end_offset"] >= gap_threshold:
                close(i - 1)
                current, first = [word], i
                continue
        elif word and (word[-1] in separators or word in separators):
            current.append(word)
            close(i)
            current, first = [], i + 1
            continue
        current.append(word)
    if current:
        close(len(word_list) - 1)
    return out


def add_seconds(entries: list[dict[str, Any]], frame_stride: float, subsampling: int) -> list[dict[str, Any]]:
    for entry in entries:
        # Same operation order as NeMo so the floats are identical.
        entry["start"] = entry["start_offset"] * frame_stride * subsampling
        entry["end"] = entry["end_offset"] * frame_stride * subsampling
    return entries


def build(
    tokenizer: Tokenizer,
    items: list[TokenTime],
    frame_stride: float,
    subsampling: int,
    *,
    char_as_list: bool,
    separators: Sequence[str] = SEGMENT_SEPARATORS,
    gap_threshold: int | None = None,
    timestep: Any = None,
) -> dict[str, Any]:
    """The ``hyp.timestamp`` dict NeMo returns after ``transcribe(timestamps=True)``."""
    word_list = words(tokenizer, items)
    chars = [
        {"char": [it.text] if char_as_list else it.text, "start_offset": it.start, "end_offset": it.end}
        for it in items
    ]
    return {
        "timestep": list(timestep) if timestep is not None else [],
        "char": add_seconds(chars, frame_stride, subsampling),
        "word": add_seconds(word_list, frame_stride, subsampling),
        "segment": add_seconds(segments(word_list, separators, gap_threshold), frame_stride, subsampling),
    }
