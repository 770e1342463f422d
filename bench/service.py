#!/usr/bin/env python
"""The service under load: `aviary serve` as a subprocess on a free 127.0.0.1 port, one preloaded model.

Measures, in one run:
  * cold start: process start -> first ``GET /ready`` 200 (median of --cold-starts fresh processes);
  * throughput (RTFx = audio seconds answered / wall seconds) and latency p50/p95/p99 under 1, 4, 16 and 64
    concurrent HTTP clients (httpx), each request one clip of the mixed set, a bounded number of requests
    per level (and a time cap), so the run always stops;
  * batching efficiency per level from the server's Prometheus ``/metrics`` (deltas of
    ``aviary_batch_size`` and ``aviary_batch_padded_audio_seconds``): mean batch size and padding waste
    = 1 - real audio seconds / padded audio seconds computed;
  * the server's peak RSS (VmHWM) after the load;
  * the in-process reference: aviary's own ``transcribe()`` best RTFx on the same clips in this process
    (before the server starts), so "service at 16 clients >= 0.85x in-process best" is judged in one run.

    .venv/bin/python bench/service.py            # 110M model
    .venv/bin/python bench/service.py --quick    # tiny fixture model, smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common
from bench.common import Clip

MODEL_NAME = "bench"
CONCURRENCY = [1, 4, 16, 64]
LEVEL_TIME_CAP_S = 240.0
READY_TIMEOUT_S = 180.0


# ---------------------------------------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command() -> list[str]:
    script = Path(sys.executable).parent / "aviary"
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "service.cli", "serve"]


class Server:
    """`aviary serve` in its own process group, stopped with SIGTERM (then SIGKILL) on exit."""

    def __init__(self, model: Path, device: str, threads: int | None, extra_env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update({"AVIARY_MODELS": f"{MODEL_NAME}={model}", "AVIARY_PRELOAD": MODEL_NAME,
                    "AVIARY_HOST": "127.0.0.1", "AVIARY_PORT": str(self.port), "AVIARY_DEVICE": device,
                    "AVIARY_LOG_LEVEL": "warning", "PYTHONPATH": str(common.REPO)})
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        env.update(extra_env or {})
        self.log_path = common.RESULTS / f"server-{self.port}.log"
        common.RESULTS.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(server_command(), env=env, cwd=str(common.REPO), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds from process start to the first /ready 200."""
        import httpx

        deadline = self.started + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.perf_counter() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}")
                try:
                    if client.get(self.url + "/ready").status_code == 200:
                        return time.perf_counter() - self.started
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
        raise TimeoutError(f"/ready not 200 within {timeout} s; see {self.log_path}")

    def memory(self) -> dict[str, float]:
        return common.proc_status_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()
        if self.log_path.exists() and self.log_path.stat().st_size == 0:
            self.log_path.unlink()

    def __enter__(self) -> Server:  # noqa: PYI034
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------

_SAMPLE = re.compile(r'^(aviary_[a-z_]+)(?:\{([^}]*)\})?\s+([-+0-9.eEinfaN]+)$')


def scrape(url: str) -> dict[str, float]:
    """The ``aviary_*`` samples of ``GET /metrics`` for our model, summed over other labels."""
    import httpx

    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, labels, value = m.groups()
        if labels and f'model="{MODEL_NAME}"' not in labels and "model=" in labels:
            continue
        if name.endswith("_bucket"):
            continue
        key = name + (f"{{{labels}}}" if labels and "outcome=" in labels else "")
        out[key] = out.get(key, 0.0) + float(value)
    return out


def batching(before: dict[str, float], after: dict[str, float], real_s: float) -> dict[str, Any]:
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    batches = d.get("aviary_batch_size_count", 0.0)
    items = d.get("aviary_batch_size_sum", 0.0)
    padded = d.get("aviary_batch_padded_audio_seconds_sum", 0.0)
    return {"batches": int(batches), "items": int(items),
            "mean_batch_size": round(items / batches, 3) if batches else None,
            "padded_audio_s": round(padded, 3), "real_audio_s": round(real_s, 3),
            "padded_over_real": round(padded / real_s, 4) if real_s else None,
            "padding_waste": round(1.0 - real_s / padded, 4) if padded else None}


# ---------------------------------------------------------------------------------------------------------
# Load generation
# ---------------------------------------------------------------------------------------------------------

