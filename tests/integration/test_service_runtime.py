"""The service over the real runtime: the fixture checkpoints served by uvicorn give exactly what the runtime
gives in-process for the same audio. Skipped until the fixtures exist.

Exactness is checked where batching cannot blur it (a server that runs every item alone); under dynamic
batching an item may also come out as the runtime gives it inside a batch, because float32 kernels are not
bit-identical across batch shapes and random-weight fixtures have near-tied logits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from service_helpers import FIXTURE_AUDIO, Server, npy, run_server

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_MODELS = ROOT / "tests" / "fixtures" / "models"
CHECKPOINTS = sorted(FIXTURE_MODELS.glob("*.nemo")) if FIXTURE_MODELS.is_dir() else []
SPEECH = [FIXTURE_AUDIO / n for n in ("s4_en_m3.wav", "s1_en_us.wav")]
FORMATS = [FIXTURE_AUDIO / "fmt_44k_stereo.wav"]  # resampled and downmixed by the service
PATHS = [p for p in SPEECH + FORMATS if p.exists()]


def _runtime_available() -> bool:
    try:
        from models import ASRModel  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not yet"
        return False
    return True


pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,  # real checkpoints on CPU: ~30 s for the NeMo fixture set
    pytest.mark.skipif(not CHECKPOINTS or len(PATHS) < 2 or not _runtime_available(),
                       reason="fixture checkpoints (tests/fixtures/models/*.nemo) or the runtime not available yet"),
]


def _settings(**overrides: Any) -> Settings:
    return Settings(**{
        "model_dir": FIXTURE_MODELS, "models": {}, "device": "cpu", "backend": "runtime", "max_loaded": 16,
        "catalog": False,
        "default_model": CHECKPOINTS[0].stem if CHECKPOINTS else None, **overrides,
    })


@pytest.fixture(scope="module")
def runtime_server() -> Iterator[Server]:
    """Dynamic batching on: concurrent requests share batches."""
    with run_server(_settings(max_wait_ms=20, max_batch_size=8), None) as server:
        yield server


@pytest.fixture(scope="module")
def solo_server() -> Iterator[Server]:
    """Every item runs alone, so results must be bit-identical to the runtime's for batch_size=1."""
    with run_server(_settings(max_batch_size=1), None) as server:
        yield server


class Reference:
    """In-process runtime results, one utterance at a time (no batching at all)."""

    def __init__(self) -> None:
        self.models: dict[str, Any] = {}
        self.failures: dict[str, Exception] = {}
        self.cache: dict[tuple[str, str | None, bool, bool], list[Any]] = {}

    def model(self, ckpt: Path) -> Any:
        """The restored model, or ``None`` when the runtime refuses the checkpoint (see ``failures``)."""
        from models import ASRModel
        from models.errors import CheckpointError

        if ckpt.stem not in self.models and ckpt.stem not in self.failures:
            try:
                self.models[ckpt.stem] = ASRModel.restore_from(str(ckpt), map_location="cpu")
            except CheckpointError as exc:
                self.failures[ckpt.stem] = exc
        return self.models.get(ckpt.stem)

    def hyps(self, ckpt: Path, decoder: str | None = None, timestamps: bool = False, batched: bool = False
             ) -> list[Any]:
        """Each input alone, or (``batched``) all in one batch. Raises what the runtime raises for options
        the model does not support."""
        from models.audio import load_audio

        model = self.model(ckpt)
        key = (ckpt.stem, decoder, timestamps, batched)
        if key not in self.cache:
            audio = [load_audio(str(p), model.sample_rate) for p in PATHS]
            options = {"return_hypotheses": True, "timestamps": timestamps or None, "decoder_type": decoder,
                       "verbose": False}
            self.cache[key] = (model.transcribe(audio, batch_size=len(audio), **options) if batched else
                               [model.transcribe([a], batch_size=1, **options)[0] for a in audio])
        return self.cache[key]


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference()


def _loadable(server: Server, reference: Reference, ckpt: Path) -> bool:
    """False (after checking the service answers 503 with the runtime's reason) if the runtime refuses it."""
    if reference.model(ckpt) is not None:
        return True
    response = server.client.post("/transcribe", files=_files(PATHS[:1]), data={"model": ckpt.stem})
    assert response.status_code == 503 and response.json()["error"]["code"] == "model_unavailable"
    assert str(reference.failures[ckpt.stem]) in response.json()["error"]["message"]
    return False


