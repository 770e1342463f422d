"""NGC downloads (httpx, resume, size and archive checks, atomic moves) against the fake NGC."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from fake_hubs import FakeNGC, Misbehaviour, files_under, make_nemo

from models import catalog, hub, hub_ngc
from models.errors import DownloadError, HubUnavailableError, UnknownModelError

NAME = "stt_en_fastconformer_hybrid_large_pc"
FILE = f"{NAME}.nemo"
S3_GET = r"^/s3/"


def serve(ngc: FakeNGC, name: str = NAME, data: bytes | None = None) -> tuple[bytes, str]:
    """Put ``name``'s catalog file on the fake NGC; returns the bytes and its /v2/models/ path."""
    location = catalog.find(name).location  # type: ignore[union-attr]
    path = location.split("/v2/models/", 1)[1]
    ngc.files[path] = make_nemo() if data is None else data
    return ngc.files[path], path


def test_catalog_name_downloads_into_ngc_cache_layout(ngc: FakeNGC, hub_env: Path) -> None:
    data, _ = serve(ngc)
    path = hub.resolve_pretrained(NAME)
    assert path == hub_env / "ngc" / NAME / "1.21.0" / FILE
    assert path.read_bytes() == data
    assert files_under(hub_env / "ngc") == [f"{NAME}/1.21.0/{FILE}"]
    ngc.requests.clear()
    assert hub.resolve_pretrained(NAME) == path and ngc.requests == []
    assert hub.is_cached(NAME)


def test_cached_ngc_model_loads_with_network_down(ngc: FakeNGC, hub_down: str) -> None:
    # hub_down has repointed AVIARY_NGC_ENDPOINT at a closed port after the fake NGC was set up
    cache_file = hub.cache_dir() / "ngc" / NAME / "1.21.0" / FILE
    cache_file.parent.mkdir(parents=True)
    cache_file.write_bytes(make_nemo())
    assert hub.resolve_pretrained(NAME) == cache_file


def test_unreachable_ngc_without_cache(hub_down: str) -> None:
    with pytest.raises(HubUnavailableError, match="NGC cannot be reached"):
        hub.resolve_pretrained(NAME)
    assert not (hub.cache_dir() / "ngc").exists() or not files_under(hub.cache_dir() / "ngc")


