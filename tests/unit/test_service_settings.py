"""Settings validation and the model registry built from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.errors import ConfigurationError, ModelNotFound
from service.pool import ModelRegistry
from service.settings import Settings, parse_model_entries


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("AVIARY_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    s = Settings()
    assert (s.host, s.port, s.device, s.backend) == ("127.0.0.1", 8000, "auto", "runtime")
    assert s.model_ttl == -1 and s.models == {} and s.preload == []
    assert s.max_upload_bytes == 100 * 1024 * 1024


def test_every_field_is_documented() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not field.description]
    assert missing == []


def test_environment_with_prefix_and_lists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AVIARY_PORT", "9001")
    monkeypatch.setenv("AVIARY_HOST", "0.0.0.0")
    monkeypatch.setenv("AVIARY_MODELS", " a = /x/a.nemo , b=/x/b.nemo,")
    monkeypatch.setenv("AVIARY_PRELOAD", "a, b")
    monkeypatch.setenv("AVIARY_DEVICE", "cuda:1")
    monkeypatch.setenv("AVIARY_MODEL_TTL", "300")
    monkeypatch.setenv("AVIARY_MODEL_DIR", str(tmp_path))
    s = Settings()
    assert (s.port, s.host, s.device, s.model_ttl, s.model_dir) == (9001, "0.0.0.0", "cuda:1", 300, tmp_path)
    assert s.models == {"a": "/x/a.nemo", "b": "/x/b.nemo"} and s.preload == ["a", "b"]


def test_init_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVIARY_PORT", "9001")
    assert Settings(port=9002).port == 9002


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("port", 70000, "less than or equal to 65535"),
        ("device", "gpu", "String should match pattern"),
        ("model_ttl", 0, "-1 \\(never unload\\) or a positive"),
        ("model_ttl", -5, "greater than or equal to -1"),
        ("max_batch_size", 0, "greater than or equal to 1"),
        ("max_batch_audio_s", 0, "greater than 0"),
        ("max_wait_ms", -1, "greater than or equal to 0"),
        ("max_upload_mb", 0, "greater than 0"),
        ("backend", "magic", "'runtime' or 'echo'"),
        ("models", "a=/x,a=/y", "listed twice"),
        ("models", "just-a-path.nemo", "name=location"),
        ("models", "bad name=/x", "may only use"),
    ],
)
def test_invalid_values_name_the_problem(field: str, value: object, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Settings(**{field: value})


def test_preload_cannot_exceed_max_loaded() -> None:
    with pytest.raises(ValidationError, match="AVIARY_MAX_LOADED"):
        Settings(preload="a,b,c", max_loaded=2)


def test_parse_model_entries_accepts_dicts() -> None:
    assert parse_model_entries({"a": Path("/x")}) == {"a": "/x"}
    assert parse_model_entries("") == {}


def test_registry_scans_the_directory_and_explicit_entries_win(tmp_path: Path) -> None:
    for name in ("zeta", "alpha", "mid"):
        (tmp_path / f"{name}.nemo").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a model")
    other = tmp_path / "elsewhere.nemo"
    other.write_bytes(b"")
    explicit = tmp_path / "sub"
    explicit.mkdir()
    (explicit / "special.nemo").write_bytes(b"")
    registry = ModelRegistry.from_settings(
        Settings(model_dir=tmp_path, models={"mid": str(other), "extra": str(explicit / "special.nemo")})
    )
    assert sorted(registry.names()) == ["alpha", "elsewhere", "extra", "mid", "zeta"]
    assert registry.get("mid").source == "explicit" and registry.get("mid").location == str(other)
    assert registry.get("alpha").source == "directory"
    assert registry.default == "mid"  # the first explicit entry


def test_registry_default_rules(tmp_path: Path) -> None:
    for name in ("b", "a"):
        (tmp_path / f"{name}.nemo").write_bytes(b"")
    assert ModelRegistry.from_settings(Settings(model_dir=tmp_path)).default == "a"
    assert ModelRegistry.from_settings(Settings(model_dir=tmp_path, default_model="b")).default == "b"
    with pytest.raises(ConfigurationError, match="AVIARY_DEFAULT_MODEL='c' is not an available model"):
        ModelRegistry.from_settings(Settings(model_dir=tmp_path, default_model="c"))
    with pytest.raises(ConfigurationError, match="model 'c' is not available; available models: a, b"):
        ModelRegistry.from_settings(Settings(model_dir=tmp_path, preload="c"))


def test_registry_refuses_hub_names_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="hub model names are not supported yet"):
        ModelRegistry.from_settings(Settings(models="p=nvidia/parakeet-tdt-0.6b-v2"))
    with pytest.raises(ConfigurationError, match="no such file"):
        ModelRegistry.from_settings(Settings(models=f"p={tmp_path}/missing.nemo"))
    with pytest.raises(ConfigurationError, match="is not a directory"):
        ModelRegistry.from_settings(Settings(model_dir=tmp_path / "nope"))


def test_empty_registry_explains_how_to_configure() -> None:
    registry = ModelRegistry.from_settings(Settings())
    assert registry.default is None
    with pytest.raises(ModelNotFound, match="set AVIARY_MODEL_DIR"):
        registry.resolve(None)
    with pytest.raises(ModelNotFound, match="no models are configured"):
        registry.resolve("x")


def test_describe_peeks_into_an_uncompressed_nemo(tmp_path: Path) -> None:
    import io
    import tarfile

    import yaml

    from service.pool import ModelSpec, describe

    config = {
        "target": "nemo.collections.asr.models.hybrid_rnnt_ctc_bpe_models.EncDecHybridRNNTCTCBPEModel",
        "sample_rate": 16000, "loss": {"loss_name": "tdt"},
    }
    path = tmp_path / "m.nemo"
    with tarfile.open(path, "w:") as tar:
        raw = yaml.safe_dump(config).encode()
        info = tarfile.TarInfo("./model_config.yaml")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    card = describe(ModelSpec("m", "explicit", str(path)))
    assert card["target"] == config["target"] and card["decoders"] == ["tdt", "ctc"]
    assert card["sample_rate"] == 16000 and card["tasks"] == ["transcribe"]
    (tmp_path / "junk.nemo").write_bytes(b"junk")
    assert describe(ModelSpec("j", "explicit", str(tmp_path / "junk.nemo"))) == {}
