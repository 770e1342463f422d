"""Hub models and the catalog over real HTTP, against the fake Hugging Face Hub and NGC on 127.0.0.1:
downloads on first use (once), the cache, offline operation, load/unload endpoints, API keys, ``aviary pull``.

Models are EchoBackends (the factory records the local path the pool fetched) except in the one test that
serves a real fixture checkpoint downloaded from the fake hub.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import constants as hf_constants
from service_helpers import FIXTURE_AUDIO, EchoFactory, Server, echo_settings, run_server, wav

from models import catalog, hub_ngc
from service.pool import ModelSpec
from service.pool.echo import EchoBackend, echo_text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))
from fake_hubs import FakeHFHub, FakeNGC, Misbehaviour, free_port, make_nemo

pytestmark = pytest.mark.integration
HUB_ENV = ("HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "AVIARY_OFFLINE", "HF_HOME",
           "HF_HUB_CACHE", "AVIARY_NGC_ENDPOINT")
PARAKEET = "parakeet-tdt-0.6b-v2"  # a Hugging Face catalog entry (alias nvidia/parakeet-tdt-0.6b-v2)
CONFORMER = "stt_en_conformer_ctc_small"  # an NGC catalog entry


@dataclass
class HubFactory(EchoFactory):
    """EchoBackends that remember the local checkpoint path the pool handed them."""

    locations: dict[str, str] = field(default_factory=dict)

    def __call__(self, spec: ModelSpec, device: str) -> EchoBackend:
        self.locations[spec.name] = spec.location
        return super().__call__(spec, device)


@pytest.fixture(scope="module")
def hubs() -> Iterator[tuple[FakeHFHub, FakeNGC]]:
    hf, ngc = FakeHFHub(), FakeNGC()
    hf.start()
    ngc.start()
    yield hf, ngc
    hf.stop()
    ngc.stop()


@pytest.fixture
def hub_env(hubs: tuple[FakeHFHub, FakeNGC], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Both fake hubs, empty; a private cache; nothing inherited from the machine. Returns the cache dir."""
    for server in hubs:
        server.reset()
    for var in HUB_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AVIARY_CACHE_DIR", str(tmp_path / "unused"))  # the setting must win over this
    monkeypatch.setenv("HF_ENDPOINT", hubs[0].url)
    monkeypatch.setenv("AVIARY_NGC_ENDPOINT", hubs[1].url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setattr(hub_ngc, "RETRY_WAIT_S", 0.0)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "cache"


@pytest.fixture
def hf(hubs: tuple[FakeHFHub, FakeNGC], hub_env: Path) -> FakeHFHub:
    return hubs[0]


@pytest.fixture
def ngc(hubs: tuple[FakeHFHub, FakeNGC], hub_env: Path) -> FakeNGC:
    return hubs[1]


@pytest.fixture
def serve_hub(serve: Callable[..., Server], hub_env: Path) -> Callable[..., Server]:
    """An echo server with the catalog on and the test's cache: ``serve_hub(**settings_overrides)``."""

    def start(factory: EchoFactory | None = None, **overrides: Any) -> Server:
        return serve(factory or HubFactory(), catalog=True, cache_dir=hub_env, **overrides)

    return start


def publish_parakeet(hf: FakeHFHub, **misbehaviour: Any) -> bytes:
    data = make_nemo(seed=1)
    hf.add_commit(f"nvidia/{PARAKEET}", {f"{PARAKEET}.nemo": data})
    if misbehaviour:
        hf.misbehave[f"{PARAKEET}.nemo"] = Misbehaviour(**misbehaviour)
    return data


def publish_conformer(ngc: FakeNGC, **misbehaviour: Any) -> bytes:
    path = catalog.find(CONFORMER).location.split("/v2/models/", 1)[1]  # type: ignore[union-attr]
    ngc.files[path] = data = make_nemo(seed=2)
    if misbehaviour:
        ngc.misbehave[path.rsplit("/", 1)[-1]] = Misbehaviour(**misbehaviour)
    return data


def card(server: Server, name: str) -> dict[str, Any]:
    cards = {c["name"]: c for c in server.client.get("/models").json()["models"]}
    return cards[name]


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    message: str = response.json()["error"]["message"]
    return message


def transcribe(server: Server, model: str, headers: dict[str, str] | None = None) -> httpx.Response:
    files = {"files": ("a.wav", wav(0.5), "audio/wav")}
    return server.client.post("/transcribe", files=files, data={"model": model}, headers=headers)


# -- the catalog, downloads and the cache ------------------------------------------------------------------


def test_listing_shows_the_catalog_and_never_touches_the_network(hf: FakeHFHub,
                                                                 serve_hub: Callable[..., Server]) -> None:
    server = serve_hub()
    body = server.client.get("/models").json()
    names = [c["name"] for c in body["models"]]
    assert names[:4] == ["broken", "echo", "echo8k", "rnnt"] and body["default"] == "echo"  # configured first
    parakeet = card(server, PARAKEET)
    assert parakeet["source"] == "pretrained" and parakeet["hub"] == "hf" and parakeet["location"] == PARAKEET
    assert parakeet["cached"] is False and parakeet["loaded"] is False and parakeet["languages"] == ["en"]
    assert parakeet["architecture"].endswith("EncDecRNNTBPEModel") and "Parakeet" in parakeet["description"]
    assert card(server, CONFORMER)["hub"] == "ngc" and card(server, "echo")["cached"] is True
    assert hf.requests == []


def test_first_use_downloads_once_for_concurrent_requests_then_hits_the_cache(
    hf: FakeHFHub, serve_hub: Callable[..., Server], hub_env: Path
) -> None:
    data = publish_parakeet(hf, slow_s=0.05)  # slow enough for all requests to wait on one download
    factory = HubFactory()
    server = serve_hub(factory)

    async def many() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            files = {"files": ("a.wav", wav(0.5), "audio/wav")}
            return await asyncio.gather(*(
                http.post("/transcribe", files=files, data={"model": name})
                for name in [PARAKEET, f"nvidia/{PARAKEET}"] * 3  # by name and by alias: the same model
            ))

    for response in asyncio.run(many()):
        assert response.status_code == 200, response.text
        assert response.json()["model"] == PARAKEET and response.json()["results"][0]["text"] == echo_text(0.5)
    assert hf.count("GET", r"^/cdn/") == 1
    local = Path(factory.locations[PARAKEET])
    assert local.is_relative_to(hub_env) and local.read_bytes() == data  # AVIARY_CACHE_DIR came from the setting
    assert card(server, PARAKEET)["cached"] is True and card(server, PARAKEET)["loaded"] is True
    before = len(hf.requests)
    server.client.delete(f"/models/{PARAKEET}")
    assert transcribe(server, PARAKEET).status_code == 200  # loads again, from the cache
    assert len(hf.requests) == before


def test_load_endpoint_downloads_and_delete_frees_the_model(ngc: FakeNGC, serve_hub: Callable[..., Server]) -> None:
    data = publish_conformer(ngc)
    factory = HubFactory()
    server = serve_hub(factory)
    response = server.client.post(f"/models/{CONFORMER}/load")
    assert response.status_code == 200, response.text
    loaded = response.json()
    assert loaded["name"] == CONFORMER and loaded["loaded"] and loaded["cached"] and loaded["device"] == "cpu"
    assert loaded["architecture"] == "service.pool.echo.EchoBackend"  # the loaded model's own report wins
    assert Path(factory.locations[CONFORMER]).read_bytes() == data and ngc.count("GET", r"^/s3/") == 1
    backend = factory.backends[CONFORMER]
    assert backend.warmed and CONFORMER in server.engine.pool.loaded()

    response = server.client.delete(f"/models/{CONFORMER}")
    assert response.status_code == 200 and response.json() == {"name": CONFORMER, "unloaded": True}
    assert backend.closed and CONFORMER not in server.engine.pool.loaded()
    assert server.engine.batcher.worker(CONFORMER) is None
    assert card(server, CONFORMER)["loaded"] is False and card(server, CONFORMER)["cached"] is True
    again = server.client.delete(f"/models/{CONFORMER}")  # not loaded: a no-op, not an error
    assert again.status_code == 200 and again.json() == {"name": CONFORMER, "unloaded": False}
    assert "did you mean" in error_of(server.client.delete("/models/stt_en_conformer_ctc_smal"), 404,
                                      "model_not_found")


def test_delete_of_a_model_in_use_is_409(serve: Callable[..., Server]) -> None:
    server = serve(EchoFactory({"seconds_per_second": 1.0}))
    assert server.client.post("/models/echo/load", params={"pin": "true"}).json()["loaded"] is True
    assert server.engine.pool.status("echo")["pinned"] is True
    slow = threading.Thread(target=lambda: transcribe(server, "echo"))
    slow.start()
    try:
        for _ in range(200):
            if server.engine.pool.status("echo")["leases"]:
                break
            threading.Event().wait(0.01)
        message = error_of(server.client.delete("/models/echo"), 409, "model_busy")
        assert "in use" in message
    finally:
        slow.join()
    assert server.client.delete("/models/echo").json() == {"name": "echo", "unloaded": True}
    assert server.engine.pool.status("echo")["pinned"] is False


def test_cached_model_loads_without_any_request(hf: FakeHFHub, serve_hub: Callable[..., Server],
                                                hub_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models import hub

    publish_parakeet(hf)
    monkeypatch.setenv("AVIARY_CACHE_DIR", str(hub_env))
    hub.pull(PARAKEET)
    hf.reset()  # the hub forgets the repo: any request now would fail
    for allow in (True, False):
        server = serve_hub(allow_downloads=allow)
        assert card(server, PARAKEET)["cached"] is True
        assert server.client.post(f"/models/nvidia/{PARAKEET}/load").status_code == 200
        assert transcribe(server, PARAKEET).status_code == 200
    assert hf.requests == []


def test_offline_without_cache_is_503_with_the_pre_download_hint(
    hf: FakeHFHub, serve_hub: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_parakeet(hf)
    server = serve_hub(allow_downloads=False)
    message = error_of(transcribe(server, PARAKEET), 503, "hub_unavailable")
    assert "AVIARY_ALLOW_DOWNLOADS=false" in message and f"aviary pull {PARAKEET}" in message
    assert error_of(server.client.post(f"/models/{PARAKEET}/load"), 503, "hub_unavailable") == message
    assert hf.requests == [] and card(server, PARAKEET)["loaded"] is False

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # downloads allowed, hub unreachable
    server = serve_hub()
    message = error_of(transcribe(server, PARAKEET), 503, "hub_unavailable")
    assert "cannot be reached" in message and f"aviary pull {PARAKEET}" in message


def test_hub_failures_map_onto_the_taxonomy(hf: FakeHFHub, ngc: FakeNGC, serve_hub: Callable[..., Server]) -> None:
    hf.add_commit("testorg/gated", {"gated.nemo": make_nemo()}, gated=True)
    publish_conformer(ngc, truncate_to=1000)
    models = {"gated": "testorg/gated", "missing": "testorg/missing"}
    server = serve_hub(models=models)
    assert "HF_TOKEN" in error_of(transcribe(server, "gated"), 503, "hub_access_denied")
    assert "no Hugging Face repo" in error_of(transcribe(server, "missing"), 404, "model_not_found")
    message = error_of(server.client.post(f"/models/{CONFORMER}/load"), 502, "download_failed")
    assert "nothing was kept in the cache" in message
    assert card(server, CONFORMER)["cached"] is False


def test_unknown_names_are_404_with_the_closest_names(serve_hub: Callable[..., Server]) -> None:
    server = serve_hub()
    message = error_of(transcribe(server, "parakeet-tdt-0.6b"), 404, "model_not_found")
    assert "did you mean: parakeet-tdt-0.6b-v3, parakeet-tdt-0.6b-v2" in message
    assert "available models: broken, echo, echo8k, rnnt" in message
    assert "did you mean" in error_of(server.client.post("/models/canary-1b-flsh/load"), 404, "model_not_found")
    assert transcribe(server, "org/any-repo").status_code == 404  # requests name the catalog, not any repo


# -- API keys ------------------------------------------------------------------------------------------------


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_api_keys_guard_transcription_and_the_admin_key_guards_management(serve: Callable[..., Server]) -> None:
    server = serve(api_keys="user-1,user-2", admin_key="admin-key")
    missing = transcribe(server, "echo")
    error_of(missing, 401, "invalid_api_key")
    assert missing.headers["www-authenticate"] == 'Bearer realm="aviary"'
    wrong = transcribe(server, "echo", bearer("user-3"))
    assert "invalid API key" in error_of(wrong, 401, "invalid_api_key")
    assert wrong.headers["www-authenticate"] == 'Bearer realm="aviary", error="invalid_token"'
    for key in ("user-2", "admin-key"):
        assert transcribe(server, "echo", bearer(key)).status_code == 200
    error_of(server.client.get("/models"), 401, "invalid_api_key")
    assert server.client.get("/models", headers=bearer("user-1")).status_code == 200
    for path in ("/health", "/ready", "/metrics", "/docs", "/openapi.json"):
        assert server.client.get(path).status_code == 200, path

    load = "/models/echo8k/load"
    error_of(server.client.post(load), 401, "invalid_api_key")
    error_of(server.client.post(load, headers=bearer("nope")), 401, "invalid_api_key")
    assert "AVIARY_ADMIN_KEY" in error_of(server.client.post(load, headers=bearer("user-1")), 403,
                                          "permission_denied")
    error_of(server.client.delete("/models/echo8k", headers=bearer("user-1")), 403, "permission_denied")
    assert server.client.post(load, headers=bearer("admin-key")).status_code == 200
    assert server.client.delete("/models/echo8k", headers=bearer("admin-key")).json()["unloaded"] is True
    error_of(server.client.post(load, headers={"Authorization": "Basic admin-key"}), 401, "invalid_api_key")


def test_without_an_admin_key_management_is_guarded_like_transcription(serve: Callable[..., Server]) -> None:
    server = serve(api_keys="user-1")
    error_of(server.client.post("/models/echo/load"), 401, "invalid_api_key")
    assert server.client.post("/models/echo/load", headers=bearer("user-1")).status_code == 200
    server = serve(admin_key="admin-key")  # an admin key alone: transcription stays open
    assert transcribe(server, "echo").status_code == 200
    error_of(server.client.delete("/models/echo"), 401, "invalid_api_key")


# -- the command line ---------------------------------------------------------------------------------------


def test_aviary_pull_and_models(hf: FakeHFHub, ngc: FakeNGC, hub_env: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main

    monkeypatch.setenv("AVIARY_DEVICE", "cpu")
    data = publish_parakeet(hf)
    publish_conformer(ngc)
    cache = ["--cache-dir", str(hub_env)]
    assert main(["pull", f"nvidia/{PARAKEET}", "conf", "--models", f"conf={CONFORMER}", *cache]) == 0
    paths = [Path(line) for line in capsys.readouterr().out.splitlines()]
    assert len(paths) == 2 and all(p.is_relative_to(hub_env) for p in paths) and paths[0].read_bytes() == data

    assert main(["pull", "parakeet-tdt-0.6b", PARAKEET, *cache]) == 1  # the bad name fails, the good one is done
    out, err = capsys.readouterr()
    assert Path(out.strip()) == paths[0] and "Did you mean: parakeet-tdt-0.6b-v3" in err

    assert main(["models", "--json", *cache]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["cache_dir"] == str(hub_env)
    assert {(m["name"], m["source"]) for m in listing["cache"]} == {(PARAKEET, "hf"), (CONFORMER, "ngc")}
    cards = {c["name"]: c for c in listing["models"]}
    assert cards[PARAKEET]["cached"] and not cards["canary-1b"]["cached"]
    assert main(["models", *cache]) == 0
    text = capsys.readouterr().out
    assert f"+ {PARAKEET}" in text and f"cache ({hub_env}):" in text

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    assert main(["pull", "canary-1b-flash", *cache]) == 1
    assert "cannot be reached" in capsys.readouterr().err


# -- the real runtime, fetched from the fake hub ------------------------------------------------------------


FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "models" / "fastconformer_ctc_bpe.nemo"


@pytest.mark.skipif(not FIXTURE.exists(), reason="fixture checkpoint not available")
def test_runtime_serves_a_checkpoint_downloaded_from_the_hub(hf: FakeHFHub, hub_env: Path,
                                                             echo_model_dir: Path) -> None:
    hf.add_commit(f"nvidia/{PARAKEET}", {f"{PARAKEET}.nemo": FIXTURE.read_bytes()})
    settings = echo_settings(echo_model_dir, catalog=True, cache_dir=hub_env, backend="runtime")
    with run_server(settings, None) as server:
        check_runtime_transcript(server)


def check_runtime_transcript(server: Server) -> None:
    from models import ASRModel

    audio = FIXTURE_AUDIO / "s1_en_us.wav"
    response = server.client.post("/transcribe", files={"files": ("s1.wav", audio.read_bytes(), "audio/wav")},
                                  data={"model": f"nvidia/{PARAKEET}"})
    assert response.status_code == 200, response.text
    expected = ASRModel.restore_from(FIXTURE, map_location="cpu").transcribe([str(audio)], verbose=False)[0]
    assert response.json()["results"][0]["text"] == expected
    assert card(server, PARAKEET)["architecture"].endswith("EncDecCTCModelBPE")
