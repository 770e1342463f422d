"""Long recordings through the HTTP API: past AVIARY_LONG_AUDIO_S the runtime switches to local attention
(Conformer encoders) or chunked encoding (others); results equal the in-process runtime's, the response says
which strategy ran, and timestamps are absolute — every spoken piece's span overlaps words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from service_helpers import FIXTURE_AUDIO, Server, run_server

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests" / "fixtures" / "models"
PIECES = ["s1_en_us.wav", "s2_en_f3.wav", "s3_en_m7.wav", "s5_en_f2.wav"]
THRESHOLD_S = 60.0
TARGET_S = 12 * 60.0  # "tens of minutes" scaled to what two CPU cores do in seconds with the tiny fixtures

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not (MODELS / "quartznet_char.nemo").exists(), reason="fixture checkpoints missing"),
]


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, list[tuple[float, float]]]:
    """Speech pieces separated by 1 s of silence, repeated to TARGET_S; returns the file and piece spans."""
    silence = np.zeros(16000, dtype=np.float32)
    parts, spans, t = [], [], 0.0
    while t < TARGET_S:
        for name in PIECES:
            audio = sf.read(FIXTURE_AUDIO / name, dtype="float32")[0]
            spans.append((t, t + len(audio) / 16000))
            parts += [audio, silence]
            t += (len(audio) + len(silence)) / 16000
    path = tmp_path_factory.mktemp("long") / "long.wav"
    sf.write(path, np.concatenate(parts), 16000, subtype="PCM_16")
    return path, spans


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    settings = Settings(model_dir=MODELS, models={}, device="cpu", backend="runtime", catalog=False,
                        long_audio_s=THRESHOLD_S, max_audio_s=3600, max_wait_ms=0)
    with run_server(settings, None) as srv:
        yield srv


@pytest.mark.parametrize(("model", "strategy"), [("fastconformer_ctc_bpe", "local_attention"),
                                                 ("quartznet_char", "chunked")])
def test_long_recording_over_http(server, recording, model, strategy):
    path, spans = recording
    with open(path, "rb") as f:
        resp = server.client.post("/transcribe", files={"file": ("long.wav", f, "audio/wav")},
                                  data={"model": model, "timestamps": "true"}, timeout=300)
    assert resp.status_code == 200, resp.text
    result = resp.json()["results"][0]
    assert result["strategy"] == strategy
    assert result["duration"] == pytest.approx(spans[-1][1] + 1.0, abs=0.01)

    from models import ASRModel

    model_obj = ASRModel.restore_from(MODELS / f"{model}.nemo", map_location="cpu")
    local = model_obj.transcribe([str(path)], timestamps=True, long_audio={"threshold_s": THRESHOLD_S})[0]
    assert local.strategy == strategy and result["text"] == local.text

    words = result["timestamps"]["word"]
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and words[-1]["end"] <= result["duration"] + 0.1
    for lo, hi in spans:  # absolute times: every piece, early or late in the file, overlaps some word
        assert any(w["start"] <= hi and w["end"] >= lo for w in words), (lo, hi)


def test_short_input_keeps_full_attention(server):
    with open(FIXTURE_AUDIO / "s1_en_us.wav", "rb") as f:
        resp = server.client.post("/transcribe", files={"file": ("s1.wav", f, "audio/wav")},
                                  data={"model": "fastconformer_ctc_bpe"})
    assert resp.json()["results"][0]["strategy"] == "full"


def test_streamed_manifest_reports_encoding_progress(server, recording):
    path, _ = recording
    manifest = json.dumps({"audio_filepath": "long.wav"}) + "\n"
    with open(path, "rb") as f, server.client.stream(
        "POST", "/transcribe/manifest", headers={"accept": "application/x-ndjson"}, data={"model": "quartznet_char"},
        files={"manifest": ("m.jsonl", manifest, "application/x-ndjson"), "files": ("long.wav", f, "audio/wav")},
        timeout=300,
    ) as resp:
        assert resp.status_code == 200
        lines = [json.loads(line) for line in resp.iter_lines()]
    progress = [line["progress"] for line in lines if "progress" in line]
    fractions = [p["fraction"] for p in progress]
    assert len(progress) >= 5 and fractions == sorted(set(fractions)) and fractions[-1] == 1.0
    assert all(p["index"] == 0 and p["audio_filepath"] == "long.wav" and p["strategy"] == "chunked" for p in progress)
    result = next(line for line in lines if "index" in line)
    assert result["strategy"] == "chunked" and result["text"] and lines.index(result) > len(progress) - 1
    assert lines[-1]["summary"]["entries"] == 1
