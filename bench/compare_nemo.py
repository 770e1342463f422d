#!/usr/bin/env python
"""Runtime throughput: aviary's ``transcribe()`` against NeMo's, same checkpoint, same audio, same process,
same torch thread count, at several batch sizes (RTFx = audio seconds / wall seconds; medians of --repeats).

Runs in the NeMo virtualenv so both engines share one process (aviary imports from the repo):

    PYTHONPATH=/work/main /work/nemo-venv/bin/python bench/compare_nemo.py            # 110M, mixed set
    PYTHONPATH=/work/main /work/nemo-venv/bin/python bench/compare_nemo.py --quick    # smoke run
    .venv/bin/python bench/compare_nemo.py --engines aviary                           # aviary alone

Also checks that aviary's and NeMo's texts agree on every clip, at every batch size (mismatches are listed),
and records aviary's tokens per second of audio (random weights must decode realistically).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common
from bench.common import Clip

BATCH_SIZES = [1, 2, 4, 8, 16]
CLEAN_OTHERS = 0.1  # a pass is "clean" when other processes used at most this many cores meanwhile


# ---------------------------------------------------------------------------------------------------------
# Engines: load, transcribe -> list[(text, n_tokens)]
# ---------------------------------------------------------------------------------------------------------

class AviaryEngine:
    name = "aviary"

    def __init__(self, path: Path, device: Any):
        from models import ASRModel

        self.device = device
        self.model = ASRModel.restore_from(str(path), map_location=device)

    def transcribe(self, files: list[str], batch_size: int) -> list[tuple[str, int]]:
        hyps = self.model.transcribe(files, batch_size=batch_size, return_hypotheses=True, verbose=False)
        return [(h.text, len(h.y_sequence)) for h in hyps]


class NemoEngine:
    name = "nemo"

    def __init__(self, path: Path, device: Any):
        import torch
        from nemo.collections.asr.models import ASRModel as NemoASRModel
        from nemo.utils import logging as nemo_logging

        nemo_logging.setLevel(logging.ERROR)
        self.device = device
        self.model = NemoASRModel.restore_from(str(path), map_location=torch.device(device))
        self.model.eval()

    def transcribe(self, files: list[str], batch_size: int) -> list[tuple[str, int]]:
        out = self.model.transcribe(files, batch_size=batch_size, return_hypotheses=True, num_workers=0,
                                    verbose=False)
        self.model.eval()  # NeMo leaves encoder/decoder/joint in train mode after transcribe()
        if isinstance(out, tuple):
            out = out[0]
        return [(h.text, len(h.y_sequence)) for h in out]


def load_engines(names: list[str], path: Path, device: Any) -> list[Any]:
    classes = {"aviary": AviaryEngine, "nemo": NemoEngine}
    engines = []
    for name in names:
        t0 = time.perf_counter()
        engines.append(classes[name](path, device))
        print(f"loaded {name} in {time.perf_counter() - t0:.1f} s", flush=True)
    return engines


# ---------------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------------

def timed(engine: Any, files: list[str], batch_size: int) -> tuple[float, float, list[tuple[str, int]]]:
    """(wall seconds, cores used by other processes meanwhile, outputs)."""
    common.sync(engine.device)
    busy0, own0 = common.system_cpu()[0], common.tree_cpu()
    t0 = time.perf_counter()
    out = engine.transcribe(files, batch_size)
    common.sync(engine.device)
    wall = time.perf_counter() - t0
    others = max((common.system_cpu()[0] - busy0) - (common.tree_cpu() - own0), 0.0) / wall
    return wall, others, out


def run(engines: list[Any], clips: list[Clip], batch_sizes: list[int], repeats: int) -> dict[str, Any]:
    files = [str(c.path) for c in clips]
    audio_s = sum(c.seconds for c in clips)
    for e in engines:  # warm-up: every batch size once (first-call costs, allocator growth)
        for bs in batch_sizes:
            e.transcribe(files, bs)
    walls: dict[tuple[str, int], list[float]] = {}
    others: dict[tuple[str, int], list[float]] = {}
    outputs: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for rep in range(repeats):  # interleaved, so load drift hits every engine and batch size alike
        for bs in batch_sizes:
            for e in engines:
                gc.collect()
                wall, busy, out = timed(e, files, bs)
                walls.setdefault((e.name, bs), []).append(wall)
                others.setdefault((e.name, bs), []).append(busy)
                outputs.setdefault((e.name, bs), out)
        print(f"  repeat {rep + 1}/{repeats}: " + ", ".join(
            f"{n}@{bs} {audio_s / w[-1]:.1f}" for (n, bs), w in walls.items()), flush=True)
    rows = {}
    for (name, bs), w in walls.items():
        rtfx = [audio_s / x for x in w]
        busy = others[(name, bs)]
        clean = [r for r, b in zip(rtfx, busy) if b <= CLEAN_OTHERS]
        rows.setdefault(name, {})[bs] = {
            # the median of the passes during which other processes used <= CLEAN_OTHERS cores (when at
            # least two were), else of all passes; `clean_passes` says which
            "rtfx_median": round(common.median(clean if len(clean) >= 2 else rtfx), 3),
            "clean_passes": len(clean), "rtfx_median_all": round(common.median(rtfx), 3),
            "rtfx_max": round(max(rtfx), 3), "rtfx_all": [round(r, 3) for r in rtfx],
            "others_cores": [round(b, 3) for b in busy], "wall_median_s": round(common.median(w), 4)}
    return {"audio_seconds": round(audio_s, 3), "engines": rows, "outputs": outputs}


def agreement(outputs: dict[tuple[str, int], list[tuple[str, int]]], clips: list[Clip],
              batch_sizes: list[int]) -> dict[str, Any]:
    """aviary vs NeMo per clip and batch size, and each engine's batch invariance."""
    names = [c.path.name for c in clips]
    mismatches = []
    for bs in batch_sizes:
        a, n = outputs.get(("aviary", bs)), outputs.get(("nemo", bs))
        if a is None or n is None:
            continue
        for name, (ta, _), (tn, _) in zip(names, a, n):
            if ta != tn:
                mismatches.append({"batch_size": bs, "clip": name, "aviary": ta, "nemo": tn})
    invariance = {}
    for engine in ("aviary", "nemo"):
        texts = [[t for t, _ in outputs[(engine, bs)]] for bs in batch_sizes if (engine, bs) in outputs]
        if texts:
            invariance[engine] = sum(any(t[i] != texts[0][i] for t in texts) for i in range(len(names)))
    compared = sum(1 for bs in batch_sizes if ("aviary", bs) in outputs and ("nemo", bs) in outputs)
    return {"compared_pairs": compared * len(names), "mismatches": mismatches,
            "clips_varying_with_batch_size": invariance}