async def load_level(url: str, payloads: list[tuple[str, bytes, float]], concurrency: int, requests: int,
                     time_cap: float) -> dict[str, Any]:
    """`concurrency` clients, each sending one clip per request until `requests` were sent (or time_cap)."""
    import httpx

    next_index = 0
    latencies: list[float] = []
    queue_t: list[float] = []
    infer_t: list[float] = []
    statuses: dict[str, int] = {}
    audio_done = 0.0
    deadline = time.perf_counter() + time_cap

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_index, audio_done
        while next_index < requests and time.perf_counter() < deadline:
            name, data, seconds = payloads[next_index % len(payloads)]
            next_index += 1
            t0 = time.perf_counter()
            try:
                r = await http.post(url + "/transcribe", files={"files": (name, data, "audio/wav")})
                status = str(r.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
                r = None
            statuses[status] = statuses.get(status, 0) + 1
            if r is not None and r.status_code == 200:
                latencies.append(time.perf_counter() - t0)
                audio_done += seconds
                queue_t.append(float(r.headers.get("x-queue-time", "nan")))
                infer_t.append(float(r.headers.get("x-inference-time", "nan")))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"concurrency": concurrency, "requests": sum(statuses.values()), "ok": len(latencies),
            "statuses": statuses, "wall_s": round(wall, 3), "audio_s": round(audio_done, 3),
            "rtfx": round(audio_done / wall, 3) if wall else None,
            "latency_s": {f"p{q}": round(common.percentile(latencies, q), 4) for q in (50, 95, 99)},
            "queue_time_s_p50": round(common.percentile(queue_t, 50), 4),
            "inference_time_s_p50": round(common.percentile(infer_t, 50), 4)}


def requests_for(concurrency: int, n_clips: int, quick: bool) -> int:
    if quick:
        return max(4, concurrency)
    # >= 6 passes over the mixed set and >= 6 requests per client: with fewer, the ramp-up and the last, half-full
    # batches are a large share of the wall time (16 clients x 2 requests read 27 and 21 RTFx in two runs)
    return max(6 * n_clips, 6 * concurrency)


# ---------------------------------------------------------------------------------------------------------
# In-process reference
# ---------------------------------------------------------------------------------------------------------

def inprocess_best(model_path: Path, device: Any, clips: list[Clip], batch_sizes: list[int],
                   repeats: int) -> dict[str, Any]:
    from models import ASRModel

    model = ASRModel.restore_from(str(model_path), map_location=device)
    files = [str(c.path) for c in clips]
    audio_s = sum(c.seconds for c in clips)
    per_bs: dict[int, float] = {}
    for bs in batch_sizes:
        model.transcribe(files, batch_size=bs, verbose=False)
        walls = []
        for _ in range(repeats):
            common.sync(device)
            t0 = time.perf_counter()
            model.transcribe(files, batch_size=bs, verbose=False)
            common.sync(device)
            walls.append(time.perf_counter() - t0)
        per_bs[bs] = round(audio_s / common.median(walls), 3)
    del model
    gc.collect()
    best = max(per_bs, key=per_bs.get)
    return {"rtfx_by_batch_size": per_bs, "best_batch_size": best, "best_rtfx": per_bs[best]}


# ---------------------------------------------------------------------------------------------------------

