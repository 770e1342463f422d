#!/usr/bin/env python
"""Long audio: peak RSS and speed of full attention, local attention and chunked encoding (models/long_audio.py).

    .venv/bin/python bench/long_audio.py                    # 110M FastConformer, 10 min and 1 h, CPU
    .venv/bin/python bench/long_audio.py --quick            # tiny fixture model, 30 s and 3 min (< 1 min)
    .venv/bin/python bench/long_audio.py --seconds 600 --strategies chunked \\
        --chunked 30:5:5,20:5:5,10:2:2                      # a sweep of chunk:left:right seconds

Every (duration, strategy) runs in its own child process, so peak RSS (VmHWM) is that strategy's own; the
child restores the model, builds the audio (espeak sentences with pauses, bench/make_audio.long_clip), then
times one ``transcribe()``. Full attention is skipped above --full-max-s (its O(T²) scores do not fit: 1 h
of a FastConformer is 45 000 frames, 8 heads × 45 000² × 4 B = 65 GB per score matrix). Tokens are compared
with the full-attention run of the same duration where there is one (random-weight models: this measures how
much of the full-context output a strategy reproduces, not accuracy).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common

QUICK_SECONDS = (30.0, 180.0)
SECONDS = (600.0, 3600.0)


def child(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from bench.make_audio import long_clip
    from models import ASRModel
    from models import long_audio as la

    out: dict[str, Any] = {"strategy": args.strategy, "seconds": args.seconds, "config": args.config}
    threads = common.set_threads(args.threads)
    model = ASRModel.restore_from(args.model, map_location=common.pick_device(args.device))
    out["after_load_mb"] = common.proc_status_mb()["VmRSS"]
    audio = long_clip(args.seconds, np.random.default_rng(0))
    out["with_audio_mb"] = common.proc_status_mb()["VmRSS"]
    options = la.LongAudioOptions(args.strategy)
    if args.config:  # chunk:left:right[:window_batch]
        chunk, left, right, *batch = (float(x) for x in args.config.split(":"))
        options = la.LongAudioOptions(args.strategy, chunk_s=chunk, left_context_s=left, right_context_s=right,
                                      window_batch=int(batch[0]) if batch else options.window_batch)
    encode_s = _time_encode(la)
    t0, cpu0 = time.perf_counter(), time.process_time()
    hyp = model.transcribe([audio], return_hypotheses=True, long_audio=options, verbose=False)[0]
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    out.update(wall_s=round(wall, 2), cpu_s=round(cpu, 2), encode_s=round(encode_s[0], 2), decode_s=round(wall - encode_s[0], 2),
               rtfx=round(args.seconds / wall, 2), used=hyp.strategy, tokens=hyp.tokens, threads=threads,
               peak_mb=common.proc_status_mb()["VmHWM"], options=repr(options))
    return out


def _time_encode(la: Any) -> list[float]:
    """Accumulates the time spent in ``long_audio.encode`` (features + encoder) into the returned cell."""
    spent, inner = [0.0], la.encode

    def timed(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t0

    la.encode = timed
    return spent


def spawn(args: argparse.Namespace, model: Path, seconds: float, strategy: str, config: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--model", str(model), "--device",
           args.device, "--seconds", str(seconds), "--strategy", strategy, "--config", config]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": str(common.REPO)}
    with common.LoadMonitor() as monitor:
        p = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=args.timeout)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            return {**json.loads(line), "load": monitor.summary()}
    return {"strategy": strategy, "seconds": seconds, "config": config, "load": monitor.summary(),
            "error": f"exit {p.returncode}: {p.stderr[-600:]}"}


def agreement(a: list[int], b: list[int]) -> float:
    return round(difflib.SequenceMatcher(None, a, b, autojunk=False).ratio(), 3)


def runs(args: argparse.Namespace) -> list[tuple[float, str, str]]:
    seconds = [float(s) for s in args.seconds.split(",")] if args.seconds else (
        QUICK_SECONDS if args.quick else SECONDS)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    configs = [c.strip() for c in args.chunked.split(",") if c.strip()] if args.chunked else [""]
    out = []
    for sec in seconds:
        for strategy in strategies:
            if strategy == "full" and sec > args.full_max_s:
                print(f"  skipping full attention at {sec:.0f} s (> --full-max-s {args.full_max_s:.0f})")
                continue
            out += [(sec, strategy, c) for c in (configs if strategy == "chunked" else [""])]
    return out


def report(results: list[dict[str, Any]]) -> str:
    full = {r["seconds"]: r.get("tokens") for r in results if r["strategy"] == "full" and "tokens" in r}
    rows = []
    for r in results:
        ref = full.get(r["seconds"])
        agree = agreement(ref, r["tokens"]) if ref is not None and "tokens" in r else None
        rows.append([f"{r['seconds'] / 60:.1f} min", r["strategy"] + (f" {r['config']}" if r.get("config") else ""),
                     r.get("peak_mb"), r.get("after_load_mb"), r.get("wall_s"), r.get("cpu_s"), r.get("encode_s"),
                     r.get("decode_s"), r.get("rtfx"), agree, r["load"]["loadavg_mean"],
                     r["load"]["others_cores_mean"], r.get("error", "")[:60]])
        r["agreement_with_full"] = agree
    return common.table(["audio", "strategy", "peak RSS MiB", "RSS after load MiB", "wall s", "CPU s", "encode s",
                         "decode s", "RTFx", "tokens = full", "load 1m", "others' cores", "error"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(ap, quick_help="tiny fixture model at 30 s and 3 min: a smoke run in < 1 min")
    ap.add_argument("--seconds", help="comma-separated durations (default 600,3600; --quick 30,180)")
    ap.add_argument("--strategies", default="full,local_attention,chunked")
    ap.add_argument("--chunked", default="", help="chunk:left:right[:window_batch] seconds, comma-separated (default: the options' defaults)")
    ap.add_argument("--full-max-s", type=float, default=600.0, help="longest audio to try full attention on")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per child, seconds")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--strategy", help=argparse.SUPPRESS)
    ap.add_argument("--config", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.device == "auto":
        args.device = "cpu"  # this benchmark is about CPU memory; pass --device cuda explicitly for a GPU
    model = common.resolve_model(args.model, args.quick)
    if args.child:
        args.seconds = float(args.seconds)
        print(json.dumps(child(args)))
        return 0
    common.maybe_wait(args)
    info = common.machine_info(common.pick_device(args.device), args.threads)
    print(f"model {model.name}, load average {os.getloadavg()}")
    results = []
    for sec, strategy, config in runs(args):
        r = spawn(args, model, sec, strategy, config)
        results.append(r)
        shown = {k: v for k, v in r.items() if k != "tokens"}
        print(f"  {sec:.0f} s {strategy} {config}: {shown}", flush=True)
    table = report(results)
    print(table)
    data = {"benchmark": "long_audio", "machine": info, "model": str(model), "results": results,
            "table": table, "loadavg_at_end": list(os.getloadavg())}
    path = common.write_results(args.out or ("long_audio_quick" if args.quick else "long_audio"), data)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