def tokens_per_second(outputs: dict[tuple[str, int], list[tuple[str, int]]], engine: str, bs: int,
                      clips: list[Clip]) -> float | None:
    out = outputs.get((engine, bs))
    if not out:
        return None
    return round(sum(n for _, n in out) / sum(c.seconds for c in clips), 3)


def summarise(res: dict[str, Any], batch_sizes: list[int]) -> dict[str, Any]:
    eng = res["engines"]
    s: dict[str, Any] = {}
    for name, rows in eng.items():
        best_bs = max(rows, key=lambda b: rows[b]["rtfx_median"])
        s[f"{name}_best"] = {"batch_size": best_bs, "rtfx": rows[best_bs]["rtfx_median"]}
    if "aviary" in eng and "nemo" in eng:
        per_bs = {bs: round(eng["aviary"][bs]["rtfx_median"] / eng["nemo"][bs]["rtfx_median"], 3)
                  for bs in batch_sizes}
        s["ratio_per_batch_size"] = per_bs
        s["ratio_best"] = round(s["aviary_best"]["rtfx"] / s["nemo_best"]["rtfx"], 3)
        s["targets"] = {"best_ratio_ge_1.8": s["ratio_best"] >= 1.8,
                        "every_batch_size_ratio_ge_1.5": all(r >= 1.5 for r in per_bs.values())}
    return s