def cold_starts(model: Path, device: str, threads: int | None, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        with Server(model, device, threads) as srv:
            secs = srv.wait_ready()
            out.append({"ready_s": round(secs, 3), "rss_mb": srv.memory()})
        print(f"  cold start: /ready after {secs:.2f} s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(ap)
    ap.add_argument("--concurrency", type=int, nargs="+", default=None)
    ap.add_argument("--requests", type=int, default=None, help="requests per level (default max(6 x clips, 6 x clients))")
    ap.add_argument("--cold-starts", type=int, default=None, help="fresh processes timed to /ready (default 3)")
    ap.add_argument("--no-inprocess", action="store_true", help="skip the in-process reference")
    ap.add_argument("--repeats", type=int, default=None, help="in-process timed passes per batch size (3)")
    ap.add_argument("--time-cap", type=float, default=LEVEL_TIME_CAP_S, help="seconds per level at most")
    args = ap.parse_args(argv)

    levels = args.concurrency or ([1, 4] if args.quick else CONCURRENCY)
    n_cold = args.cold_starts if args.cold_starts is not None else (1 if args.quick else 3)
    repeats = args.repeats or (1 if args.quick else 3)
    device = common.pick_device(args.device)
    threads = common.set_threads(args.threads)
    model = common.resolve_model(args.model, args.quick)
    clips = common.audio_set("mixed", args.quick)
    payloads = [(c.path.name, c.path.read_bytes(), c.seconds) for c in clips]
    info = common.machine_info(device, threads)
    print(f"model {model.name}, {len(clips)} clips, device {device}, {threads} threads, "
          f"load {info['loadavg_at_start']}", flush=True)

    common.maybe_wait(args)
    data: dict[str, Any] = {"benchmark": "service", "machine": info, "model": str(model),
                            "clips": [[c.path.name, c.seconds] for c in clips]}
    with common.LoadMonitor() as mon:
        if not args.no_inprocess:
            data["inprocess"] = inprocess_best(model, device, clips, [1, 4] if args.quick else [1, 2, 4, 8, 16],
                                               repeats)
            print(f"in-process transcribe(): {data['inprocess']}", flush=True)
        data["cold_start"] = cold_starts(model, str(device), args.threads, n_cold)
        srv = Server(model, str(device), args.threads)
        try:
            data["ready_s"] = round(srv.wait_ready(), 3)
            data["rss_after_start_mb"] = srv.memory()
            asyncio.run(load_level(srv.url, payloads, 1, len(payloads), args.time_cap))  # warm-up pass
            levels_out = []
            for c in levels:
                n = args.requests or requests_for(c, len(payloads), args.quick)
                before = scrape(srv.url)
                r = asyncio.run(load_level(srv.url, payloads, c, n, args.time_cap))
                r["batching"] = batching(before, scrape(srv.url), r["audio_s"])
                r["server_rss_mb"] = srv.memory()
                levels_out.append(r)
                print(f"  {c:3d} clients: {r['ok']}/{r['requests']} ok, RTFx {r['rtfx']:.2f}, "
                      f"p50 {r['latency_s']['p50']:.3f} s, p99 {r['latency_s']['p99']:.3f} s, "
                      f"batch {r['batching']['mean_batch_size']}, waste {r['batching']['padding_waste']}", flush=True)
            data["levels"] = levels_out
            data["server_peak_rss_mb"] = srv.memory().get("VmHWM")
        finally:
            srv.stop()
    data["load"] = mon.summary()
    summarise(data)
    path = common.write_results(args.out or ("service_quick" if args.quick else "service"), data)
    print(f"load during run: {data['load']}\nwrote {path}")
    return 0


def summarise(data: dict[str, Any]) -> None:
    rows = []
    for r in data.get("levels", []):
        b = r["batching"]
        rows.append([r["concurrency"], f"{r['ok']}/{r['requests']}", r["rtfx"], r["latency_s"]["p50"],
                     r["latency_s"]["p95"], r["latency_s"]["p99"], b["mean_batch_size"],
                     b["padded_over_real"], b["padding_waste"]])
    print(common.table(["clients", "ok", "RTFx", "p50 s", "p95 s", "p99 s", "mean batch", "padded/real",
                        "waste"], rows, nd=3))
    cold = [c["ready_s"] for c in data.get("cold_start", [])]
    s: dict[str, Any] = {"cold_start_median_s": round(common.median(cold), 3) if cold else None,
                         "server_peak_rss_mb": data.get("server_peak_rss_mb")}
    at16 = next((r for r in data.get("levels", []) if r["concurrency"] == 16), None)
    inproc = data.get("inprocess", {}).get("best_rtfx")
    if at16 and inproc:
        s["service16_over_inprocess_best"] = round(at16["rtfx"] / inproc, 3)
    wastes = {r["concurrency"]: r["batching"]["padding_waste"] for r in data.get("levels", [])}
    s["padding_waste_by_clients"] = wastes
    s["targets"] = {
        "service16_ge_0.85_inprocess": s.get("service16_over_inprocess_best", 0) >= 0.85 if at16 and inproc else None,
        "padding_waste_le_15pct_at_16": (wastes.get(16) or 0) <= 0.15 if 16 in wastes else None,
        "cold_start_le_5s": s["cold_start_median_s"] <= 5.0 if cold else None,
    }
    data["summary"] = s
    print(f"cold start median {s['cold_start_median_s']} s; server peak RSS {s['server_peak_rss_mb']} MiB; "
          f"16 clients / in-process best = {s.get('service16_over_inprocess_best')}; targets {s['targets']}")


if __name__ == "__main__":
    sys.exit(main())
