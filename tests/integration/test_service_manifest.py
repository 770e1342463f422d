"""``POST /transcribe/manifest`` over real HTTP with EchoBackends: every manifest form, the media root and its
escape attempts, per-entry errors, multitask prompts (an echo model with languages writes each item's prompt
into its transcript), streaming order, the summary, disconnects. The real Canary fixtures are served in
test_service_aed.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import EchoFactory, Server, echo_settings, encode, run_server, tone, wav

from service.pool.echo import echo_text

pytestmark = pytest.mark.integration
NDJSON = {"content-type": "application/x-ndjson"}
LANGS = ("en", "de", "fr")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The media root: a.wav 0.5 s, b.wav 1 s, sub/c.wav 0.75 s, a corrupt file, a 31 s file, and symlinks in
    and out; ``../outside/secret.wav`` lies next to it."""
    base = tmp_path_factory.mktemp("media")
    root, outside = base / "root", base / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "a.wav").write_bytes(wav(0.5))
    (root / "b.wav").write_bytes(wav(1.0))
    (root / "sub" / "c.wav").write_bytes(wav(0.75))
    (root / "bad.wav").write_bytes(b"RIFF but not really a wav file")
    (root / "long.wav").write_bytes(encode(tone(31.0, 8000), 8000))
    (outside / "secret.wav").write_bytes(wav(0.25))
    (root / "inside_link.wav").symlink_to(root / "a.wav")
    (root / "outside_link.wav").symlink_to(outside / "secret.wav")
    (root / "outside_dir").symlink_to(outside, target_is_directory=True)
    return root


def multitask(model_dir: Path) -> dict[str, Any]:
    """Settings overrides adding ``multi``: an echo model that takes prompts in LANGS."""
    return {"models": {"multi": str(model_dir / "echo.nemo")}}


def factory(**defaults: Any) -> EchoFactory:
    return EchoFactory(defaults, per_model={"multi": {"languages": LANGS}})


@pytest.fixture(scope="module")
def mserver(echo_model_dir: Path, media: Path) -> Iterator[Server]:
    with run_server(echo_settings(echo_model_dir, media_root=media, **multitask(echo_model_dir)), factory()) as srv:
        yield srv


def jsonl(*entries: dict[str, Any]) -> str:
    return "".join(json.dumps(e) + "\n" for e in entries)


def post(server: Server, body: str, content_type: str = "application/x-ndjson", status: int = 200,
         **params: Any) -> dict[str, Any]:
    response = server.client.post("/transcribe/manifest", content=body, params=params,
                                  headers={"content-type": content_type})
    assert response.status_code == status, response.text
    return response.json()  # type: ignore[no-any-return]


def error_of(body: dict[str, Any], code: str) -> str:
    assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


# -- the manifest forms -------------------------------------------------------------------------------------


def test_jsonl_with_server_paths_offsets_and_durations(mserver: Server, media: Path) -> None:
    body = post(mserver, jsonl(
        {"audio_filepath": "a.wav", "duration": 0.5, "extra": "kept out of the result"},
        {"audio_filepath": "sub/c.wav", "offset": 0.25, "duration": 0.25},
        {"audio_filepath": str(media / "b.wav")},  # absolute, inside the root
        {"audio_filepath": "sub/../inside_link.wav"},  # .. and a symlink that stay inside
    ))
    assert body["model"] == "echo"
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3]
    assert [r["text"] for r in body["results"]] == [echo_text(s) for s in (0.5, 0.25, 1.0, 0.5)]
    assert body["results"][1] == {"index": 1, "audio_filepath": "sub/c.wav", "duration": 0.25,
                                  "text": echo_text(0.25)}
    summary = body["summary"]
    assert summary["entries"] == 4 and summary["errors"] == 0 and summary["audio_seconds"] == 2.25
    assert summary["wer"] is None and summary["bleu"] is None and summary["wall_seconds"] > 0


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/x-ndjson"])
def test_json_array_and_jsonl_under_each_media_type(mserver: Server, content_type: str) -> None:
    entries = [{"audio_filepath": "a.wav"}, {"audio_filepath": "b.wav"}]
    text = json.dumps(entries) if content_type == "application/json" else jsonl(*entries)
    body = post(mserver, text, content_type)
    assert [r["text"] for r in body["results"]] == [echo_text(0.5), echo_text(1.0)]
    assert post(mserver, json.dumps(entries), "text/plain")["summary"]["entries"] == 2  # an array in any type


