"""Every client error over real HTTP: status, OpenAI-shaped body, an actionable message — and nothing lost."""

from __future__ import annotations

import base64
import socket

import httpx
import numpy as np
import pytest
from service_helpers import Server, npy, tone, wav

from service.pool.echo import echo_text

pytestmark = pytest.mark.integration


def error_of(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


def upload(server: Server, *files: tuple[str, bytes, str], **fields: str) -> httpx.Response:
    return server.client.post("/transcribe", files=[("files", f) for f in files], data=fields)


def test_undecodable_audio_names_the_file(server: Server) -> None:
    err = error_of(upload(server, ("ok.wav", wav(0.5), "audio/wav"), ("notes.mp3", b"definitely not audio", "audio/mpeg")),
                   400, "invalid_audio")
    assert "notes.mp3" in err["message"] and err["param"] == "notes.mp3"


def test_empty_file_and_empty_audio(server: Server) -> None:
    assert "empty" in error_of(upload(server, ("e.wav", b"", "audio/wav")), 400, "invalid_audio")["message"]
    silent = upload(server, ("z.wav", wav(0.0), "audio/wav"))
    assert "z.wav: the audio is empty" in error_of(silent, 400, "invalid_audio")["message"]
    nan = base64.b64encode(npy(np.array([0.1, np.nan], np.float32))).decode()
    err = error_of(server.client.post("/transcribe", json={"audio": [{"npy_b64": nan}]}), 400, "invalid_audio")
    assert "audio[0]: the samples contain NaN" in err["message"]


def test_no_files(server: Server) -> None:
    err = error_of(server.client.post("/transcribe", files={"other": ("x.wav", wav(0.1))}), 400, "invalid_request")
    assert "named 'files'" in err["message"]


def test_text_field_named_files(server: Server) -> None:
    response = server.client.post("/transcribe", data={"files": "hello"}, files={"x": ("a", b"b")})
    assert "must be a file" in error_of(response, 400, "invalid_request")["message"]


def test_unsupported_media_types(server: Server) -> None:
    err = error_of(server.client.post("/transcribe", content=b"RIFF....", headers={"content-type": "audio/wav"}),
                   415, "unsupported_media_type")
    assert "multipart/form-data" in err["message"]
    err = error_of(upload(server, ("notes.txt", b"hello", "text/plain")), 415, "unsupported_media_type")
    assert "notes.txt" in err["message"]


def test_upload_too_large(server: Server) -> None:
    big = b"\0" * (5 * 1024 * 1024)  # the test server's limit is 4 MiB
    err = error_of(upload(server, ("big.wav", big, "audio/wav")), 413, "payload_too_large")
    assert "AVIARY_MAX_UPLOAD_MB" in err["message"]

    def chunks(head: bytes):  # no Content-Length: the limit is enforced while streaming
        yield head
        for _ in range(5):
            yield b"\0" * (1024 * 1024)

    part = b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="big.wav"\r\n\r\n'
    streamed = server.client.post(
        "/transcribe", content=chunks(part), headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    error_of(streamed, 413, "payload_too_large")
    streamed = server.client.post(
        "/transcribe", content=chunks(b'{"audio": "'), headers={"content-type": "application/json"}
    )
    error_of(streamed, 413, "payload_too_large")
    assert server.client.get("/health").status_code == 200


def test_audio_too_long(server: Server) -> None:
    err = error_of(upload(server, ("long.flac", wav(31.0, 8000), "audio/flac")), 413, "audio_too_long")
    assert "31.0 s" in err["message"] and "AVIARY_MAX_AUDIO_S" in err["message"]


def test_too_many_files(server: Server) -> None:
    files = [(f"{i}.wav", wav(0.1), "audio/wav") for i in range(9)]  # the limit is 8
    error_of(upload(server, *files), 413, "payload_too_large")
    payload = {"audio": [{"samples": [0.0] * 100}] * 9}
    error_of(server.client.post("/transcribe", json=payload), 413, "payload_too_large")


def test_unknown_model_lists_the_available_ones(server: Server) -> None:
    err = error_of(upload(server, ("a.wav", wav(0.5), "audio/wav"), model="whisper"), 404, "model_not_found")
    assert "available models: broken, echo, echo8k, rnnt" in err["message"] and err["param"] == "model"


def test_option_the_model_lacks(server: Server) -> None:
    err = error_of(upload(server, ("a.wav", wav(0.5), "audio/wav"), model="rnnt", decoder="ctc"), 422,
                   "unsupported_option")
    assert err["param"] == "decoder" and "hybrid" in err["message"]


def test_invalid_fields_are_422_in_the_same_shape(server: Server) -> None:
    err = error_of(upload(server, ("a.wav", wav(0.5), "audio/wav"), decoder="beam"), 422, "validation_error")
    assert err["param"] == "decoder"
    err = error_of(upload(server, ("a.wav", wav(0.5), "audio/wav"), timestamps="perhaps"), 422, "validation_error")
    assert err["param"] == "timestamps"
    err = error_of(upload(server, ("a.wav", wav(0.5), "audio/wav"), timestamp="true"), 422, "validation_error")
    assert err["param"] == "timestamp"  # a typo is not silently ignored


def test_malformed_json_and_bad_json_fields(server: Server) -> None:
    post = server.client.post
    err = error_of(post("/transcribe", content=b'{"audio": [', headers={"content-type": "application/json"}),
                   400, "invalid_request")
    assert "not valid JSON" in err["message"]
    err = error_of(post("/transcribe", json={"audio": []}), 422, "validation_error")
    assert err["param"] == "audio"
    err = error_of(post("/transcribe", json={"audio": [{"samples": [0.0], "npy_b64": "AA=="}]}), 422,
                   "validation_error")
    assert "exactly one of npy_b64 and samples" in err["message"]
    err = error_of(post("/transcribe", json={"audio": [{"samples": ["x"]}]}), 422, "validation_error")
    assert err["param"] == "audio.0.samples.0"
    err = error_of(post("/transcribe", json={"audio": [{"npy_b64": "***"}]}), 400, "invalid_request")
    assert "base64" in err["message"]
    bad_npy = base64.b64encode(npy(np.zeros(4, np.complex64))).decode()
    err = error_of(post("/transcribe", json={"audio": [{"npy_b64": bad_npy}]}), 400, "invalid_audio")
    assert "audio[0]" in err["message"] and "float32, float64 or int16" in err["message"]


def test_model_that_fails_to_load_is_503(server: Server) -> None:
    err = error_of(upload(server, ("a.wav", wav(0.5), "audio/wav"), model="broken"), 503, "model_unavailable")
    assert "failed to load" in err["message"] and "corrupt" in err["message"]
    assert upload(server, ("a.wav", wav(0.5), "audio/wav")).status_code == 200  # others unaffected


def test_unknown_route_and_method(server: Server) -> None:
    error_of(server.client.get("/transcribe/v2"), 404, "not_found")
    error_of(server.client.get("/transcribe"), 405, "method_not_allowed")


def test_malformed_multipart(server: Server) -> None:
    response = server.client.post(
        "/transcribe", content=b"--zz\r\nnonsense", headers={"content-type": "multipart/form-data"}
    )
    error_of(response, 400, "invalid_request")


def test_bad_requests_do_not_disturb_good_ones(server: Server) -> None:
    # A raw socket half-sends a request and vanishes; the server keeps answering.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"audio\"")
    samples = {"audio": [{"samples": tone(0.5).tolist()}]}
    response = server.client.post("/transcribe", json=samples)
    assert response.status_code == 200 and response.json()["results"][0]["text"] == echo_text(0.5)


def test_task_fields_on_a_model_that_only_transcribes(server: Server) -> None:
    assert upload(server, ("a.wav", wav(0.5), "audio/wav"), task="asr", source_lang="en").status_code == 200
    err = error_of(upload(server, ("a.wav", wav(0.5), "audio/wav"), task="translate", target_lang="de"), 422,
                   "unsupported_option")
    assert "only transcribes (task asr)" in err["message"] and err["param"] == "task"
    err = error_of(upload(server, ("a.wav", wav(0.5), "audio/wav"), pnc="maybe"), 422, "validation_error")
    assert err["param"] == "pnc"
    err = error_of(server.client.post("/transcribe", json={"audio": [{"samples": [0.0] * 800}], "task": "sing"}),
                   422, "validation_error")
    assert err["param"] == "task"
