"""The ``aviary`` command line, in-process: ``models``, ``transcribe`` and settings errors."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from service.cli import build_parser, main, settings_from


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("AVIARY_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AVIARY_DEVICE", "cpu")
    monkeypatch.setenv("AVIARY_DEMO_MODEL", "false")  # listings below are of the test's own models


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    for name in ("beta", "alpha"):
        (tmp_path / f"{name}.nemo").write_bytes(b"")
    return tmp_path


def write_wav(path: Path, seconds: float, rate: int = 16000) -> Path:
    sf.write(path, np.zeros(round(seconds * rate), np.float32), rate)
    return path


def test_options_only_override_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVIARY_PORT", "9000")
    monkeypatch.setenv("AVIARY_HOST", "0.0.0.0")
    settings = settings_from(build_parser().parse_args(["serve", "--port", "9100", "--preload", "a"]))
    assert (settings.port, settings.host, settings.preload) == (9100, "0.0.0.0", ["a"])


def test_models_lists_the_directory(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--model-dir", str(model_dir), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["default"] == "alpha"
    assert [m["name"] for m in listing["models"][:2]] == ["alpha", "beta"]
    assert listing["models"][0]["loaded"] is False and listing["models"][0]["source"] == "directory"
    assert {m["source"] for m in listing["models"][2:]} == {"pretrained"}  # the catalog follows
    assert main(["models", "--model-dir", str(model_dir)]) == 0
    out = capsys.readouterr().out
    assert "configured:\n* alpha" in out and "catalog (+: cached):" in out


def test_transcribe_in_process(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = write_wav(tmp_path / "one.wav", 1.5)
    two = write_wav(tmp_path / "two.wav", 0.5, rate=44100)
    base = ["transcribe", "--model-dir", str(model_dir), "--backend", "echo"]
    assert main([*base, str(one)]) == 0
    assert capsys.readouterr().out == "echo 1.5000\n"
    assert main([*base, str(one), str(two), "--model", "beta", "--timestamps", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["model"] == "beta"
    assert [r["text"] for r in body["results"]] == ["echo 1.5000", "echo 0.5000"]
    assert body["results"][1]["filename"] == "two.wav" and "timestamps" in body["results"][1]
    assert main([*base, str(one), "--timestamps"]) == 0
    assert "echo" in capsys.readouterr().out.splitlines()[1]


def test_transcribe_errors_exit_1(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["transcribe", "--model-dir", str(model_dir), "--backend", "echo"]
    assert main([*base, str(tmp_path / "missing.wav")]) == 1
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"garbage")
    assert main([*base, str(bad)]) == 1
    assert "bad.wav: could not decode" in capsys.readouterr().err
    assert main([*base, str(bad), "--model", "gamma"]) == 1
    assert "available models: alpha, beta" in capsys.readouterr().err


def test_bad_settings_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVIARY_MAX_BATCH_SIZE", "0")
    assert main(["models"]) == 2
    assert "max_batch_size" in capsys.readouterr().err
    monkeypatch.delenv("AVIARY_MAX_BATCH_SIZE")
    assert main(["models", "--models", "x=parakeet-ctc-0.6bb"]) == 2
    assert "did you mean: parakeet-ctc-0.6b" in capsys.readouterr().err


def test_npy_file_is_accepted(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    buf = io.BytesIO()
    np.save(buf, np.zeros(8000, np.float32))
    (tmp_path / "x.npy").write_bytes(buf.getvalue())
    assert main(["transcribe", "--model-dir", str(model_dir), "--backend", "echo", str(tmp_path / "x.npy")]) == 0
    assert capsys.readouterr().out == "echo 0.5000\n"
