"""Detokenisation and NeMo's timestamp grouping (models/tokenizers.py, models/timestamps.py)."""

from __future__ import annotations

import pytest

from models import timestamps as ts
from models.tokenizers import CharTokenizer, SentencePieceTokenizer, extract_punctuation

LABELS = [" ", *"abcdefghijklmnopqrstuvwxyz", "'", ".", ","]


def test_punctuation_comes_from_non_special_entries():
    assert extract_punctuation(["▁,", "<unk>", "[x]", "##.", "a", "?", "b!"]) == {"?", "!"}


def test_space_before_punctuation_is_removed_once():
    tok = CharTokenizer(LABELS)
    ids = tok.text_to_ids("don 't say  ,hi")
    assert tok.decode(ids) == "don't say ,hi"


def _items(tok, text_frames):
    ids = [tok.text_to_ids(ch)[0] for ch, _ in text_frames]
    return ts.token_times(tok, ids, [span for _, span in text_frames])


def test_char_words_and_segments():
    tok = CharTokenizer(LABELS)
    seq = [("h", (0, 1)), ("i", (1, 2)), (".", (2, 3)), (" ", (3, 4)), ("y", (6, 7)), ("o", (7, 8))]
    words = ts.words(tok, _items(tok, seq))
    assert [(w["word"], w["start_offset"], w["end_offset"]) for w in words] == [("hi.", 0, 3), ("yo", 6, 8)]
    segs = ts.segments(words)
    assert [s["segment"] for s in segs] == ["hi.", "yo"]
    assert ts.segments(words, separators=(), gap_threshold=2)[1]["start_offset"] == 6


def test_ctc_spans_follow_nemo():
    assert ts.ctc_spans([3, 7, 8]) == [(2, 3), (3, 7), (7, 8)]
    assert ts.ctc_spans([0]) == [(0, 0)]
    assert ts.tdt_spans([1, 4], [2, 0]) == [(1, 3), (4, 4)]


@pytest.fixture(scope="module")
def spm_tokenizer(tmp_path_factory):
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("spm")
    words = ["the", "cat", "sat", "on", "a", "mat", ".", "hello", "world", ",", "yes", "?", "no", "!", "it's", "fine"]
    lines = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 20
    (d / "text.txt").write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(input=str(d / "text.txt"), model_prefix=str(d / "m"), vocab_size=40,
                                   model_type="bpe", bos_id=-1, eos_id=-1, minloglevel=2)
    return SentencePieceTokenizer(d / "m.model")


def test_bpe_words_glue_punctuation(spm_tokenizer):
    tok = spm_tokenizer
    ids = tok.text_to_ids("hello world, yes?")
    assert tok.decode(ids) == "hello world, yes?"
    items = ts.token_times(tok, ids, ts.rnnt_spans(list(range(len(ids)))))
    words = ts.words(tok, items)
    assert [w["word"] for w in words] == ["hello", "world,", "yes?"]
    assert words[0]["start_offset"] == 0 and words[-1]["end_offset"] == len(ids)
    out = ts.build(tok, items, 0.01, 8, char_as_list=True)
    assert out["segment"][0]["segment"] == "hello world, yes?"
    assert out["word"][1]["start"] == words[1]["start_offset"] * 0.01 * 8