def _files(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


def _check(result: dict[str, Any], hyp: Any, timestamps: bool = False) -> None:
    assert result["text"] == hyp.text
    assert result["hypothesis"]["tokens"] == [int(t) for t in hyp.tokens]
    assert result["hypothesis"]["score"] == pytest.approx(float(hyp.score), abs=1e-3)
    if hyp.alignments is not None:
        expected = hyp.alignments.float().cpu().numpy() if hasattr(hyp.alignments, "cpu") else hyp.alignments
        np.testing.assert_allclose(np.asarray(result["hypothesis"]["alignments"]), np.asarray(expected), atol=1e-4)
    if timestamps:
        words = [{"word": w["word"], "start": w["start"], "end": w["end"]} for w in hyp.timestamp["word"]]
        assert result["timestamps"]["word"] == words


def _check_any(result: dict[str, Any], candidates: list[Any]) -> None:
    errors = []
    for hyp in candidates:
        try:
            _check(result, hyp)
            return
        except AssertionError as exc:
            errors.append(exc)
    raise errors[0]


def _transcribe(server: Server, requests: list[tuple[list[Path], dict[str, str]]]) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            return await asyncio.gather(*(http.post("/transcribe", files=_files(paths), data=fields)
                                          for paths, fields in requests))

    return asyncio.run(main())


def _requests(fields: dict[str, str]) -> list[tuple[list[Path], dict[str, str]]]:
    """One request per file and one with all of them, sent at once."""
    return [([p], fields) for p in PATHS] + [(PATHS, fields)]


def _results(responses: list[httpx.Response]) -> list[list[dict[str, Any]]]:
    """Per input file: its results from the single-file requests and from the all-files request."""
    for response in responses:
        assert response.status_code == 200, response.text
    *singles, together = [r.json()["results"] for r in responses]
    return [[single[0], result] for single, result in zip(singles, together)]


@pytest.mark.parametrize("ckpt", CHECKPOINTS, ids=[c.stem for c in CHECKPOINTS])
def test_items_run_alone_match_the_runtime_exactly(solo_server: Server, reference: Reference, ckpt: Path) -> None:
    if not _loadable(solo_server, reference, ckpt):
        return
    responses = _transcribe(solo_server, _requests({"model": ckpt.stem, "return_hypotheses": "true"}))
    for results, hyp in zip(_results(responses), reference.hyps(ckpt)):
        for result in results:
            _check(result, hyp)


@pytest.mark.parametrize("ckpt", CHECKPOINTS, ids=[c.stem for c in CHECKPOINTS])
def test_batched_requests_match_the_runtime(runtime_server: Server, reference: Reference, ckpt: Path) -> None:
    if not _loadable(runtime_server, reference, ckpt):
        return
    responses = _transcribe(runtime_server, _requests({"model": ckpt.stem, "return_hypotheses": "true"}))
    alone, batched = reference.hyps(ckpt), reference.hyps(ckpt, batched=True)
    for results, *candidates in zip(_results(responses), alone, batched):
        for result in results:
            _check_any(result, candidates)


@pytest.mark.parametrize("decoder", [None, "ctc"])
@pytest.mark.parametrize("ckpt", CHECKPOINTS, ids=[c.stem for c in CHECKPOINTS])
def test_timestamps_and_ctc_decoder(solo_server: Server, reference: Reference, ckpt: Path,
                                    decoder: str | None) -> None:
    from models.errors import UnsupportedOptionError

    if not _loadable(solo_server, reference, ckpt):
        return
    fields = {"model": ckpt.stem, "return_hypotheses": "true", "timestamps": "true", "decoder": decoder or "default"}
    (response,) = _transcribe(solo_server, [(PATHS, fields)])
    try:
        hyps = reference.hyps(ckpt, decoder, True)
    except UnsupportedOptionError:
        assert response.status_code == 422 and response.json()["error"]["code"] == "unsupported_option"
        return
    assert response.status_code == 200, response.text
    for result, hyp in zip(response.json()["results"], hyps):
        _check(result, hyp, timestamps=True)


def test_numpy_payload_equals_the_file(runtime_server: Server, reference: Reference) -> None:
    from models.audio import load_audio

    loadable = [c for c in CHECKPOINTS if reference.model(c) is not None]
    if not loadable:
        pytest.skip("the runtime loads none of the fixture checkpoints yet")
    model = reference.model(loadable[0])
    path = SPEECH[0]
    audio = load_audio(str(path), model.sample_rate)
    fields = {"model": loadable[0].stem, "sample_rate": str(model.sample_rate)}
    by_file = runtime_server.client.post("/transcribe", files=_files([path]), data=fields)
    by_npy = runtime_server.client.post("/transcribe", files={"files": ("x.npy", npy(audio))}, data=fields)
    assert by_file.status_code == by_npy.status_code == 200
    assert by_file.json()["results"][0]["text"] == by_npy.json()["results"][0]["text"]


def test_models_describe_the_checkpoints(runtime_server: Server) -> None:
    cards = {c["name"]: c for c in runtime_server.client.get("/models").json()["models"]}
    assert set(cards) == {c.stem for c in CHECKPOINTS}
    described = [card for card in cards.values() if card["architecture"]]
    assert described  # NeMo writes plain tars, so every card can be filled before loading
    for card in described:
        assert card["architecture"].startswith("nemo.collections.asr.models.")
        assert isinstance(card["sample_rate"], int) and card["decoders"]