def print_report(res: dict[str, Any], summary: dict[str, Any], agree: dict[str, Any], batch_sizes: list[int]) -> None:
    eng = res["engines"]
    headers = ["batch", *[f"{n} RTFx" for n in eng]]
    if "ratio_per_batch_size" in summary:
        headers.append("aviary/NeMo")
    rows = []
    for bs in batch_sizes:
        r: list[Any] = [bs, *[eng[n][bs]["rtfx_median"] for n in eng]]
        if "ratio_per_batch_size" in summary:
            r.append(summary["ratio_per_batch_size"][bs])
        rows.append(r)
    print(common.table(headers, rows))
    for key in ("aviary_best", "nemo_best"):
        if key in summary:
            print(f"{key}: RTFx {summary[key]['rtfx']:.2f} at batch {summary[key]['batch_size']}")
    if "ratio_best" in summary:
        print(f"best/best: {summary['ratio_best']:.2f}x; targets: {summary['targets']}")
    print(f"text agreement: {len(agree['mismatches'])} mismatches of {agree['compared_pairs']} (clip, batch) pairs; "
          f"clips whose text varies with batch size: {agree['clips_varying_with_batch_size']}")
    for m in agree["mismatches"][:10]:
        print(f"  bs {m['batch_size']} {m['clip']}: aviary {m['aviary'][:60]!r} vs NeMo {m['nemo'][:60]!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(ap)
    ap.add_argument("--engines", default="aviary,nemo", help="comma-separated: aviary, nemo")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    ap.add_argument("--repeats", type=int, default=None, help="timed passes per (engine, batch size); default 5")
    ap.add_argument("--audio-set", default="mixed", choices=["mixed", "long"])
    args = ap.parse_args(argv)

    batch_sizes = args.batch_sizes or ([1, 4] if args.quick else BATCH_SIZES)
    repeats = args.repeats or (1 if args.quick else 5)
    device = common.pick_device(args.device)
    threads = common.set_threads(args.threads)
    model = common.resolve_model(args.model, args.quick)
    clips = common.audio_set(args.audio_set, args.quick)
    info = common.machine_info(device, threads)
    print(f"model {model.name}, {len(clips)} clips / {sum(c.seconds for c in clips):.1f} s, device {device}, "
          f"{threads} threads, load {info['loadavg_at_start']}", flush=True)

    engines = load_engines([e.strip() for e in args.engines.split(",") if e.strip()], model, device)
    common.maybe_wait(args)
    with common.LoadMonitor() as mon:
        res = run(engines, clips, batch_sizes, repeats)
    agree = agreement(res["outputs"], clips, batch_sizes)
    summary = summarise(res, batch_sizes)
    best_bs = summary["aviary_best"]["batch_size"] if "aviary_best" in summary else batch_sizes[0]
    data = {
        "benchmark": "compare_nemo", "machine": info, "load": mon.summary(), "model": str(model),
        "audio_set": args.audio_set, "clips": [[c.path.name, c.seconds] for c in clips],
        "batch_sizes": batch_sizes, "repeats": repeats, "audio_seconds": res["audio_seconds"],
        "engines": res["engines"], "summary": summary, "agreement": agree,
        "tokens_per_second": {e.name: tokens_per_second(res["outputs"], e.name, best_bs, clips) for e in engines},
        "texts": {e.name: [t for t, _ in res["outputs"][(e.name, best_bs)]] for e in engines},
    }
    print_report(res, summary, agree, batch_sizes)
    print(f"tokens/s of audio: {data['tokens_per_second']}; load during run: {data['load']}")
    path = common.write_results(args.out or ("compare_nemo_quick" if args.quick else "compare_nemo"), data)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
