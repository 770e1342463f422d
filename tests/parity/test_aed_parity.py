"""Canary (AED) runtime against NeMo 3.0 (fixtures in tests/fixtures/models/aed, tools/make_aed_fixtures.py).

NeMo decoded every case one utterance per call; we decode the same way here and require the same token ids,
the same text (compared after ``strip()``: NeMo's leading space is version-dependent), beam scores within
1e-3, identical prompt ids, tokenizer results and timestamps, and log-probs / encoder states within 1e-4.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from models.aed import timestamps as aed_ts
from models.aed.model import EncDecMultiTaskModel

FIXTURES = Path(__file__).parents[1] / "fixtures"
MODELS = FIXTURES / "models" / "aed"  # apart from the CTC/RNNT fixtures, whose schema differs
AUDIO = FIXTURES / "audio"
STEMS = [p.name.removesuffix(".ref.json") for p in sorted(MODELS.glob("*_aed.ref.json"))]

pytestmark = pytest.mark.skipif(not STEMS, reason="no Canary fixtures (run tools/make_aed_fixtures.py)")


@cache
def reference(stem: str) -> tuple[dict, dict]:
    return json.loads((MODELS / f"{stem}.ref.json").read_text()), dict(np.load(MODELS / f"{stem}.ref.npz"))


@cache
def model(stem: str) -> EncDecMultiTaskModel:
    torch.set_num_threads(1)
    return EncDecMultiTaskModel.restore_from(MODELS / f"{stem}.nemo", map_location="cpu")


def audio_path(name: str) -> Path:
    return MODELS / name if (MODELS / name).is_file() else AUDIO / name


def case_slots(case: dict) -> dict:
    slots = {k: case[k] for k in ("task", "source_lang", "target_lang", "pnc")}
    return slots | (case.get("extra_slots") or {})


def run_case(m: EncDecMultiTaskModel, case: dict):
    delta = case["max_generation_delta"]
    beam = {"beam_size": case["beam_size"], "length_penalty": case["length_penalty"],
            "max_generation_delta": delta}
    greedy = {"max_generation_delta": delta}
    m.change_decoding_strategy({"strategy": case["strategy"], "greedy": greedy, "beam": beam})
    slots = case_slots(case)
    path = audio_path(case["file"])
    if case["input"] == "numpy":
        inputs = [sf.read(str(path), dtype="float32")[0]]
    elif case["input"] == "entry":  # the slots travel in the manifest entry, not as keywords
        inputs, slots = [{"audio_filepath": str(path), **slots}], {}
    else:
        inputs = [str(path)]
    hyps = m.transcribe(inputs, batch_size=1, return_hypotheses=True, timestamps=case.get("timestamps"),
                        **slots)
    return hyps[0]


def case_id(case: dict) -> str:
    return (f"{case['file']}-{case['task']}-{case['source_lang']}{case['target_lang']}-pnc{case['pnc']}-"
            f"{case['strategy']}{case['beam_size']}-lp{case['length_penalty']}-"
            f"d{case['max_generation_delta']}-{case['input']}{'-ts' if case.get('timestamps') else ''}")


@pytest.mark.parametrize("stem", STEMS)
def test_prompt_ids(stem: str) -> None:
    ref, _ = reference(stem)
    m = model(stem)
    for prompt in ref["prompts"]:
        assert m.prompt_ids(prompt["slots"]) == prompt["ids"], prompt["slots"]
    for case in ref["cases"]:
        slots = case_slots(case)
        if case.get("timestamps"):
            slots["timestamp"] = True
        assert m.prompt_ids(slots) == case["prompt_ids"], case_id(case)


@pytest.mark.parametrize("stem", STEMS)
def test_tokenizer(stem: str) -> None:
    ref, _ = reference(stem)
    tok, want = model(stem).tokenizer, ref["tokenizer"]
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id, tok.nospeech_id) == (
        want["vocab_size"], want["bos"], want["eos"], want["pad"], want["nospeech"])
    if "offsets" in want:
        assert tok.offsets == want["offsets"]
    for lang, ids in want["text_to_ids"].items():
        text = {"en": "Hello there, friend.", "de": "Guten Morgen, Anna!", "es": "¿Dónde está la casa?",
                "fr": "Bonjour, mon ami."}[lang]
        assert tok.text_to_ids(text, lang) == ids, lang
    assert tok.ids_to_text(want["ids_to_text"]["ids"]) == want["ids_to_text"]["text"]


@pytest.mark.parametrize("stem", STEMS)
def test_transcripts(stem: str) -> None:
    ref, _ = reference(stem)
    m = model(stem)
    failures = []
    for case in ref["cases"]:
        hyp = run_case(m, case)
        problems = []
        if hyp.tokens != case["tokens"]:
            problems.append(f"tokens {hyp.tokens} != {case['tokens']}")
        if hyp.text.strip() != case["text"].strip():
            problems.append(f"text {hyp.text!r} != {case['text']!r}")
        if "score" in case and abs(hyp.score - case["score"]) > 1e-3:
            problems.append(f"score {hyp.score} != {case['score']}")
        if "timestamp" in case and hyp.timestamp != case["timestamp"]:
            problems.append(f"timestamp {hyp.timestamp} != {case['timestamp']}")
        if problems:
            failures.append(f"{case_id(case)}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("stem", STEMS)
def test_encoder_states_and_teacher_forcing(stem: str) -> None:
    ref, arrays = reference(stem)
    m = model(stem)
    for key, want in arrays.items():
        if not key.startswith("enc_states/"):
            continue
        audio = torch.from_numpy(sf.read(str(audio_path(key.split("/", 1)[1])), dtype="float32")[0])[None]
        states, _ = m.encode_states(audio, torch.tensor([audio.shape[1]]))
        np.testing.assert_allclose(states[0].numpy(), want, atol=1e-4, err_msg=key)
    tf = ref["teacher_forced"]
    audio = torch.from_numpy(sf.read(str(audio_path(tf["file"])), dtype="float32")[0])[None]
    ids = torch.from_numpy(arrays["teacher_forced/input_ids"])[None]
    assert ids[0].tolist() == tf["prompt_ids"] + tf["tokens"]
    log_probs, *_ = m(audio, torch.tensor([audio.shape[1]]), transcript=ids)
    np.testing.assert_allclose(log_probs[0].numpy(), arrays["teacher_forced/log_probs"], atol=1e-4)


@pytest.mark.parametrize("stem", [s for s in STEMS if reference(s)[0]["timestamp_texts"]])
def test_timestamp_parsing(stem: str) -> None:
    for item in reference(stem)[0]["timestamp_texts"]:
        text, stamps = aed_ts.parse(item["input"], 0.01, 8)
        assert text == item["text"]
        assert stamps == {k: item["timestamp"][k] for k in ("word", "segment", "char")}