def test_offline_env_without_cache(ngc: FakeNGC, monkeypatch: pytest.MonkeyPatch) -> None:
    serve(ngc)
    monkeypatch.setenv("AVIARY_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match=f"aviary pull {NAME}"):
        hub.resolve_pretrained(NAME)
    assert ngc.requests == []


def test_dropped_connection_resumes_with_range(ngc: FakeNGC, caplog: pytest.LogCaptureFixture) -> None:
    data, _ = serve(ngc)
    ngc.misbehave[FILE] = Misbehaviour(drop_after=50_000, drop_times=2)
    with caplog.at_level(logging.INFO, logger="aviary.models.hub"):
        assert hub.resolve_pretrained(NAME).read_bytes() == data
    assert ngc.count("GET", S3_GET) == 3
    ranges = [r for r in caplog.messages if "resuming" in r]
    assert len(ranges) == 2 and "at byte 50000 " in ranges[0] and "at byte 100000 " in ranges[1]
    assert any(m.startswith(f"downloaded {NAME}") for m in caplog.messages)


def test_server_ignoring_range_restarts_cleanly(ngc: FakeNGC) -> None:
    data, _ = serve(ngc)
    ngc.misbehave[FILE] = Misbehaviour(drop_after=50_000, drop_times=1, ignore_range=True)
    assert hub.resolve_pretrained(NAME).read_bytes() == data


def test_truncated_file_is_rejected_and_nothing_is_kept(ngc: FakeNGC, hub_env: Path) -> None:
    data, _ = serve(ngc)
    ngc.misbehave[FILE] = Misbehaviour(truncate_to=len(data) - 5000)  # honest length, short archive
    with pytest.raises(DownloadError, match="truncated or not a .nemo archive.*nothing was kept"):
        hub.resolve_pretrained(NAME)
    assert files_under(hub_env / "ngc") == []
    assert not hub.is_cached(NAME)


def test_size_check_catches_a_short_resumed_range(ngc: FakeNGC, hub_env: Path) -> None:
    data, _ = serve(ngc)
    ngc.misbehave[FILE] = Misbehaviour(drop_after=50_000, short_resume=1000)
    with pytest.raises(DownloadError, match=f"truncated download, {len(data) - 1000} of {len(data)} bytes"):
        hub.resolve_pretrained(NAME)
    assert files_under(hub_env / "ngc") == []


def test_connection_that_keeps_dropping_gives_up_without_partial_file(ngc: FakeNGC, hub_env: Path) -> None:
    serve(ngc)
    ngc.misbehave[FILE] = Misbehaviour(drop_after=50_000, drop_times=100, ignore_range=True)
    with pytest.raises(DownloadError, match=r"kept failing after \d+ of \d+ bytes.*nothing was kept"):
        hub.resolve_pretrained(NAME)
    assert ngc.count("GET", S3_GET) == 1 + hub_ngc.MAX_FAILURES  # the first attempt made progress
    assert files_under(hub_env / "ngc") == []


def test_not_a_nemo_archive(ngc: FakeNGC, hub_env: Path) -> None:
    serve(ngc, data=b"<html>maintenance</html>" * 100)
    with pytest.raises(DownloadError, match="not a .nemo archive"):
        hub.resolve_pretrained(NAME)
    assert files_under(hub_env / "ngc") == []


def test_transient_503_is_retried(ngc: FakeNGC) -> None:
    data, _ = serve(ngc)
    ngc.misbehave[FILE] = Misbehaviour(fail_times=2)
    assert hub.resolve_pretrained(NAME).read_bytes() == data


def test_missing_file_is_unknown(ngc: FakeNGC) -> None:
    with pytest.raises(UnknownModelError, match="HTTP 404"):
        hub.resolve_pretrained(NAME)


def test_version_pinning(ngc: FakeNGC, hub_env: Path) -> None:
    _, path = serve(ngc)
    old = make_nemo(seed=7)
    ngc.files[path.replace("/1.21.0/", "/1.0.0/")] = old
    pinned = hub.resolve_pretrained(f"{NAME}@1.0.0")
    assert pinned == hub_env / "ngc" / NAME / "1.0.0" / FILE and pinned.read_bytes() == old
    hub.pull(NAME)
    listed = {(m.name, m.revision) for m in hub.cached_models()}
    assert listed == {(NAME, "1.21.0"), (f"{NAME}@1.0.0", "1.0.0")}


def test_refresh_downloads_again(ngc: FakeNGC) -> None:
    _, path = serve(ngc)
    hub.pull(NAME)
    ngc.files[path] = newer = make_nemo(seed=4)
    assert hub.pull(NAME).read_bytes() != newer
    assert hub.pull(NAME, refresh=True).read_bytes() == newer


def test_concurrent_pulls_download_once(ngc: FakeNGC) -> None:
    data, _ = serve(ngc)
    ngc.misbehave[FILE] = Misbehaviour(slow_s=0.02)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(hub.pull(NAME))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len(set(results)) == 1 and results[0].read_bytes() == data
    assert ngc.count("GET", S3_GET) == 1


def test_legacy_quartznet_name(ngc: FakeNGC, hub_env: Path) -> None:
    data, path = serve(ngc, "QuartzNet15x5Base-En")
    assert path == "nvidia/nemospeechmodels/versions/1.0.0a5/files/QuartzNet15x5Base-En.nemo"
    got = hub.resolve_pretrained("QuartzNet15x5Base-En")
    assert got == hub_env / "ngc" / "QuartzNet15x5Base-En" / "1.0.0a5" / "QuartzNet15x5Base-En.nemo"
    assert got.read_bytes() == data


def test_location_helpers() -> None:
    url = "https://api.ngc.nvidia.com/v2/models/nvidia/nemo/x/versions/1.2/files/x.nemo"
    assert hub_ngc.version_and_file(url) == ("1.2", "x.nemo")
    assert hub_ngc.with_version(url, "2.0").endswith("/versions/2.0/files/x.nemo")
