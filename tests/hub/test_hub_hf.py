"""Hugging Face downloads through huggingface_hub, against the fake hub on 127.0.0.1."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fake_hubs import TOKEN, FakeHFHub, Misbehaviour, files_under, free_port, make_nemo

from models import hub, hub_hf
from models.errors import (
    CheckpointError,
    DownloadError,
    HubAccessError,
    HubUnavailableError,
    UnknownModelError,
)

REPO = "testorg/tiny-ctc"
NEMO = "tiny-ctc.nemo"
CDN_GET = r"^/cdn/"


def test_download_then_cache_hit_without_requests(hf: FakeHFHub, hub_env: Path) -> None:
    data = make_nemo()
    sha = hf.add_commit(REPO, {NEMO: data, "README.md": b"# tiny"})
    path = hub.resolve_pretrained(REPO)
    assert path.name == NEMO and path.read_bytes() == data
    assert f"snapshots/{sha}/{NEMO}" in path.as_posix()
    assert path.is_relative_to(hub_env / "huggingface")  # in $AVIARY_CACHE_DIR, huggingface_hub's layout
    assert hf.count("GET", CDN_GET) == 1
    hf.requests.clear()
    assert hub.resolve_pretrained(REPO) == path
    assert hf.requests == []  # a cached model costs no request at all
    assert hub.is_cached(REPO)


def test_cached_model_loads_with_hub_down(hf: FakeHFHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hf.add_commit(REPO, {NEMO: make_nemo()})
    path = hub.pull(REPO)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    assert hub.resolve_pretrained(REPO) == path


def test_catalog_name_and_alias_resolve_to_the_hub_repo(hf: FakeHFHub) -> None:
    data = make_nemo(seed=3)
    hf.add_commit("nvidia/parakeet-tdt-0.6b-v2", {"parakeet-tdt-0.6b-v2.nemo": data})
    by_name = hub.resolve_pretrained("parakeet-tdt-0.6b-v2")
    assert by_name.read_bytes() == data
    hf.requests.clear()
    assert hub.resolve_pretrained("nvidia/parakeet-tdt-0.6b-v2") == by_name
    assert hf.requests == []


def test_offline_mode_uses_the_cache(hf: FakeHFHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hf.add_commit(REPO, {NEMO: make_nemo()})
    path = hub.pull(REPO)
    hf.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.resolve_pretrained(REPO) == path
    assert hf.requests == []


def test_offline_mode_without_cache_says_how_to_pre_download(hf: FakeHFHub,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    hf.add_commit(REPO, {NEMO: make_nemo()})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match=f"aviary pull {REPO}") as err:
        hub.resolve_pretrained(REPO)
    assert "HF_HUB_OFFLINE" in str(err.value) and ".nemo" in str(err.value)
    assert hf.requests == []
    assert not hub.is_cached(REPO)


def test_unreachable_hub_without_cache(hub_down: str) -> None:
    with pytest.raises(HubUnavailableError, match="cannot be reached") as err:
        hub.resolve_pretrained(REPO)
    assert "aviary pull" in str(err.value)


def test_hub_outage_without_cache_fails_fast(hf: FakeHFHub) -> None:
    hf.add_commit(REPO, {NEMO: make_nemo()})
    hf.outage = 503
    with pytest.raises(HubUnavailableError, match="HTTP 503"):
        hub.resolve_pretrained(REPO)
    assert hf.count("HEAD", r"/resolve/") == 1  # no retry storm: the cache is the fallback, not the hub


def test_unknown_repo_is_unknown_model_with_suggestions(hf: FakeHFHub) -> None:
    with pytest.raises(UnknownModelError, match="no Hugging Face repo") as err:
        hub.resolve_pretrained("nvidia/parakeet-tdt-0.6b-v9")
    assert "nvidia/parakeet-tdt-0.6b-v2" in err.value.suggestions
    assert hf.count("GET", CDN_GET) == 0


def test_unknown_repo_with_a_token_is_404_and_still_unknown(hf: FakeHFHub,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(UnknownModelError):
        hub.resolve_pretrained("testorg/nothing-here")


def test_gated_repo_needs_hf_token(hf: FakeHFHub, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_nemo()
    hf.add_commit(REPO, {NEMO: data}, gated=True)
    with pytest.raises(HubAccessError, match="HF_TOKEN"):
        hub.resolve_pretrained(REPO)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert hub.resolve_pretrained(REPO).read_bytes() == data


def test_revision_pinning(hf: FakeHFHub) -> None:
    old, new = make_nemo(seed=1), make_nemo(seed=2)
    first = hf.add_commit(REPO, {NEMO: old})
    hf.add_commit(REPO, {NEMO: old}, ref="v1.0")
    hf.add_commit(REPO, {NEMO: new})  # main moves on
    assert hub.resolve_pretrained(REPO).read_bytes() == new
    assert hub.resolve_pretrained(f"{REPO}@{first}").read_bytes() == old
    assert hub.resolve_pretrained(f"{REPO}@v1.0").read_bytes() == old
    hf.requests.clear()
    assert hub.resolve_pretrained(f"{REPO}@{first}").read_bytes() == old  # a cached commit: no request
    assert hf.requests == []
    with pytest.raises(UnknownModelError, match="no revision 'nope'"):
        hub.resolve_pretrained(f"{REPO}@nope")


def test_refresh_cache_picks_up_a_new_main(hf: FakeHFHub) -> None:
    hf.add_commit(REPO, {NEMO: make_nemo(seed=1)})
    hub.pull(REPO)
    newer = make_nemo(seed=2)
    hf.add_commit(REPO, {NEMO: newer})
    assert hub.resolve_pretrained(REPO).read_bytes() != newer  # cache first, as NeMo
    assert hub.resolve_pretrained(REPO, refresh_cache=True).read_bytes() == newer


def test_truncated_transfer_leaves_nothing_and_says_so(hf: FakeHFHub, hub_env: Path) -> None:
    data = make_nemo()
    hf.add_commit(REPO, {NEMO: data})
    hf.misbehave[NEMO] = Misbehaviour(truncate_to=len(data) // 2)
    with pytest.raises(DownloadError, match="nothing was kept") as err:
        hub.resolve_pretrained(REPO)
    assert "size" in str(err.value)
    assert not [f for f in files_under(hub_env) if "/blobs/" in f or "/snapshots/" in f]
    assert not hub.is_cached(REPO)
    hf.misbehave.clear()
    assert hub.resolve_pretrained(REPO).read_bytes() == data  # and a retry works


def test_dropped_connection_resumes_with_range(hf: FakeHFHub) -> None:
    data = make_nemo()
    hf.add_commit(REPO, {NEMO: data})
    hf.misbehave[NEMO] = Misbehaviour(drop_after=64 * 1024)
    assert hub.resolve_pretrained(REPO).read_bytes() == data
    assert hf.count("GET", CDN_GET) == 2  # the second request continued where the first broke off


def test_concurrent_pulls_download_once(hf: FakeHFHub) -> None:
    data = make_nemo()
    hf.add_commit(REPO, {NEMO: data})
    hf.misbehave[NEMO] = Misbehaviour(slow_s=0.02)  # keep the first download busy while the others arrive
    results: list[Path] = []
    errors: list[BaseException] = []

    def pull() -> None:
        try:
            results.append(hub.pull(REPO))
        except Exception as exc:  # noqa: BLE001 - collected and reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and results[0].read_bytes() == data
    assert hf.count("GET", CDN_GET) == 1
    # the winner's probe + huggingface_hub's own HEAD; the waiters find it in the cache
    assert hf.count("HEAD", r"/resolve/") <= 2


def test_repo_without_nemo_is_used_as_an_extracted_checkpoint(hf: FakeHFHub) -> None:
    files = {"model_config.yaml": b"target: x.EncDecCTCModel\n", "model_weights.ckpt": b"\0" * 5000,
             "tokenizer/tokenizer.model": b"spm", "README.md": b"# extracted"}
    sha = hf.add_commit("testorg/extracted", files)
    path = hub.resolve_pretrained("testorg/extracted")
    assert path.is_dir() and path.name == sha
    assert {p: (path / p).read_bytes() for p in files} == files
    hf.requests.clear()
    assert hub.resolve_pretrained("testorg/extracted") == path and hf.requests == []
    assert hub.is_cached("testorg/extracted")


def test_repo_that_is_not_a_nemo_checkpoint_is_refused_before_downloading(hf: FakeHFHub) -> None:
    hf.add_commit("testorg/other", {"other-name.nemo": make_nemo(), "README.md": b"x"})
    with pytest.raises(CheckpointError, match="other-name.nemo"):
        hub.resolve_pretrained("testorg/other")
    assert hf.count("GET", CDN_GET) == 0


def test_cached_models_lists_hf_checkpoints(hf: FakeHFHub) -> None:
    data = make_nemo()
    first = hf.add_commit(REPO, {NEMO: data})
    hf.add_commit("nvidia/canary-1b-flash", {"canary-1b-flash.nemo": make_nemo(seed=5)})
    hf.add_commit("testorg/not-nemo", {"model.safetensors": b"x"})
    hub.pull(REPO)
    hub.pull("canary-1b-flash")
    hf.add_commit(REPO, {NEMO: make_nemo(seed=9)})
    hub.pull(f"{REPO}@{first}")
    listed = {(m.name, m.source) for m in hub.cached_models()}
    assert listed == {(REPO, "hf"), ("canary-1b-flash", "hf")}
    hub.pull(REPO, refresh=True)  # main moved: the old commit is now listed by its hash
    assert {m.name for m in hub.cached_models()} == {REPO, f"{REPO}@{first}", "canary-1b-flash"}
    assert all(m.size_bytes > 0 and m.path.exists() for m in hub.cached_models())


def test_hf_hub_cache_env_wins(hf: FakeHFHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hfcache"))
    hf.add_commit(REPO, {NEMO: make_nemo()})
    assert hub.pull(REPO).is_relative_to(tmp_path / "hfcache")
    assert hub_hf.cache_dir() == tmp_path / "hfcache"
