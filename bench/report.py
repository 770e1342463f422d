#!/usr/bin/env python
"""Checks the targets against the latest results in bench/results/*.json and prints a markdown table.

    .venv/bin/python bench/report.py            # full runs
    .venv/bin/python bench/report.py --quick    # the *_quick results
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common


def row(target: str, value: float | None, limit: float, higher_is_better: bool, detail: str) -> list[Any]:
    if value is None:
        return [target, "-", "not measured", detail]
    ok = value >= limit if higher_is_better else value <= limit
    return [target, round(value, 3), "yes" if ok else "NO", detail]


def targets(sfx: str) -> list[list[Any]]:
    cmp_ = common.read_results("compare_nemo" + sfx) or {}
    ceil = common.read_results("ceiling" + sfx) or {}
    svc = common.read_results("service" + sfx) or {}
    s = cmp_.get("summary", {})
    rows = []
    best_a, best_n = s.get("aviary_best"), s.get("nemo_best")
    rows.append(row("aviary best / NeMo best transcribe() RTFx >= 1.8", s.get("ratio_best"), 1.8, True,
                    f"aviary {best_a} vs NeMo {best_n}" if best_a and best_n else ""))
    per = s.get("ratio_per_batch_size") or {}
    rows.append(row("aviary / NeMo at every batch size >= 1.5", min(per.values()) if per else None, 1.5, True,
                    "min over " + ", ".join(f"bs{k}: {v}" for k, v in per.items()) if per else ""))
    ceiling = (ceil.get("ceiling") or {}).get("aviary")
    ratio = best_a["rtfx"] / ceiling["rtfx"] if best_a and ceiling else None
    rows.append(row("aviary best transcribe() >= 0.8 x in-process ceiling", ratio, 0.8, True,
                    f"ceiling {ceiling}" if ceiling else ""))
    ss = svc.get("summary", {})
    inproc = svc.get("inprocess", {})
    rows.append(row("service, 16 clients >= 0.85 x in-process best", ss.get("service16_over_inprocess_best"), 0.85,
                    True, f"in-process best {inproc.get('best_rtfx')} at bs {inproc.get('best_batch_size')}"))
    waste = (ss.get("padding_waste_by_clients") or {})
    w16 = waste.get("16", waste.get(16))
    rows.append(row("padding waste at 16 clients <= 0.15", w16, 0.15, False,
                    "by clients: " + ", ".join(f"{k}: {v}" for k, v in waste.items()) if waste else ""))
    rows.append(row("cold start to /ready (s) <= 5", ss.get("cold_start_median_s"), 5.0, False,
                    f"runs: {[c['ready_s'] for c in svc.get('cold_start', [])]}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    sfx = "_quick" if args.quick else ""
    print(common.table(["target", "measured", "holds", "detail"], targets(sfx), nd=3))
    mem = common.read_results("memory" + sfx)
    if mem:
        for r in mem.get("results", []):
            print(f"peak RSS {r.get('engine')}: {r.get('peak_mb')} MiB (after load {r.get('after_load_mb')} MiB)")
    svc = common.read_results("service" + sfx)
    if svc:
        print(f"service peak RSS: {svc.get('summary', {}).get('server_peak_rss_mb')} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
