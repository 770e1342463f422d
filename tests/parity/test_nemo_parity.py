"""The runtime against NeMo's own outputs on NeMo-made checkpoints (tests/fixtures/models, tools/make_fixtures.py).

Criteria (issue 2): identical text and token ids, CTC log-probs within 1e-4 absolute, scores within 1e-3,
timestamps equal, and batch invariance.
"""

from __future__ import annotations

import json
import os
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from models import ASRModel

FIXTURES = Path(__file__).parents[1] / "fixtures"
MODELS = Path(os.environ.get("AVIARY_PARITY_MODELS", FIXTURES / "models"))
AUDIO = FIXTURES / "audio"
REFS = sorted(MODELS.glob("*.ref.json"))
NAMES = [p.name.removesuffix(".ref.json") for p in REFS]

pytestmark = pytest.mark.skipif(not REFS, reason="no NeMo fixtures generated")


@cache
def reference(name: str) -> tuple[dict, dict]:
    ref = json.loads((MODELS / f"{name}.ref.json").read_text())
    arrays = dict(np.load(MODELS / f"{name}.ref.npz"))
    return ref, arrays


@lru_cache(maxsize=2)
def model(name: str) -> ASRModel:
    torch.manual_seed(0)
    return ASRModel.restore_from(MODELS / f"{name}.nemo", map_location="cpu")


def inputs(ref: dict) -> list:
    paths = [str(AUDIO / f) for f in ref["audio"]]
    if ref["input_mode"] == "numpy":
        return [sf.read(p, dtype="float32")[0] for p in paths]
    return paths


def _compare_timestamps(got: dict, want: dict) -> None:
    for kind in ("char", "word", "segment"):
        g, w = got.get(kind, []), want.get(kind, [])
        assert len(g) == len(w), kind
        for a, b in zip(g, w):
            key = {"char": "char", "word": "word", "segment": "segment"}[kind]
            assert a[key] == b[key]
            assert (a["start_offset"], a["end_offset"]) == (b["start_offset"], b["end_offset"]), (kind, a, b)
            assert a["start"] == pytest.approx(b["start"], abs=1e-9)
            assert a["end"] == pytest.approx(b["end"], abs=1e-9)


def check_branch(name: str, branch: list[dict], hyps, ts_hyps, arrays: dict, key: str) -> None:
    for want, hyp, ts_hyp in zip(branch, hyps, ts_hyps):
        where = f"{name}/{key}/{want['file']}"
        assert hyp.text == want["text"], where
        assert hyp.tokens == want["tokens"], where
        assert hyp.score == pytest.approx(want["score"], abs=1e-3), where
        if "frames" in want:
            assert hyp.timestamp.tolist() == want["frames"], where
        if "durations" in want:
            assert hyp.token_duration.tolist() == want["durations"], where
        lp_key = f"logprobs/{key}/{want['file']}"
        if lp_key in arrays:
            np.testing.assert_allclose(hyp.alignments.numpy(), arrays[lp_key], atol=1e-4, err_msg=where)
        _compare_timestamps(ts_hyp.timestamp, want["timestamps"])


def _run(m: ASRModel, ref: dict, decoder_type=None):
    x = inputs(ref)
    hyps = m.transcribe(x, batch_size=ref["batch_size"], return_hypotheses=True, decoder_type=decoder_type)
    ts_hyps = m.transcribe(x, batch_size=ref["batch_size"], timestamps=True, decoder_type=decoder_type)
    return hyps, ts_hyps


@pytest.mark.parametrize("name", NAMES)
def test_transcripts_match_nemo(name):
    ref, arrays = reference(name)
    m = model(name)
    assert ref["target"].endswith(type(m).__name__)
    for key, branch in ref["results"].items():
        if key == "max_symbols_1":
            continue
        decoder_type = "ctc" if key == "ctc" else None
        hyps, ts_hyps = _run(m, ref, decoder_type)
        check_branch(name, branch, hyps, ts_hyps, arrays, key)


@pytest.mark.parametrize("name", NAMES)
def test_features_and_encoder_match_nemo(name):
    ref, arrays = reference(name)
    m = model(name)
    for file in ref["audio"]:
        if f"features/{file}" not in arrays:
            continue
        audio = torch.from_numpy(sf.read(AUDIO / file, dtype="float32")[0])[None]
        length = torch.tensor([audio.shape[1]])
        with torch.inference_mode():
            feats, flen = m.preprocessor(audio, length)
            enc, elen = m.encoder(feats, flen)
        want_f, want_e = arrays[f"features/{file}"], arrays[f"encoded/{file}"]
        np.testing.assert_allclose(feats[0, :, : int(flen)].numpy(), want_f, atol=1e-4, err_msg=file)
        np.testing.assert_allclose(enc[0, :, : int(elen)].numpy(), want_e, atol=1e-4, err_msg=file)


def test_max_symbols_cap_matches_nemo():
    name = "fastconformer_rnnt_bpe"
    if name not in NAMES:
        pytest.skip("fixture missing")
    ref, arrays = reference(name)
    m = ASRModel.restore_from(MODELS / f"{name}.nemo", map_location="cpu")
    m.change_decoding_strategy({"greedy": {"max_symbols": 1}})
    hyps, ts_hyps = _run(m, ref)
    check_branch(name, ref["results"]["max_symbols_1"], hyps, ts_hyps, arrays, "max_symbols_1")


def test_local_attention_matches_nemo():
    name = "fastconformer_ctc_bpe"
    ref, _ = reference(name)
    local = ref.get("local_attention")
    if not local:
        pytest.skip("no local-attention reference")
    m = ASRModel.restore_from(MODELS / f"{name}.nemo", map_location="cpu")
    m.change_attention_model("rel_pos_local_attn", local["att_context_size"])
    hyps, ts_hyps = _run(m, ref)
    check_branch(name, local["results"]["default"], hyps, ts_hyps, {}, "local")


@pytest.mark.parametrize("name", NAMES)
def test_batch_invariance(name):
    ref, _ = reference(name)
    m = model(name)
    x = inputs(ref)
    batched = m.transcribe(x, batch_size=len(x), return_hypotheses=True)
    for i, item in enumerate(x):
        alone = m.transcribe([item], batch_size=1, return_hypotheses=True)[0]
        assert alone.tokens == batched[i].tokens, ref["audio"][i]
        assert alone.score == pytest.approx(batched[i].score, abs=1e-4)
