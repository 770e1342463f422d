"""The pure parts of manifests: parsing, locating audio under the media root, prompt checks, WER and BLEU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from service.errors import InvalidRequest, PathNotAllowed, PayloadTooLarge, UnsupportedOption
from service.manifest import Upload, build_items, parse_manifest
from service.manifest.entries import resolve_media
from service.manifest.scoring import bleu_tokens, corpus_bleu, edit_distance, normalise_words, wer
from service.pool.prompt import check_prompt, prompt_fields

CANARY2 = {"prompt_format": "canary2", "languages": ["en", "de", "fr"], "tasks": ["asr", "ast"]}
CANARY = {**CANARY2, "prompt_format": "canary"}
CTC = {"prompt_format": None, "languages": None, "tasks": ["asr"]}

# -- WER and BLEU --------------------------------------------------------------------------------------------


def test_wer_normalises_case_and_punctuation() -> None:
    assert normalise_words("Don't, STOP!  now.") == ["dont", "stop", "now"]
    assert wer([("Hello, World!", "hello world")]) == 0.0
    assert wer([("the cat sat", "the cat sat on")]) == pytest.approx(1 / 3)
    assert edit_distance(["a", "b", "c"], ["a", "x", "c", "d"]) == 2
    assert edit_distance([], ["x", "y"]) == 2 and edit_distance(["x"], []) == 1


def test_wer_pools_the_corpus() -> None:
    # 1 deletion in 2 words + 0 in 4: 1/6, not the mean of the per-sentence rates (1/4)
    assert wer([("a b", "a"), ("c d e f", "c d e f")]) == pytest.approx(1 / 6)
    assert wer([]) is None and wer([("", "anything")]) is None


def test_bleu_by_hand() -> None:
    ref = "the cat sat on the mat"
    assert corpus_bleu([(ref, ref)]) == pytest.approx(100.0)
    # precisions 6/7, 4/6, 3/5, 2/4; longer than the reference: no brevity penalty
    expected = 100 * (6 / 7 * 4 / 6 * 3 / 5 * 2 / 4) ** 0.25
    assert corpus_bleu([(ref, "the cat sat on the red mat")]) == pytest.approx(expected)
    # every n-gram matches but the hypothesis is short: the brevity penalty exp(1 - 6/5)
    assert corpus_bleu([(ref, "the cat sat on the")]) == pytest.approx(100 * math.exp(1 - 6 / 5))
    assert corpus_bleu([(ref, "the cat is on the mat")]) == 0.0  # no 4-gram matches, no smoothing
    assert corpus_bleu([]) is None and corpus_bleu([(ref, "")]) == 0.0


def test_bleu_pools_counts_and_tokenises_punctuation() -> None:
    assert bleu_tokens("Hello, world!") == ["Hello", ",", "world", "!"]
    pairs = [("a b c d", "a b c d"), ("e f g h", "e f g x")]
    # pooled precisions: 1-grams 7/8, 2-grams 5/6, 3-grams 3/4, 4-grams 1/2
    assert corpus_bleu(pairs) == pytest.approx(100 * (7 / 8 * 5 / 6 * 3 / 4 * 1 / 2) ** 0.25)
    assert corpus_bleu([("Hello , world", "hello , world")]) < 100  # case-sensitive


# -- prompts -----------------------------------------------------------------------------------------------


def test_prompt_fields_resolve_aliases_and_drop_the_rest() -> None:
    entry = {"audio_filepath": "a.wav", "taskname": "ast", "source_lang": "en", "pnc": None, "context": "hi",
             "duration": 1.0, "answer": "x"}
    assert prompt_fields(entry) == {"task": "ast", "source_lang": "en", "decodercontext": "hi"}
    assert prompt_fields({"task": "asr", "taskname": "ast"}) == {"task": "asr"}  # the canonical name wins


def test_a_model_that_only_transcribes() -> None:
    assert check_prompt("ctc", CTC, {"task": "transcribe", "source_lang": "en", "target_lang": "en"}) == {}
    assert check_prompt("ctc", CTC, {"pnc": "yes"}) == {}
    for prompt in ({"task": "ast"}, {"source_lang": "en", "target_lang": "de"}):
        with pytest.raises(UnsupportedOption, match="only transcribes"):
            check_prompt("ctc", CTC, prompt)


def test_multitask_prompts_are_normalised_and_checked() -> None:
    assert check_prompt("c", CANARY2, {"task": "Translate", "source_lang": "en", "target_lang": "de"}) == {
        "task": "ast", "source_lang": "en", "target_lang": "de"}
    assert check_prompt("c", CANARY2, {"pnc": "no"}) == {"pnc": "no"}
    with pytest.raises(UnsupportedOption, match="target_lang=ja; its languages are: en, de, fr"):
        check_prompt("c", CANARY2, {"target_lang": "ja"})
    with pytest.raises(UnsupportedOption, match="does not support task=ast; it supports: asr"):
        check_prompt("c", {**CANARY2, "tasks": ["asr"]}, {"task": "ast", "target_lang": "de"})
    with pytest.raises(UnsupportedOption, match="entry 3: task='diarize' is not a task"):
        check_prompt("c", CANARY2, {"task": "diarize"}, where="entry 3: ")
    with pytest.raises(UnsupportedOption, match="needs target_lang"):
        check_prompt("c", CANARY2, {"task": "ast"})
    assert check_prompt("c", CANARY2, {}, timestamps=True) == {}
    with pytest.raises(UnsupportedOption, match="cannot give timestamps"):
        check_prompt("c", CANARY, {}, timestamps=True)


# -- manifests -----------------------------------------------------------------------------------------------


def test_parse_manifest_forms_and_limits() -> None:
    lines = '{"audio_filepath": "a.wav"}\n\n  {"audio_filepath": "b.wav", "duration": 1.5}\n'
    assert [e["audio_filepath"] for e in parse_manifest(lines, 10)] == ["a.wav", "b.wav"]
    assert parse_manifest('  [{"audio_filepath": "a.wav"}]', 10) == [{"audio_filepath": "a.wav"}]
    with pytest.raises(PayloadTooLarge, match="3 entries; at most 2"):
        parse_manifest(lines + '{"audio_filepath": "c.wav"}', 2)
    for bad in ('{"audio_filepath": 3}', '{"audio_filepath": "a", "duration": "long"}',
                '{"audio_filepath": "a", "offset": true}', '{"audio_filepath": "a", "duration": NaN}', "[1]"):
        with pytest.raises(InvalidRequest, match="manifest entry 0"):
            parse_manifest(bad, 10)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "root" / "a.wav").write_bytes(b"a")
    (tmp_path / "outside.wav").write_bytes(b"o")
    (tmp_path / "root" / "in.wav").symlink_to(tmp_path / "root" / "a.wav")
    (tmp_path / "root" / "out.wav").symlink_to(tmp_path / "outside.wav")
    return tmp_path / "root"


def test_resolve_media_stays_inside_the_root(root: Path) -> None:
    assert resolve_media("a.wav", root, "e") == root / "a.wav"
    assert resolve_media(str(root / "a.wav"), root, "e") == root / "a.wav"
    assert resolve_media("sub/../in.wav", root, "e") == root / "a.wav"
    assert resolve_media("sub/missing.wav", root, "e") == root / "sub" / "missing.wav"  # missing: the entry's problem
    for escape in ("../outside.wav", "sub/../../outside.wav", "out.wav", str(root.parent / "outside.wav"), "/"):
        with pytest.raises(PathNotAllowed, match="outside the media root"):
            resolve_media(escape, root, "e")
    with pytest.raises(PathNotAllowed, match="AVIARY_MEDIA_ROOT"):
        resolve_media("a.wav", None, "e")


def test_build_items_prefers_uploads_and_merges_prompts(root: Path) -> None:
    entries = [{"audio_filepath": "x.wav", "taskname": "ast"}, {"audio_filepath": "/clips/y.wav", "offset": 0.5},
               {"audio_filepath": "a.wav", "duration": 2}, {"audio_filepath": "dup.wav"}]
    uploads = [Upload("x.wav", b"x"), Upload("y.wav", b"y"), Upload("d1/dup.wav", b"1"), Upload("d2/dup.wav", b"2")]
    with pytest.raises(PathNotAllowed):  # dup.wav matches two uploads by basename: it is not taken as either
        build_items(entries, uploads, None, {})
    items = build_items(entries, uploads, root, {"task": "asr", "source_lang": "en"})
    assert [item.audio.data for item in items] == [b"x", b"y", None, None]
    assert items[1].audio.offset == 0.5 and items[2].audio.path == root / "a.wav" and items[2].audio.duration == 2
    assert items[0].prompt == {"task": "ast", "source_lang": "en"}  # the entry wins over the request
    assert items[3].audio.path == root / "dup.wav"
