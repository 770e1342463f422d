"""Canary (multitask AED) fixtures served by the real runtime: per-item tasks and languages through
``POST /transcribe`` and ``POST /transcribe/manifest`` give exactly what the runtime gives for each item
decoded alone, even when they share a batch; options the model lacks are 422 before anything runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_helpers import Server, run_server

from service.settings import Settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
AED = FIXTURES / "models" / "aed"
CTC = FIXTURES / "models" / "fastconformer_ctc_bpe.nemo"
AUDIO = {"one": "audio/exact_1s.wav", "short": "models/aed/aed_short_0p7s.wav"}
NEEDED = [AED / "canary_aed.nemo", AED / "canary2_aed.nemo", CTC, *(FIXTURES / p for p in AUDIO.values())]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not all(p.exists() for p in NEEDED), reason="AED fixtures not available"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    models = {"canary": str(AED / "canary_aed.nemo"), "canary2": str(AED / "canary2_aed.nemo"), "ctc": str(CTC)}
    settings = Settings(models=models, device="cpu", backend="runtime", catalog=False, media_root=FIXTURES,
                        max_wait_ms=50, max_loaded=4)
    with run_server(settings, None) as srv:
        yield srv


class Runtime:
    """The in-process runtime, one item per call (no batching at all)."""

    def __init__(self) -> None:
        self.models: dict[str, Any] = {}

    def text(self, model: str, path: str, entry: dict[str, Any]) -> str:
        from models import ASRModel
        from models.audio import load_audio
        from models.inputs import AudioItem

        if model not in self.models:
            location = CTC if model == "ctc" else AED / f"{model}_aed.nemo"
            self.models[model] = ASRModel.restore_from(location, map_location="cpu")
        m = self.models[model]
        audio = load_audio(FIXTURES / path, m.sample_rate)
        return str(m.transcribe_items([AudioItem(audio, path, dict(entry))])[0].text).lstrip()


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return Runtime()


ENTRIES = [
    {"audio_filepath": AUDIO["one"], "taskname": "asr", "source_lang": "en", "target_lang": "en", "pnc": "yes"},
    {"audio_filepath": AUDIO["one"], "taskname": "ast", "source_lang": "en", "target_lang": "de", "pnc": "no"},
    {"audio_filepath": AUDIO["short"], "taskname": "asr", "source_lang": "fr", "target_lang": "fr"},
    {"audio_filepath": AUDIO["one"], "taskname": "ast", "source_lang": "es", "target_lang": "en"},
]


@pytest.mark.parametrize("model", ["canary", "canary2"])
def test_mixed_tasks_in_one_manifest_equal_the_runtime_per_item(server: Server, runtime: Runtime,
                                                                 model: str) -> None:
    body = "".join(json.dumps(e) + "\n" for e in ENTRIES)
    response = server.client.post("/transcribe/manifest", content=body, params={"model": model},
                                  headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    expected = [runtime.text(model, e["audio_filepath"], e) for e in ENTRIES]
    assert [r["text"] for r in results] == expected
    assert [r["task"] for r in results] == ["asr", "ast", "asr", "ast"]
    assert all(not r["text"].startswith(" ") for r in results)
    assert response.json()["summary"]["errors"] == 0
    assert largest_batch_above_one(server, model)  # different prompts did share a batch


def largest_batch_above_one(server: Server, model: str) -> bool:
    """Whether some batch of ``model`` held more than one item (from the batch-size histogram)."""
    lines = server.client.get("/metrics").text.splitlines()
    singles = next(line for line in lines if line.startswith(f'aviary_batch_size_bucket{{le="1.0",model="{model}"}}'))
    total = next(line for line in lines if line.startswith(f'aviary_batch_size_count{{model="{model}"}}'))
    return float(singles.split()[-1]) < float(total.split()[-1])


def test_transcribe_takes_task_fields_for_uploads(server: Server, runtime: Runtime) -> None:
    audio = (FIXTURES / AUDIO["one"]).read_bytes()
    fields = {"model": "canary2", "task": "translate", "source_lang": "en", "target_lang": "fr", "pnc": "false"}
    response = server.client.post("/transcribe", files={"files": ("one.wav", audio, "audio/wav")}, data=fields)
    assert response.status_code == 200, response.text
    entry = {"task": "ast", "source_lang": "en", "target_lang": "fr", "pnc": False}
    assert response.json()["results"][0]["text"] == runtime.text("canary2", AUDIO["one"], entry)


def test_what_the_model_lacks_is_422(server: Server) -> None:
    audio = {"files": ("one.wav", (FIXTURES / AUDIO["one"]).read_bytes(), "audio/wav")}
    cases: list[tuple[dict[str, str], str]] = [
        ({"model": "canary2", "source_lang": "ja"}, "its languages are: en, de, es, fr"),
        ({"model": "canary", "timestamps": "true"}, "cannot give timestamps"),
        ({"model": "canary2", "emotion": "bored"}, "emotion='bored'"),
        ({"model": "ctc", "task": "ast", "target_lang": "de"}, "only transcribes"),
    ]
    for fields, needle in cases:
        response = server.client.post("/transcribe", files=audio, data=fields)
        assert response.status_code == 422, (fields, response.text)
        assert needle in response.json()["error"]["message"]


def test_a_model_that_only_transcribes_takes_a_canary_style_manifest(server: Server, runtime: Runtime) -> None:
    entries = [{**ENTRIES[0], "answer": "whatever"}, {"audio_filepath": AUDIO["short"]}]
    response = server.client.post("/transcribe/manifest", content=json.dumps(entries),
                                  params={"model": "ctc"}, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert [r["text"] for r in response.json()["results"]] == [
        runtime.text("ctc", e["audio_filepath"], {}) for e in entries
    ]
    assert response.json()["summary"]["wer"] is not None
