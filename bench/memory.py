#!/usr/bin/env python
"""Peak memory (RSS) of loading a checkpoint and transcribing the mixed set, aviary vs NeMo, each in a fresh
child process so that neither's allocations count against the other. (The service's own peak RSS under
load is recorded by bench/service.py.)

    .venv/bin/python bench/memory.py              # aviary (this interpreter) and NeMo (/work/nemo-venv)
    .venv/bin/python bench/memory.py --quick

Reported per engine, in MiB: RSS after imports, after restore_from, and the peak (VmHWM) after
transcribing the mixed set at --batch-size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common


def child(engine: str, model: str, device: str, batch_size: int, quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"engine": engine}
    dev = common.pick_device(device)
    files = [str(c.path) for c in common.audio_set("mixed", quick)]
    if engine == "aviary":
        from models import ASRModel

        out["after_import_mb"] = common.proc_status_mb()["VmRSS"]
        t0 = time.perf_counter()
        m = ASRModel.restore_from(model, map_location=dev)
        out["load_s"] = round(time.perf_counter() - t0, 3)
        out["after_load_mb"] = common.proc_status_mb()["VmRSS"]
        m.transcribe(files, batch_size=batch_size, verbose=False)
    else:
        import logging

        import torch
        from nemo.collections.asr.models import ASRModel as NemoASRModel
        from nemo.utils import logging as nemo_logging

        nemo_logging.setLevel(logging.ERROR)
        out["after_import_mb"] = common.proc_status_mb()["VmRSS"]
        t0 = time.perf_counter()
        m = NemoASRModel.restore_from(model, map_location=torch.device(dev))
        m.eval()
        out["load_s"] = round(time.perf_counter() - t0, 3)
        out["after_load_mb"] = common.proc_status_mb()["VmRSS"]
        m.transcribe(files, batch_size=batch_size, num_workers=0, verbose=False)
    st = common.proc_status_mb()
    out["after_transcribe_mb"] = st["VmRSS"]
    out["peak_mb"] = st["VmHWM"]
    if str(dev).startswith("cuda"):
        import torch

        out["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    return out


def spawn(python: str, engine: str, args: argparse.Namespace, model: Path) -> dict[str, Any]:
    cmd = [python, str(Path(__file__).resolve()), "--child", engine, "--model", str(model), "--device",
           args.device, "--batch-size", str(args.batch_size)] + (["--quick"] if args.quick else [])
    env = {**os.environ, "PYTHONPATH": str(common.REPO)}
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"engine": engine, "error": f"exit {p.returncode}: {p.stderr[-800:]}"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(ap)
    ap.add_argument("--engines", default="aviary,nemo")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--nemo-python", default=str(common.NEMO_PYTHON))
    ap.add_argument("--child", choices=["aviary", "nemo"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    model = common.resolve_model(args.model, args.quick)
    if args.child:
        common.set_threads(args.threads)
        print(json.dumps(child(args.child, str(model), args.device, args.batch_size, args.quick)))
        return 0

    common.maybe_wait(args)
    info = common.machine_info(common.pick_device(args.device), args.threads)
    results = []
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        python = sys.executable if engine == "aviary" else args.nemo_python
        if not Path(python).exists():
            print(f"skipping {engine}: {python} not found")
            continue
        r = spawn(python, engine, args, model)
        results.append(r)
        print(f"  {engine}: {r}", flush=True)
    rows = [[r["engine"], r.get("after_import_mb"), r.get("after_load_mb"), r.get("peak_mb"), r.get("load_s")]
            for r in results]
    print(common.table(["engine", "RSS after import MiB", "after load MiB", "peak MiB", "load s"], rows, nd=1))
    data = {"benchmark": "memory", "machine": info, "model": str(model), "batch_size": args.batch_size,
            "results": results}
    path = common.write_results(args.out or ("memory_quick" if args.quick else "memory"), data)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