def test_multipart_manifest_with_uploads(serve: Callable[..., Server], echo_model_dir: Path) -> None:
    server = serve(factory(), **multitask(echo_model_dir))  # no media root: uploads only
    manifest = jsonl(
        {"audio_filepath": "one.wav", "taskname": "ast", "target_lang": "de"},
        {"audio_filepath": "/data/set/two.wav", "source_lang": "fr", "target_lang": "fr"},  # found by basename
        {"audio_filepath": "one.wav", "offset": 0.5},
    )
    files = [("manifest", ("m.jsonl", manifest.encode(), "application/x-ndjson")),
             ("files", ("one.wav", wav(1.5), "audio/wav")), ("files", ("two.wav", wav(0.5), "audio/wav"))]
    response = server.client.post("/transcribe/manifest", files=files,
                                  data={"model": "multi", "source_lang": "en", "return_hypotheses": "true"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["text"] for r in results] == [
        echo_text(1.5, prompt={"task": "ast", "source_lang": "en", "target_lang": "de"}),
        echo_text(0.5, prompt={"source_lang": "fr", "target_lang": "fr"}),
        echo_text(1.0, prompt={"source_lang": "en"}),
    ]
    assert results[0]["task"] == "ast" and results[0]["target_lang"] == "de" and "hypothesis" in results[0]
    manifest_as_field = {"manifest": jsonl({"audio_filepath": "one.wav"})}
    response = server.client.post("/transcribe/manifest", files=[files[1]], data=manifest_as_field)
    assert response.status_code == 200 and response.json()["results"][0]["text"] == echo_text(1.5)


def test_options_apply_to_every_entry(mserver: Server) -> None:
    body = post(mserver, jsonl({"audio_filepath": "a.wav"}), model="rnnt", timestamps="true")
    assert body["model"] == "rnnt" and body["results"][0]["timestamps"]["word"][0]["word"] == "echo"
    body = post(mserver, jsonl({"audio_filepath": "a.wav"}), decoder="ctc")
    assert body["results"][0]["text"] == echo_text(0.5, "ctc")


# -- server paths: the media root and escapes ---------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "../outside/secret.wav", "sub/../../outside/secret.wav", "outside_link.wav", "outside_dir/secret.wav",
    "/etc/passwd", "ABS_OUTSIDE",
])
def test_paths_that_leave_the_media_root_are_403(mserver: Server, media: Path, path: str) -> None:
    path = str(media.parent / "outside" / "secret.wav") if path == "ABS_OUTSIDE" else path
    ran = len(mserver.backend().batches)
    body = post(mserver, jsonl({"audio_filepath": "a.wav"}, {"audio_filepath": path}), status=403)
    message = error_of(body, "path_not_allowed")
    assert "manifest entry 1" in message and "outside the media root" in message
    assert str(media) not in message  # the server's layout is not revealed
    assert len(mserver.backend().batches) == ran  # refused before anything ran


def test_without_a_media_root_server_paths_are_refused(serve: Callable[..., Server]) -> None:
    server = serve()
    response = server.client.post("/transcribe/manifest", content=jsonl({"audio_filepath": "a.wav"}), headers=NDJSON)
    assert response.status_code == 403
    assert "AVIARY_MEDIA_ROOT" in error_of(response.json(), "path_not_allowed")


# -- per-entry errors and request errors ------------------------------------------------------------------


def test_a_bad_entry_fails_alone(mserver: Server, media: Path) -> None:
    body = post(mserver, jsonl(
        {"audio_filepath": "a.wav"}, {"audio_filepath": "missing.wav"}, {"audio_filepath": "bad.wav"},
        {"audio_filepath": "long.wav"}, {"audio_filepath": "a.wav", "offset": 5.0}, {"audio_filepath": "b.wav"},
    ))
    results = body["results"]
    assert [r.get("text") for r in results] == [echo_text(0.5), None, None, None, None, echo_text(1.0)]
    assert "missing.wav: no such audio file" in error_of(results[1], "invalid_audio")
    assert str(media) not in error_of(results[2], "invalid_audio")
    assert "AVIARY_MAX_AUDIO_S" in error_of(results[3], "audio_too_long")
    assert "empty" in error_of(results[4], "invalid_audio")
    assert body["summary"]["errors"] == 4 and body["summary"]["audio_seconds"] == 1.5


@pytest.mark.parametrize("text,status,needle", [
    ('{"audio_filepath": "a.wav"}\n{"audio_filepath": \n', 400, "line 2 is not valid JSON"),
    ('[{"audio_filepath": "a.wav"}, ', 400, "not a valid JSON array"),
    ('{"duration": 1}\n', 400, "entry 0 needs an 'audio_filepath'"),
    ('["a.wav"]', 400, "entry 0 is not a JSON object"),
    ('{"audio_filepath": "a.wav", "offset": -1}\n', 400, "'offset' must be a non-negative number"),
    ('{"audio_filepath": "a.wav", "duration": 0}\n', 400, "'duration' must be a positive number"),
    ("\n\n", 400, "no entries"),
])
def test_malformed_manifests_are_400(mserver: Server, text: str, status: int, needle: str) -> None:
    assert needle in error_of(post(mserver, text, status=status), "invalid_request")


