"""The shipped catalog, ``list_available_models`` and name resolution (no network needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_hubs import make_nemo

from models import (
    ASRModel,
    EncDecCTCModel,
    EncDecCTCModelBPE,
    EncDecHybridRNNTCTCBPEModel,
    EncDecRNNTBPEModel,
    EncDecRNNTModel,
    catalog,
    hub,
)
from models.errors import CheckpointError, UnknownModelError

NGC = "https://api.ngc.nvidia.com/v2/models/nvidia"


def test_catalog_has_nemo_ngc_names_and_hf_checkpoints() -> None:
    names = {e.pretrained_model_name for e in catalog.entries()}
    assert {"stt_en_fastconformer_hybrid_large_pc", "stt_en_conformer_ctc_large", "QuartzNet15x5Base-En",
            "parakeet-tdt-0.6b-v2", "parakeet-tdt-0.6b-v3", "canary-1b-flash", "canary-1b-v2",
            "parakeet-ctc-1.1b", "parakeet-rnnt-0.6b", "canary-180m-flash"} <= names
    assert len(names) == len(catalog.entries())  # exact-name lookup needs unique names
    aliases = [a for e in catalog.entries() for a in e.names]
    assert len(aliases) == len(set(aliases))


@pytest.mark.parametrize(("name", "location"), [
    ("parakeet-tdt-0.6b-v2", "https://huggingface.co/nvidia/parakeet-tdt-0.6b-v2"),
    ("canary-1b-flash", "https://huggingface.co/nvidia/canary-1b-flash"),
    ("stt_en_fastconformer_hybrid_large_pc",
     f"{NGC}/nemo/stt_en_fastconformer_hybrid_large_pc/versions/1.21.0/files/stt_en_fastconformer_hybrid_large_pc.nemo"),
    ("QuartzNet15x5Base-En", f"{NGC}/nemospeechmodels/versions/1.0.0a5/files/QuartzNet15x5Base-En.nemo"),
])
def test_catalog_name_to_location(name: str, location: str) -> None:
    assert catalog.find(name).location == location  # type: ignore[union-attr]


def test_list_available_models_has_nemo_fields_and_filters_by_class() -> None:
    everything = ASRModel.list_available_models()
    assert len(everything) == len(catalog.entries())
    info = next(m for m in everything if m.pretrained_model_name == "stt_en_conformer_ctc_large")
    assert info.class_ is EncDecCTCModelBPE and info.class_name == "EncDecCTCModelBPE"
    assert info.location.endswith("stt_en_conformer_ctc_large.nemo") and info.description
    assert info.languages == ("en",)
    assert info.aliases == ()
    bpe = EncDecCTCModelBPE.list_available_models()
    assert bpe and all(issubclass(m.class_, EncDecCTCModelBPE) for m in bpe)
    assert "stt_en_jasper10x5dr" not in {m.pretrained_model_name for m in bpe}  # EncDecCTCModel, the parent
    ctc = {m.pretrained_model_name for m in EncDecCTCModel.list_available_models()}
    assert {"stt_en_jasper10x5dr", "stt_en_conformer_ctc_large", "parakeet-ctc-0.6b"} <= ctc
    rnnt = {m.pretrained_model_name for m in EncDecRNNTModel.list_available_models()}
    assert {"parakeet-tdt-0.6b-v2", "stt_en_fastconformer_hybrid_large_pc"} <= rnnt  # hybrids are RNNT models
    hybrid = EncDecHybridRNNTCTCBPEModel.list_available_models()
    assert all(m.class_name == "EncDecHybridRNNTCTCBPEModel" for m in hybrid)
    rnnt_bpe = {m.pretrained_model_name for m in EncDecRNNTBPEModel.list_available_models()}
    assert "canary-1b-flash" not in rnnt_bpe
    canary = next(m for m in everything if m.pretrained_model_name == "canary-1b-flash")
    assert canary.class_name == "EncDecMultiTaskModel"  # class_ is None until the runtime implements it
    assert canary.class_ is None or canary.class_.__name__ == "EncDecMultiTaskModel"
    assert canary.aliases == ("nvidia/canary-1b-flash",) and canary.languages == ("en", "de", "es", "fr")


def test_name_clash_keeps_nemo_ngc_entry_and_names_hf_one_by_repo() -> None:
    assert catalog.find("parakeet-tdt_ctc-110m").location.startswith("https://api.ngc")  # type: ignore[union-attr]
    hf_entry = catalog.find("nvidia/parakeet-tdt_ctc-110m")
    assert hf_entry is not None and hf_entry.hf_repo_id == "nvidia/parakeet-tdt_ctc-110m"


@pytest.mark.parametrize(("typo", "expected"), [
    ("parakeet-tdt-06b-v2", "parakeet-tdt-0.6b-v2"),
    ("stt_en_fastconformer_hybrid_large", "stt_en_fastconformer_hybrid_large_pc"),
    ("quartznet15x5base-en", "QuartzNet15x5Base-En"),
    ("canary-1b-flsh", "canary-1b-flash"),
])
def test_unknown_name_suggests_closest(typo: str, expected: str) -> None:
    with pytest.raises(UnknownModelError) as err:
        hub.resolve_pretrained(typo)
    assert err.value.suggestions[0] == expected
    assert f"Did you mean: {expected}" in str(err.value)


def test_unknown_name_without_close_match() -> None:
    with pytest.raises(UnknownModelError) as err:
        hub.is_cached("zzzz")
    assert err.value.suggestions == () and "Did you mean" not in str(err.value)


def test_local_paths_load_directly(tmp_path: Path) -> None:
    nemo = tmp_path / "m.nemo"
    nemo.write_bytes(make_nemo())
    assert hub.resolve_pretrained(str(nemo)) == nemo
    assert hub.resolve_pretrained(str(tmp_path)) == tmp_path  # an extracted checkpoint directory
    assert hub.is_cached(str(nemo))
    assert ASRModel.from_pretrained(str(nemo), return_model_file=True) == str(nemo)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        hub.resolve_pretrained(str(tmp_path / "missing.nemo"))
    assert not hub.is_cached("./missing.nemo")


def test_parse_name_does_no_io() -> None:
    ref = hub.parse_name("nvidia/parakeet-tdt-0.6b-v2@abc123")
    assert (ref.source, ref.repo_id, ref.revision) == ("hf", "nvidia/parakeet-tdt-0.6b-v2", "abc123")
    assert ref.name == "parakeet-tdt-0.6b-v2"  # the catalog name of that repo
    ref = hub.parse_name("some-org/some-model")
    assert (ref.source, ref.repo_id, ref.revision, ref.info) == ("hf", "some-org/some-model", None, None)
    ref = hub.parse_name("stt_en_conformer_ctc_large@1.0.0")
    assert ref.source == "ngc" and "/versions/1.0.0/files/" in (ref.url or "")
    with pytest.raises(UnknownModelError):
        hub.parse_name("a/b/c")
