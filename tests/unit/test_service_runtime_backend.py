"""``RuntimeBackend``: the adapter over ``models.ASRModel`` (a stand-in model here; real checkpoints are
served in tests/integration/test_service_runtime.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.hypothesis import Hypothesis
from service.errors import ModelUnavailable
from service.pool import DecodeOptions, ModelRegistry, ModelSpec, WarmPool
from service.pool.runtime import RuntimeBackend


class StandIn:
    """Answers like ``ASRModel`` and records how it was called."""

    sample_rate = 16000
    decoder_types = ("tdt", "ctc")
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.info_calls = 0

    def info(self) -> dict[str, Any]:
        self.info_calls += 1
        return {"target": "nemo.collections.asr.models.X", "decoders": ["tdt", "ctc"], "sample_rate": 16000}

    def transcribe(self, audio: list[np.ndarray], **kwargs: Any) -> list[Hypothesis]:
        self.calls.append({"n": len(audio), "lengths": [len(a) for a in audio], **kwargs})
        return [Hypothesis(score=0.0, y_sequence=[1], text=f"{len(a)}", tokens=[1]) for a in audio]


def test_transcribe_batch_calls_the_runtime_as_documented() -> None:
    model = StandIn()
    backend = RuntimeBackend("m", model)
    hyps = backend.transcribe_batch([np.zeros(100, np.float32), np.zeros(50, np.float32)], DecodeOptions("ctc", True))
    assert [h.text for h in hyps] == ["100", "50"]
    call = dict(model.calls[-1])
    assert callable(call.pop("long_audio")["progress"])  # long-audio progress goes to the log
    assert call == {"n": 2, "lengths": [100, 50], "batch_size": 2, "return_hypotheses": True,
                    "timestamps": True, "decoder_type": "ctc", "verbose": False}
    backend.transcribe_batch([np.zeros(10, np.float32)], DecodeOptions())
    assert model.calls[-1]["timestamps"] is None and model.calls[-1]["decoder_type"] is None


def test_info_is_computed_once_and_warmup_runs_one_second() -> None:
    model = StandIn()
    backend = RuntimeBackend("m", model)
    for _ in range(3):
        info = backend.info()
    assert model.info_calls == 1 and info["device"] == "cpu" and info["decoders"] == ["tdt", "ctc"]
    backend.warmup()
    assert model.calls[-1]["lengths"] == [16000]


def test_close_drops_the_model() -> None:
    model = StandIn()
    ref = weakref.ref(model)
    backend = RuntimeBackend("m", model)
    del model
    backend.close()
    gc.collect()
    assert ref() is None
    with pytest.raises(RuntimeError, match="closed"):
        backend.transcribe_batch([np.zeros(10, np.float32)], DecodeOptions())


def test_a_broken_checkpoint_is_503_naming_the_problem(tmp_path: Path) -> None:
    junk = tmp_path / "junk.nemo"
    junk.write_bytes(b"not a tar")
    registry = ModelRegistry([ModelSpec("junk", "explicit", str(junk))])
    pool = WarmPool(registry, RuntimeBackend.load, device="cpu", max_loaded=1)

    async def use() -> None:
        async with pool.lease("junk"):
            pass

    with pytest.raises(ModelUnavailable, match=r"model .junk. failed to load: .*junk\.nemo"):
        asyncio.run(use())


@pytest.mark.parametrize(("name", "packs"), [("fastconformer_hybrid_tdt_ctc_bpe", True), ("quartznet_char", False)])
def test_packs_follows_the_model(name: str, packs: bool) -> None:
    """Conformer checkpoints run batches packed (the worker then ignores the padding bound); others do not."""
    from models import ASRModel

    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "models"
    model = ASRModel.restore_from(fixtures / f"{name}.nemo", map_location="cpu")
    assert RuntimeBackend(name, model).packs is packs
    model.packed = False
    assert RuntimeBackend(name, model).packs is False
    assert RuntimeBackend("m", StandIn()).packs is False