def test_request_level_errors(serve: Callable[..., Server], mserver: Server, media: Path) -> None:
    response = mserver.client.post("/transcribe/manifest", content=b"a.wav", headers={"content-type": "audio/wav"})
    assert response.status_code == 415
    assert "unknown" in error_of(post(mserver, jsonl({"audio_filepath": "a.wav"}), status=422, unknown="1"),
                                 "validation_error")
    assert "available models" in error_of(post(mserver, jsonl({"audio_filepath": "a.wav"}), status=404,
                                               model="nope"), "model_not_found")
    small = serve(media_root=media, max_manifest_entries=2)
    body = jsonl(*[{"audio_filepath": "a.wav"}] * 3)
    response = small.client.post("/transcribe/manifest", content=body, headers=NDJSON)
    assert response.status_code == 413 and "AVIARY_MAX_MANIFEST_ENTRIES" in response.json()["error"]["message"]


# -- tasks and languages ------------------------------------------------------------------------------------


def test_mixed_tasks_and_languages_share_one_batch(serve: Callable[..., Server], media: Path,
                                                   echo_model_dir: Path) -> None:
    server = serve(factory(), media_root=media, max_wait_ms=300, **multitask(echo_model_dir))
    entries = [
        {"audio_filepath": "a.wav", "taskname": "asr", "source_lang": "en", "target_lang": "en", "pnc": "yes"},
        {"audio_filepath": "a.wav", "task": "translate", "source_lang": "en", "target_lang": "fr"},
        {"audio_filepath": "a.wav", "taskname": "ast", "source_lang": "de", "target_lang": "en", "pnc": False},
        {"audio_filepath": "a.wav"},  # the request's defaults only
    ]
    body = post(server, jsonl(*entries), model="multi", source_lang="fr", pnc="no")
    expected = [
        {"task": "asr", "source_lang": "en", "target_lang": "en", "pnc": "yes"},
        {"task": "ast", "source_lang": "en", "target_lang": "fr", "pnc": False},
        {"task": "ast", "source_lang": "de", "target_lang": "en", "pnc": False},
        {"source_lang": "fr", "pnc": False},
    ]
    assert [r["text"] for r in body["results"]] == [echo_text(0.5, prompt=p) for p in expected]
    assert [r.get("task") for r in body["results"]] == ["asr", "ast", "ast", None]
    batches = server.backend("multi").prompts
    canonical = lambda prompts: sorted(json.dumps(p, sort_keys=True) for p in prompts)
    assert len(batches) == 1 and canonical(batches[0]) == canonical(expected)  # all four in one batch


def test_unsupported_language_or_task_is_422_naming_what_the_model_supports(mserver: Server) -> None:
    message = error_of(post(mserver, jsonl({"audio_filepath": "a.wav"}, {"audio_filepath": "a.wav",
                                                                        "source_lang": "ja"}),
                            status=422, model="multi"), "unsupported_option")
    assert "manifest entry 1" in message and "source_lang=ja" in message and "en, de, fr" in message
    message = error_of(post(mserver, jsonl({"audio_filepath": "a.wav", "taskname": "diarise"}), status=422,
                            model="multi"), "unsupported_option")
    assert "use asr (transcribe) or ast (translate)" in message
    message = error_of(post(mserver, jsonl({"audio_filepath": "a.wav", "pnc": "maybe"}), status=422,
                            model="multi"), "unsupported_option")
    assert "pnc='maybe' is not a boolean" in message
    assert "needs target_lang" in error_of(post(mserver, jsonl({"audio_filepath": "a.wav", "taskname": "ast"}),
                                                status=422, model="multi"), "unsupported_option")


def test_a_model_that_only_transcribes_takes_asr_manifests(mserver: Server) -> None:
    entries = [{"audio_filepath": "a.wav", "taskname": "asr", "source_lang": "en", "target_lang": "en",
                "pnc": "yes", "answer": "Echo, 0.5000!"}, {"audio_filepath": "b.wav", "answer": "echo two"}]
    body = post(mserver, jsonl(*entries))
    assert [r["text"] for r in body["results"]] == [echo_text(0.5), echo_text(1.0)]  # slots ignored
    assert body["summary"]["wer"] == 0.25 and body["summary"]["bleu"] is None  # 1 error in 4 reference words
    for entry in ({"taskname": "ast", "target_lang": "de"}, {"source_lang": "en", "target_lang": "de"}):
        message = error_of(post(mserver, jsonl({"audio_filepath": "a.wav", **entry}), status=422),
                           "unsupported_option")
        assert "only transcribes" in message


