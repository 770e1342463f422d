"""Archive safety and config handling of models/checkpoint.py."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

from models.checkpoint import load_config, open_checkpoint
from models.errors import CheckpointError


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _weights() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    return buf.getvalue()


def _make(path: Path, extra=None, mode: str = "w:", config: dict | None = None) -> Path:
    cfg = config or {"target": "x.EncDecCTCModel", "tokenizer": {"model_path": "nemo:abc_tokenizer.model"}}
    with tarfile.open(path, mode) as tar:
        _add(tar, "./model_config.yaml", yaml.safe_dump(cfg).encode())
        _add(tar, "./model_weights.ckpt", _weights())
        _add(tar, "./abc_tokenizer.model", b"spm")
        if extra:
            extra(tar)
    return path


@pytest.mark.parametrize("mode", ["w:", "w:gz"])
def test_opens_plain_and_gzipped_archives(tmp_path, mode):
    with open_checkpoint(_make(tmp_path / "m.nemo", mode=mode)) as ckpt:
        assert ckpt.target == "x.EncDecCTCModel"
        assert torch.equal(ckpt.state_dict["w"], torch.ones(2))
        assert ckpt.resolve_artifact("nemo:abc_tokenizer.model").read_bytes() == b"spm"
        # training-time paths resolve by basename, as NeMo's register_artifact does
        assert ckpt.resolve_artifact("/train/dir/tokenizer.model").name == "abc_tokenizer.model"
        directory = ckpt.directory
    assert not directory.exists(), "the extraction directory is removed on close"


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt"])
def test_refuses_members_that_escape(tmp_path, name):
    path = _make(tmp_path / "m.nemo", extra=lambda tar: _add(tar, name, b"x"))
    with pytest.raises(CheckpointError, match="escapes"):
        open_checkpoint(path)
    assert not (tmp_path / "evil.txt").exists()


def test_refuses_links(tmp_path):
    def link(tar):
        info = tarfile.TarInfo("./link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)

    with pytest.raises(CheckpointError, match="links"):
        open_checkpoint(_make(tmp_path / "m.nemo", extra=link))


def test_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"w": Evil()}, buf)
    path = tmp_path / "m.nemo"
    with tarfile.open(path, "w:") as tar:
        _add(tar, "./model_config.yaml", b"target: x.EncDecCTCModel\n")
        _add(tar, "./model_weights.ckpt", buf.getvalue())
    with pytest.raises(CheckpointError, match="safely"):
        open_checkpoint(path)


def test_truncated_and_missing(tmp_path):
    path = _make(tmp_path / "m.nemo")
    data = path.read_bytes()
    (tmp_path / "t.nemo").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError):
        open_checkpoint(tmp_path / "t.nemo")
    with pytest.raises(CheckpointError, match="no such"):
        open_checkpoint(tmp_path / "missing.nemo")
    (tmp_path / "junk.nemo").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(CheckpointError):
        open_checkpoint(tmp_path / "junk.nemo")


def test_extracted_directory_and_asr_tts_wrapper(tmp_path):
    cfg = {"target": "nemo.collections.asr.models.hybrid_asr_tts_models.ASRWithTTSModel",
           "asr_model": {"target": "a.EncDecCTCModelBPE", "d": 1}, "tts_model": {"target": "t"}}
    (tmp_path / "model_config.yaml").write_text(yaml.safe_dump(cfg))
    torch.save({"asr_model.encoder.w": torch.zeros(1), "tts_model.x": torch.zeros(1)},
               tmp_path / "model_weights.ckpt")
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.target == "a.EncDecCTCModelBPE"
        assert list(ckpt.state_dict) == ["encoder.w"]
    assert tmp_path.exists(), "a user's directory is never deleted"


def test_config_interpolation_and_legacy_cls(tmp_path):
    path = tmp_path / "model_config.yaml"
    path.write_text(
        "sample_rate: 16000\n"
        "preprocessor:\n  cls: a.B\n  params:\n    sample_rate: ${sample_rate}\n    features: 64\n"
    )
    cfg = load_config(path)
    assert cfg["preprocessor"] == {"_target_": "a.B", "sample_rate": 16000, "features": 64}
