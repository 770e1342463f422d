"""Across processes, and all the way to ``ASRModel.from_pretrained(...).transcribe(...)``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_hubs import FakeHFHub, FakeNGC, Misbehaviour, make_nemo

from models import ASRModel, catalog, hub

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
NEMO_FIXTURES = sorted((FIXTURES / "models").glob("*.nemo"))
PULL = "import sys; from models import hub; print(hub.pull(sys.argv[1]))"


def test_concurrent_processes_download_once(ngc: FakeNGC) -> None:
    name = "stt_en_conformer_ctc_small"
    path = catalog.find(name).location.split("/v2/models/", 1)[1]  # type: ignore[union-attr]
    ngc.files[path] = data = make_nemo()
    ngc.misbehave[path.rsplit("/", 1)[-1]] = Misbehaviour(slow_s=0.1)  # long enough for both to overlap
    procs = [subprocess.Popen([sys.executable, "-c", PULL, name], cwd=REPO_ROOT, env=dict(os.environ),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    paths = {Path(out.strip()) for out, _ in outputs}
    assert len(paths) == 1 and paths.pop().read_bytes() == data
    assert ngc.count("GET", r"^/s3/") == 1


@pytest.mark.skipif(not NEMO_FIXTURES, reason="no tiny NeMo checkpoints in tests/fixtures/models yet")
@pytest.mark.parametrize("fixture", NEMO_FIXTURES[:1], ids=lambda p: p.stem)
def test_from_pretrained_hf_repo_then_transcribe(hf: FakeHFHub, fixture: Path) -> None:
    repo = f"testorg/{fixture.stem}"
    hf.add_commit(repo, {f"{fixture.stem}.nemo": fixture.read_bytes()})
    audio = [str(FIXTURES / "audio" / "s1_en_us.wav")]
    model = ASRModel.from_pretrained(repo, map_location="cpu")
    assert hub.is_cached(repo)
    expected = ASRModel.restore_from(fixture, map_location="cpu").transcribe(audio, verbose=False)
    assert model.transcribe(audio, verbose=False) == expected