def test_summary_scores_asr_with_wer_and_ast_with_bleu(mserver: Server) -> None:
    ast = {"task": "ast", "source_lang": "en", "target_lang": "de"}
    entries = [
        {"audio_filepath": "a.wav", **ast, "answer": echo_text(0.5, prompt=ast)},  # a perfect translation
        {"audio_filepath": "b.wav", "source_lang": "en", "answer": "Echo[source_lang=en], 1.0000 more"},
        {"audio_filepath": "b.wav", "source_lang": "en"},  # no answer: not scored
        {"audio_filepath": "missing.wav", **ast, "answer": "never produced"},  # failed: not scored
    ]
    summary = post(mserver, jsonl(*entries), model="multi")["summary"]
    # lower-cased without punctuation, "echo[source_lang=en] 1.0000" misses one word of three
    assert summary["wer"] == 0.3333 and summary["bleu"] == 100.0 and summary["errors"] == 1


# -- streaming ---------------------------------------------------------------------------------------------


def stream_lines(server: Server, body: str, **params: Any) -> list[tuple[float, dict[str, Any]]]:
    headers = {**NDJSON, "accept": "application/x-ndjson"}
    lines = []
    with server.client.stream("POST", "/transcribe/manifest", content=body, params=params, headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        for line in r.iter_lines():
            lines.append((time.monotonic(), json.loads(line)))
    return lines


def test_results_stream_in_manifest_order_as_batches_finish(serve: Callable[..., Server], media: Path) -> None:
    server = serve(factory(seconds_per_second=0.2), media_root=media, max_batch_size=2, max_wait_ms=1)
    names = ["b.wav", "a.wav", "missing.wav", "sub/c.wav", "a.wav", "b.wav", "a.wav", "sub/c.wav"]
    lines = stream_lines(server, jsonl(*[{"audio_filepath": n} for n in names]))
    results, (last_at, summary) = [body for _, body in lines[:-1]], lines[-1]
    assert [r["index"] for r in results] == list(range(len(names)))
    assert [r["audio_filepath"] for r in results] == names and "error" in results[2]
    assert summary["summary"]["entries"] == 8 and summary["summary"]["errors"] == 1
    assert last_at - lines[0][0] > 0.3  # the first result came while later batches still ran
    assert max(len(b) for b in server.backend().batches) <= 2


def test_long_entries_stream_progress_lines_before_their_result(serve: Callable[..., Server], media: Path) -> None:
    server = serve(factory(seconds_per_second=0.1, long_audio_s=0.8), media_root=media, max_batch_size=1)
    lines = [body for _, body in stream_lines(server, jsonl(
        {"audio_filepath": "a.wav"}, {"audio_filepath": "b.wav"}, {"audio_filepath": "sub/c.wav"}))]
    progress = [line["progress"] for line in lines if "progress" in line]
    # b.wav (1 s) is over the echo model's long-audio threshold: it reports quarters, in 10 % steps
    assert progress == [{"index": 1, "audio_filepath": "b.wav", "strategy": "echo", "fraction": f}
                        for f in (0.2, 0.5, 0.7, 1.0)]
    results = [line for line in lines[:-1] if "progress" not in line]
    assert [r["index"] for r in results] == [0, 1, 2] and "summary" in lines[-1]
    assert lines.index(results[1]) > max(i for i, line in enumerate(lines) if "progress" in line)
    # without streaming, no progress lines in the one JSON document
    body = post(server, jsonl({"audio_filepath": "b.wav"}))
    assert [r["index"] for r in body["results"]] == [0] and "progress" not in json.dumps(body)


def test_a_client_disconnect_cancels_the_remaining_entries(serve: Callable[..., Server], media: Path) -> None:
    server = serve(factory(seconds_per_second=0.5), media_root=media, max_batch_size=1, max_wait_ms=0)
    body = jsonl(*[{"audio_filepath": "a.wav"}] * 30)  # 30 × 0.25 s of compute; the window holds 2

    async def read_one_then_leave() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            headers = {**NDJSON, "accept": "application/x-ndjson"}
            async with http.stream("POST", "/transcribe/manifest", content=body, headers=headers) as response:
                async for line in response.aiter_lines():
                    assert json.loads(line)["index"] == 0
                    break

    asyncio.run(read_one_then_leave())
    time.sleep(0.6)
    ran = sum(len(b) for b in server.backend().batches)
    time.sleep(0.6)
    assert sum(len(b) for b in server.backend().batches) == ran < 6  # nothing more runs
    assert server.engine.pool.status("echo")["leases"] == 0  # the lease ended with the stream
