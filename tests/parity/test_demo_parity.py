"""The bundled demo model ``aviary-demo-en`` against NeMo 3.0 on held-out speech: the shipped .nemo is the
one the references were made with (``tools/demo_model/export_fixtures.py``), NeMo loads it (it made them),
and aviary's runtime reproduces NeMo's texts, per-frame argmax and log-probabilities."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models import ASRModel
from models.bundled import DEMO_MODEL, bundled_path

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo"
REF = json.loads((DEMO / "nemo_ref.json").read_text())


@pytest.fixture(scope="module")
def model() -> ASRModel:
    return ASRModel.from_pretrained(DEMO_MODEL, map_location="cpu")


def test_the_references_belong_to_the_shipped_checkpoint() -> None:
    path = bundled_path(DEMO_MODEL)
    assert path is not None and path.stat().st_size <= 25 * 10**6
    assert hashlib.sha256(path.read_bytes()).hexdigest() == REF["model_sha"]


def test_texts_frames_and_logprobs_match_nemo(model: ASRModel) -> None:
    arrays = np.load(DEMO / "nemo_ref.npz")
    files = REF["files"]
    audio = [sf.read(DEMO / f["audio_filepath"], dtype="float32")[0] for f in files]
    hyps = model.transcribe(audio, batch_size=1, return_hypotheses=True, verbose=False)
    for f, hyp in zip(files, hyps):
        logprobs = hyp.y_sequence.numpy()
        assert hyp.text == f["text"], f["audio_filepath"]
        assert logprobs.argmax(-1).tolist() == f["frame_argmax"], f["audio_filepath"]
        key = f"logprobs_{Path(f['audio_filepath']).stem}"
        if key in arrays:
            np.testing.assert_allclose(logprobs, arrays[key], atol=1e-4, rtol=0)
