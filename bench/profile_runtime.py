#!/usr/bin/env python
"""Where aviary's ``transcribe()`` spends its time: audio loading, features, encoder, the decoding loop
(prediction network, joint, projections, the loop's own tensor bookkeeping), detokenisation, the rest.

    .venv/bin/python bench/profile_runtime.py                    # 110M, mixed set, batch 1 and 8
    .venv/bin/python bench/profile_runtime.py --quick

Two views:
  1. stage timers: the runtime's own functions wrapped with perf_counter (instance attributes, nothing in
     models/ is changed), summed over --repeats passes of transcribe() over the mixed set;
  2. torch.profiler: the top operators by self CPU time for one pass (bench/results/profile_ops_bsN.txt).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common


class Timers:
    def __init__(self, device: Any):
        self.device = device
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                common.sync(self.device)
                self.total[name] += time.perf_counter() - t0
                self.calls[name] += 1
        return timed

    def patch(self, obj: Any, attr: str, name: str) -> None:
        setattr(obj, attr, self.wrap(name, getattr(obj, attr)))

    def reset(self) -> None:
        self.total.clear()
        self.calls.clear()


def instrument(model: Any, timers: Timers) -> Any:
    """Wrap the runtime's stages on this model instance (and the module-level loaders it calls)."""
    import models.asr_model as am

    am.load_item = timers.wrap("load audio (read + resample)", am.load_item)
    am.collate = timers.wrap("collate (pad batch)", am.collate)
    timers.patch(model.preprocessor, "forward", "features (mel)")
    timers.patch(model.encoder, "forward", "encoder")
    if hasattr(model.encoder, "forward_groups"):  # packed batches (models/encoders/packing.py)
        timers.patch(model.encoder, "forward_groups", "encoder")
    if hasattr(model.encoder, "pre_encode"):
        timers.patch(model.encoder.pre_encode, "forward", "encoder: subsampling (part of encoder)")
    path = model._path(None)
    if hasattr(path, "_decode"):
        timers.patch(path, "_decode", "decoding (greedy loop, total)")
        timers.patch(path.predictor, "step", "  prediction net step")
        timers.patch(path.joint, "project_encoder", "  joint: project encoder")
        timers.patch(path.joint, "project_prediction", "  joint: project prediction")
        timers.patch(path.joint, "joint_after_projection", "  joint: joint net")
    if hasattr(path, "tokenizer"):
        timers.patch(path.tokenizer, "decode", "detokenise")
    # every call of the decoding path (Hypothesis objects etc.) is inside transcribe_items
    timers.patch(model, "transcribe_items", "transcribe_items (batch total)")
    return path


def stage_profile(model: Any, files: list[str], audio_s: float, batch_size: int, repeats: int,
                  timers: Timers) -> dict[str, Any]:
    model.transcribe(files, batch_size=batch_size, verbose=False)  # warm-up
    timers.reset()
    t0 = time.perf_counter()
    for _ in range(repeats):
        model.transcribe(files, batch_size=batch_size, verbose=False)
    wall = time.perf_counter() - t0
    tot = dict(timers.total)
    stages = {k: {"seconds": round(v / repeats, 4), "share": round(v / wall, 4),
                  "calls_per_pass": timers.calls[k] // repeats} for k, v in tot.items()}
    dec = tot.get("decoding (greedy loop, total)", 0.0)
    inner = sum(v for k, v in tot.items() if k.startswith("  "))
    derived = {
        "decoding loop bookkeeping (decoding - predictor - joint)": dec - inner,
        "hypotheses + rest of transcribe_items": tot.get("transcribe_items (batch total)", 0.0)
        - tot.get("collate (pad batch)", 0.0) - tot.get("features (mel)", 0.0) - tot.get("encoder", 0.0) - dec,
        "outside transcribe_items (loading, sorting, ...)": wall - tot.get("transcribe_items (batch total)", 0.0),
    }
    for k, v in derived.items():
        stages[k] = {"seconds": round(v / repeats, 4), "share": round(v / wall, 4), "calls_per_pass": None}
    return {"batch_size": batch_size, "wall_per_pass_s": round(wall / repeats, 4),
            "rtfx": round(audio_s * repeats / wall, 3), "stages": stages}


def op_profile(model: Any, files: list[str], batch_size: int, top: int) -> tuple[str, list[dict[str, Any]]]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts, record_shapes=False) as prof:
        model.transcribe(files, batch_size=batch_size, verbose=False)
    ka = prof.key_averages()
    text = ka.table(sort_by="self_cpu_time_total", row_limit=top)
    total = sum(e.self_cpu_time_total for e in ka) or 1.0
    ops = sorted(ka, key=lambda e: -e.self_cpu_time_total)[:top]
    rows = [{"op": e.key, "calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 2),
             "share": round(e.self_cpu_time_total / total, 4)} for e in ops]
    return text, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(ap)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default 1 8")
    ap.add_argument("--repeats", type=int, default=None, help="passes per batch size (default 3)")
    ap.add_argument("--top", type=int, default=25, help="operators listed by torch.profiler")
    args = ap.parse_args(argv)

    from models import ASRModel

    device = common.pick_device(args.device)
    threads = common.set_threads(args.threads)
    model_path = common.resolve_model(args.model, args.quick)
    clips = common.audio_set("mixed", args.quick)
    files = [str(c.path) for c in clips]
    audio_s = sum(c.seconds for c in clips)
    batch_sizes = args.batch_sizes or ([4] if args.quick else [1, 8])
    repeats = args.repeats or (1 if args.quick else 3)
    info = common.machine_info(device, threads)
    print(f"model {model_path.name}, device {device}, {threads} threads, load {info['loadavg_at_start']}", flush=True)

    model = ASRModel.restore_from(str(model_path), map_location=device)
    timers = Timers(device)
    instrument(model, timers)
    common.maybe_wait(args)
    out: dict[str, Any] = {"benchmark": "profile_runtime", "machine": info, "model": str(model_path),
                           "audio_seconds": audio_s, "stage_profiles": [], "top_ops": {}}
    with common.LoadMonitor() as mon:
        for bs in batch_sizes:
            p = stage_profile(model, files, audio_s, bs, repeats, timers)
            out["stage_profiles"].append(p)
            rows = [[k, v["seconds"], v["share"] * 100, v["calls_per_pass"]] for k, v in p["stages"].items()]
            print(f"\nbatch {bs}: {p['wall_per_pass_s']:.3f} s per pass, RTFx {p['rtfx']:.2f}")
            print(common.table(["stage", "s / pass", "% of wall", "calls / pass"], rows, nd=3))
        for bs in batch_sizes:
            text, rows = op_profile(model, files, bs, args.top)
            out["top_ops"][str(bs)] = rows
            common.RESULTS.mkdir(parents=True, exist_ok=True)
            name = f"profile_ops_bs{bs}{'_quick' if args.quick else ''}.txt"
            (common.RESULTS / name).write_text(text)
            print(f"\ntorch.profiler, batch {bs} (top {args.top} by self CPU; full table in bench/results/{name}):")
            print(common.table(["op", "calls", "self CPU ms", "share %"],
                               [[r["op"], r["calls"], r["self_cpu_ms"], r["share"] * 100] for r in rows[:12]]))
    out["load"] = mon.summary()
    path = common.write_results(args.out or ("profile_runtime_quick" if args.quick else "profile_runtime"), out)
    print(f"load during run: {out['load']}\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
