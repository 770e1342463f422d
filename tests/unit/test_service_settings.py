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
    monkeypatch.setenv("AVIARY_DEMO_MODEL", "false")  # tests of the bundled model turn it on explicitly


def test_defaults() -> None:
    s = Settings()
    assert (s.host, s.port, s.device, s.backend) == ("127.0.0.1", 8000, "auto", "runtime")
    assert s.model_ttl == -1 and s.models == {} and s.preload == []
    assert s.max_upload_bytes == 512 * 1024 * 1024 and s.max_audio_s == 7200 and s.long_audio_s == 300


def test_keys_and_hub_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AVIARY_API_KEYS", " sk-one , sk-two,")
    monkeypatch.setenv("AVIARY_ADMIN_KEY", "sk-admin")
    monkeypatch.setenv("AVIARY_ALLOW_DOWNLOADS", "false")
    monkeypatch.setenv("AVIARY_CACHE_DIR", str(tmp_path))
    s = Settings()
    assert [k.get_secret_value() for k in s.api_keys] == ["sk-one", "sk-two"]
    assert s.admin_key is not None and s.admin_key.get_secret_value() == "sk-admin"
    assert "sk-" not in repr(s)  # secrets stay out of logs
    assert s.allow_downloads is False and s.cache_dir == tmp_path and s.catalog is True
    assert Settings(admin_key="  ").admin_key is None
    with pytest.raises(ValidationError, match="api_keys"):
        Settings(api_keys="a b")


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


def test_registry_accepts_hub_names_and_refuses_missing_files(tmp_path: Path) -> None:
    entries = "p=nvidia/parakeet-tdt-0.6b-v2,c=stt_en_fastconformer_hybrid_large_pc,r=org/repo@v1.2"
    registry = ModelRegistry.from_settings(Settings(models=entries))
    assert [(s.name, s.location, s.hub) for s in registry.specs()] == [
        ("p", "nvidia/parakeet-tdt-0.6b-v2", "hf"), ("c", "stt_en_fastconformer_hybrid_large_pc", "ngc"),
        ("r", "org/repo@v1.2", "hf"),
    ]
    with pytest.raises(ConfigurationError, match="no such file"):
        ModelRegistry.from_settings(Settings(models=f"p={tmp_path}/missing.nemo"))
    closest = r"did you mean: parakeet-tdt-0\.6b-v3, parakeet-tdt-0\.6b-v2"
    with pytest.raises(ConfigurationError, match=r"not a catalog name .* " + closest):
        ModelRegistry.from_settings(Settings(models="p=parakeet-tdt-0.6b-v9"))
    with pytest.raises(ConfigurationError, match="is not a directory"):
        ModelRegistry.from_settings(Settings(model_dir=tmp_path / "nope"))


def test_catalog_names_and_aliases_resolve_but_are_never_the_default(tmp_path: Path) -> None:
    from service.pool.catalog import HubCatalog

    (tmp_path / "local.nemo").write_bytes(b"")
    registry = ModelRegistry.from_settings(Settings(model_dir=tmp_path), HubCatalog())
    assert registry.default == "local"
    spec = registry.get("nvidia/parakeet-tdt-0.6b-v2")  # an alias of the catalog entry
    assert (spec.name, spec.source, spec.hub) == ("parakeet-tdt-0.6b-v2", "pretrained", "hf")
    assert registry.get("stt_en_conformer_ctc_small").hub == "ngc"
    assert "vad_multilingual_frame_marblenet" not in registry.names()  # not an ASR model the runtime runs
    with pytest.raises(ModelNotFound, match=r"did you mean: parakeet-tdt-0.6b-v\d.*available models: local; "
                       r"GET /models lists them and \d+ pretrained catalog models"):
        registry.get("parakeet-tdt-0.6b")
    assert ModelRegistry.from_settings(Settings(), HubCatalog()).default is None


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
    assert card["sample_rate"] == 16000 and card["tasks"] == ["asr"]
    (tmp_path / "junk.nemo").write_bytes(b"junk")
    assert describe(ModelSpec("j", "explicit", str(tmp_path / "junk.nemo"))) == {}


def test_bundled_demo_model_is_the_default_only_when_nothing_else_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models import bundled, hub

    assets = tmp_path / "assets"
    assets.mkdir()
    monkeypatch.setattr(bundled, "ASSETS", assets)
    assert bundled.bundled_models() == {}  # not shipped in this installation: not offered
    assert bundled.DEMO_MODEL not in ModelRegistry.from_settings(Settings(demo_model=True)).names()
    (assets / "aviary-demo-en.nemo").write_bytes(b"")
    alone = ModelRegistry.from_settings(Settings(demo_model=True))
    spec = alone.resolve(None)
    assert alone.default == bundled.DEMO_MODEL and spec.source == "bundled" and Path(spec.location).is_file()
    ref = hub.parse_name(bundled.DEMO_MODEL)  # ASRModel.from_pretrained("aviary-demo-en") finds it too
    assert ref.source == "local" and ref.path == assets / "aviary-demo-en.nemo"
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "zeta.nemo").write_bytes(b"")
    with_dir = ModelRegistry.from_settings(Settings(demo_model=True, model_dir=models_dir))
    assert with_dir.default == "zeta" and bundled.DEMO_MODEL in with_dir.names()
    chosen = ModelRegistry.from_settings(Settings(demo_model=True, model_dir=models_dir, default_model="aviary-demo-en"))
    assert chosen.default == bundled.DEMO_MODEL
    assert bundled.DEMO_MODEL not in ModelRegistry.from_settings(Settings(demo_model=False)).names()
