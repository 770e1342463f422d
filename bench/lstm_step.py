#!/usr/bin/env python
"""Micro-benchmark behind the profile's top decoding cost: one prediction-network step of a greedy RNNT/TDT
loop, torch's ``nn.LSTM`` (oneDNN RNN primitive) against a hand-written LSTM cell (one ``addmm`` + gates) and
the cell the decoder runs (input gates looked up per token from a precomputed table, then ``W_hh·h``).

    .venv/bin/python bench/lstm_step.py [--hidden 640] [--vocab 1024] [--batch-sizes 1 8] [--wait-quiet 3]

Prints milliseconds per step and the largest difference of the cells' outputs from nn.LSTM's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common


def manual_cell(lstm: Any) -> Callable[[Any, Any, Any], tuple[Any, Any]]:
    import torch

    w = torch.cat([lstm.weight_ih_l0, lstm.weight_hh_l0], 1).t().contiguous()  # [2H, 4H]
    b = (lstm.bias_ih_l0 + lstm.bias_hh_l0).contiguous()

    def cell(x: Any, h: Any, c: Any) -> tuple[Any, Any]:
        i, f, g, o = torch.addmm(b, torch.cat([x, h], 1), w).chunk(4, 1)
        c2 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c2), c2

    return cell


def table_cell(lstm: Any, embed: Any) -> Callable[[Any, Any, Any], tuple[Any, Any]]:
    """The decoder's first-layer cell: input gates ``W_ih·embed(k) + b`` looked up per token, then ``W_hh·h``."""
    import torch

    table = torch.addmm(lstm.bias_ih_l0 + lstm.bias_hh_l0, embed.weight, lstm.weight_ih_l0.t())  # [V, 4H]
    w_hh = lstm.weight_hh_l0.t().contiguous()

    def cell(tokens: Any, h: Any, c: Any) -> tuple[Any, Any]:
        i, f, g, o = torch.addmm(table[tokens], h, w_hh).chunk(4, 1)
        c2 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c2), c2

    return cell


def ms_per_call(fn: Callable[[], Any], n: int, rounds: int = 5) -> float:
    for _ in range(n // 2):
        fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=640)
    ap.add_argument("--vocab", type=int, default=1024, help="tokens of the input-gate table (plus blank)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="LOAD")
    args = ap.parse_args(argv)
    common.maybe_wait(args)
    threads = common.set_threads(args.threads)
    lstm = torch.nn.LSTM(args.hidden, args.hidden).eval()
    embed = torch.nn.Embedding(args.vocab + 1, args.hidden)
    cell, lookup = manual_cell(lstm), table_cell(lstm, embed)
    rows = []
    with common.LoadMonitor() as mon, torch.inference_mode():
        for bs in args.batch_sizes:
            tokens = torch.randint(0, args.vocab + 1, (bs,))
            x = embed(tokens)[None]
            h, c = torch.randn(1, bs, args.hidden), torch.randn(1, bs, args.hidden)
            t_lstm = ms_per_call(lambda: lstm(x, (h, c)), args.steps)  # noqa: B023 - timed right here
            t_cell = ms_per_call(lambda: cell(x[0], h[0], c[0]), args.steps)  # noqa: B023
            t_table = ms_per_call(lambda: lookup(tokens, h[0], c[0]), args.steps)  # noqa: B023
            _, (h1, c1) = lstm(x, (h, c))
            diff = 0.0
            for h2, c2 in (cell(x[0], h[0], c[0]), lookup(tokens, h[0], c[0])):
                diff = max(diff, (h1[0] - h2).abs().max().item(), (c1[0] - c2).abs().max().item())
            rows.append([bs, t_lstm, t_cell, t_table, t_lstm / t_table, f"{diff:.1e}"])
    print(f"hidden {args.hidden}, vocabulary {args.vocab}, {threads} threads, load {mon.summary()}")
    print(common.table(["batch", "nn.LSTM ms/step", "cell ms/step", "cell + input-gate table ms/step",
                        "speed-up (LSTM/table)", "max |diff|"], rows, nd=3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
