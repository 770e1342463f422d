"""The HTTP API over a real uvicorn server: uploads in many formats, numpy payloads, options, info routes."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from service_helpers import FIXTURE_AUDIO, Server, duration_of, encode, npy, tone, wav

from service.api.schemas import ModelList, TranscriptionResponse
from service.pool.echo import echo_text

pytestmark = pytest.mark.integration


def post_files(server: Server, *files: tuple[str, bytes, str], **fields: str) -> dict:
    response = server.client.post("/transcribe", files=[("files", f) for f in files], data=fields)
    assert response.status_code == 200, response.text
    return response.json()


def fixture_manifest() -> dict[str, dict]:
    path = FIXTURE_AUDIO / "manifest.json"
    return {f["file"]: f for f in json.loads(path.read_text())["files"]} if path.exists() else {}


GENERATED = {
    "tone_16k.wav": (encode(tone(1.25), 16000), 1.25),
    "tone_44k_stereo.wav": (encode(tone(1.5, 44100, channels=2), 44100), 1.5),
    "tone_22k.flac": (encode(tone(0.75, 22050), 22050, "FLAC"), 0.75),
    "tone_48k.ogg": (encode(tone(1.0, 48000), 48000, "OGG", "VORBIS"), 1.0),
    "tone_8k_int16.wav": (encode(tone(2.0, 8000), 8000, subtype="PCM_16"), 2.0),
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_formats_rates_and_channels(server: Server, name: str) -> None:
    data, seconds = GENERATED[name]
    body = post_files(server, (name, data, "application/octet-stream"))
    result = body["results"][0]
    assert body["model"] == "echo" and result["filename"] == name and result["index"] == 0
    assert result["duration"] == pytest.approx(seconds, abs=0.01)
    assert duration_of(result["text"]) == pytest.approx(seconds, abs=0.01)
    assert set(result) == {"index", "filename", "duration", "text"}  # nothing unasked for


@pytest.mark.parametrize(
    "name", ["fmt_44k_stereo.wav", "fmt_22k.flac", "fmt_16k.ogg", "fmt_16k.mp3", "fmt_16k.m4a", "s1_en_us.wav"]
)
def test_fixture_audio_files(server: Server, name: str) -> None:
    entry = fixture_manifest().get(name)
    if entry is None or not (FIXTURE_AUDIO / name).exists():
        pytest.skip(f"fixture audio {name} not generated yet")
    body = post_files(server, (name, (FIXTURE_AUDIO / name).read_bytes(), "audio/*"))
    # Lossy codecs add priming/padding frames, hence the tolerance.
    assert body["results"][0]["duration"] == pytest.approx(entry["duration"], abs=0.1)


def test_many_files_keep_their_order(server: Server) -> None:
    lengths = [0.5, 2.0, 1.0, 0.25, 1.5]
    files = [(f"f{i}.wav", wav(s), "audio/wav") for i, s in enumerate(lengths)]
    body = post_files(server, *files)
    assert [r["index"] for r in body["results"]] == list(range(5))
    assert [r["filename"] for r in body["results"]] == [f"f{i}.wav" for i in range(5)]
    assert [r["text"] for r in body["results"]] == [echo_text(s) for s in lengths]


def test_single_file_field_is_accepted(server: Server) -> None:
    response = server.client.post("/transcribe", files={"file": ("one.wav", wav(0.5), "audio/wav")})
    assert response.status_code == 200 and response.json()["results"][0]["text"] == echo_text(0.5)


def test_model_sample_rate_is_respected(server: Server) -> None:
    body = post_files(server, ("x.wav", wav(1.0, 16000), "audio/wav"), model="echo8k")
    assert body["model"] == "echo8k" and body["results"][0]["text"] == echo_text(1.0)
    assert server.backend("echo8k").sample_rate == 8000


@pytest.mark.parametrize("dtype", ["float32", "float64", "int16"])
def test_npy_parts(server: Server, dtype: str) -> None:
    scale = 3000 if dtype == "int16" else 0.1
    mono = (np.sin(np.arange(24000) / 7) * scale).astype(dtype)
    stereo = np.stack([mono, mono])  # [C, N]
    body = post_files(
        server, ("mono.npy", npy(mono), "application/octet-stream"), ("stereo.npy", npy(stereo), "application/x-npy"),
        sample_rate="48000",
    )
    assert [r["text"] for r in body["results"]] == [echo_text(0.5), echo_text(0.5)]


def test_json_samples_and_npy_b64(server: Server) -> None:
    payload = {
        "audio": [
            {"samples": tone(0.5).tolist(), "sample_rate": 16000},
            {"npy_b64": base64.b64encode(npy(tone(1.0, 8000))).decode(), "sample_rate": 8000, "name": "n.npy"},
            {"samples": [0.0] * 22050, "sample_rate": 44100},
        ],
        "timestamps": True,
    }
    response = server.client.post("/transcribe", json=payload)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["text"] for r in results] == [echo_text(0.5), echo_text(1.0), echo_text(0.5)]
    assert [r["filename"] for r in results] == [None, "n.npy", None]
    assert results[1]["timestamps"]["word"] == [{"word": "echo", "start": 0.0, "end": 1.0}]


def test_options_timestamps_hypotheses_and_decoder(server: Server) -> None:
    body = post_files(
        server, ("a.wav", wav(1.0), "audio/wav"),
        timestamps="true", return_hypotheses="1", decoder="ctc", model="echo",
    )
    TranscriptionResponse.model_validate(body)  # the documented schema describes what is sent
    result = body["results"][0]
    assert result["text"] == echo_text(1.0, "ctc")
    assert result["hypothesis"]["tokens"] == [1000] and result["hypothesis"]["score"] == -1.0
    assert np.asarray(result["hypothesis"]["alignments"]).shape == (2, 3)
    assert result["timestamps"]["segment"][0] == {"segment": result["text"], "start": 0.0, "end": 1.0}
    default = post_files(server, ("a.wav", wav(1.0), "audio/wav"), decoder="default", model="rnnt")
    assert default["results"][0]["text"] == echo_text(1.0)


def test_timing_headers(server: Server) -> None:
    response = server.client.post("/transcribe", files={"files": ("a.wav", wav(0.5), "audio/wav")})
    assert float(response.headers["x-queue-time"]) >= 0
    assert float(response.headers["x-inference-time"]) >= 0


def test_models_lists_every_model(server: Server) -> None:
    post_files(server, ("a.wav", wav(0.2), "audio/wav"))  # make sure the default is loaded
    body = server.client.get("/models").json()
    ModelList.model_validate(body)
    cards = {card["name"]: card for card in body["models"]}
    assert body["default"] == "echo" and set(cards) == {"echo", "rnnt", "echo8k", "broken"}
    echo = cards["echo"]
    assert echo["loaded"] and echo["default"] and echo["device"] == "cpu" and echo["source"] == "directory"
    assert echo["decoders"] == ["rnnt", "ctc"] and echo["sample_rate"] == 16000
    assert echo["architecture"] == "service.pool.echo.EchoBackend" and echo["location"].endswith("echo.nemo")
    assert cards["broken"]["loaded"] is False and cards["broken"]["default"] is False


def test_health_ready_docs(server: Server) -> None:
    assert server.client.get("/health").json() == {"status": "ok"}
    ready = server.client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert server.client.get("/docs").status_code == 200
    spec = server.client.get("/openapi.json").json()
    content = spec["paths"]["/transcribe"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(content)


def test_metrics(server: Server) -> None:
    post_files(server, ("a.wav", wav(0.5), "audio/wav"))
    response = server.client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in ("aviary_batch_size_bucket", "aviary_batch_padded_audio_seconds_bucket",
                 "aviary_queue_wait_seconds_bucket", "aviary_batch_rtfx_bucket", "aviary_model_load_seconds_count"):
        assert f'{name}{{' in text, name
    assert 'aviary_items_total{model="echo",outcome="ok"}' in text
