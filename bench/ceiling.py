#!/usr/bin/env python
"""The in-process ceiling: features + encoder + greedy decoding on equal-length batches already in memory
(no file I/O, no padding, no result objects) — the most RTFx the hardware gives this model.

    .venv/bin/python bench/ceiling.py                       # aviary, 110M
    PYTHONPATH=/work/main /work/nemo-venv/bin/python bench/ceiling.py --engines aviary,nemo
    .venv/bin/python bench/ceiling.py --quick

Each (batch, seconds) shape is timed --repeats times after a warm-up; the encoder and decoding parts are
timed separately too (``enc_s``, ``dec_s``), which shows how much of the time the decoding loop takes.
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

SHAPES = [(1, 5.0), (8, 5.0), (16, 5.0), (1, 20.0), (4, 20.0)]  # (batch, seconds per utterance)
QUICK_SHAPES = [(1, 5.0), (4, 5.0)]


class AviaryCeiling:
    name = "aviary"

    def __init__(self, path: Path, device: Any):
        from models import ASRModel

        self.device = device
        self.model = ASRModel.restore_from(str(path), map_location=device)
        self.decode = self.model._path(None)  # the model's default decoder (TDT for hybrids, as NeMo)

    def encode(self, audio: Any, lengths: Any) -> Any:
        return self.model.encode(audio, lengths)

    def run_decoder(self, enc: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.decode(enc[0], enc[1], False, False)


class AviarySdpaCeiling(AviaryCeiling):
    """Experiment: aviary with every attention module switched to torch's fused SDPA kernel (NeMo's
    ``use_pytorch_sdpa``), to see what the fused path would give on this hardware."""

    name = "aviary-sdpa"

    def __init__(self, path: Path, device: Any):
        super().__init__(path, device)
        for module in self.model.modules():
            if hasattr(module, "use_sdpa"):
                module.use_sdpa = True


class AviaryInt8Ceiling(AviaryCeiling):
    """Experiment: aviary with the encoder's and joint's nn.Linear layers dynamically quantised to int8
    (torch.ao.quantization.quantize_dynamic; weights int8, activations quantised per batch). Not NeMo-exact:
    outputs change, so this shows the speed such an opt-in mode would give, not its accuracy."""

    name = "aviary-int8"

    def __init__(self, path: Path, device: Any):
        import torch

        super().__init__(path, device)
        for attr in ("encoder", "joint"):
            quantised = torch.ao.quantization.quantize_dynamic(getattr(self.model, attr), {torch.nn.Linear},
                                                               dtype=torch.qint8)
            setattr(self.model, attr, quantised)
        self.decode = self.model._path(None)
        if hasattr(self.decode, "joint"):
            self.decode.joint = self.model.joint


class NemoCeiling:
    name = "nemo"

    def __init__(self, path: Path, device: Any):
        import torch
        from nemo.collections.asr.models import ASRModel as NemoASRModel
        from nemo.utils import logging as nemo_logging

        nemo_logging.setLevel(logging.ERROR)
        self.device = device
        self.model = NemoASRModel.restore_from(str(path), map_location=torch.device(device))
        self.model.eval()

    def encode(self, audio: Any, lengths: Any) -> Any:
        import torch

        with torch.inference_mode():
            feats, flen = self.model.preprocessor(input_signal=audio, length=lengths)
            return self.model.encoder(audio_signal=feats, length=flen)

    def run_decoder(self, enc: Any) -> Any:
        import torch

        with torch.inference_mode():
            if hasattr(self.model.decoding, "rnnt_decoder_predictions_tensor"):
                return self.model.decoding.rnnt_decoder_predictions_tensor(
                    encoder_output=enc[0], encoded_lengths=enc[1], return_hypotheses=False)
            log_probs = self.model.decoder(encoder_output=enc[0])
            return self.model.decoding.ctc_decoder_predictions_tensor(log_probs, decoder_lengths=enc[1])


def measure(engine: Any, batch: int, seconds: float, repeats: int) -> dict[str, Any]:
    import torch

    audio = torch.from_numpy(common.equal_batch(batch, seconds)).to(engine.device)
    lengths = torch.full((batch,), audio.shape[1], dtype=torch.long, device=engine.device)
    hyps = engine.run_decoder(engine.encode(audio, lengths))  # warm-up (its tokens are compared)
    enc_s, dec_s, tot = [], [], []
    for _ in range(repeats):
        gc.collect()
        common.sync(engine.device)
        t0 = time.perf_counter()
        enc = engine.encode(audio, lengths)
        common.sync(engine.device)
        t1 = time.perf_counter()
        engine.run_decoder(enc)
        common.sync(engine.device)
        t2 = time.perf_counter()
        enc_s.append(t1 - t0)
        dec_s.append(t2 - t1)
        tot.append(t2 - t0)
    audio_s = batch * seconds
    return {"batch": batch, "seconds": seconds, "rtfx_median": round(audio_s / common.median(tot), 3),
            "rtfx_max": round(audio_s / min(tot), 3),
            "rtfx_all": [round(audio_s / t, 3) for t in tot], "enc_s_median": round(common.median(enc_s), 4),
            "dec_s_median": round(common.median(dec_s), 4),
            "decode_share": round(common.median(dec_s) / common.median(tot), 3), "tokens": token_lists(hyps)}


def token_lists(hyps: Any) -> list[list[int]]:
    if isinstance(hyps, tuple):
        hyps = hyps[0]
    out = []
    for h in hyps:
        seq = getattr(h, "y_sequence", h)
        out.append([int(t) for t in (seq.tolist() if hasattr(seq, "tolist") else seq)])
    return out


def agreement(results: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Share of utterances whose tokens equal the first engine's, per other engine (all shapes)."""
    names = list(results)
    ref = [t for r in results[names[0]] for t in r["tokens"]]
    return {n: round(sum(a == b for a, b in zip(ref, [t for r in results[n] for t in r["tokens"]])) / max(len(ref), 1), 3)
            for n in names[1:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(ap)
    ap.add_argument("--engines", default="aviary", help="comma-separated: aviary, nemo; experiments: aviary-sdpa, aviary-int8")
    ap.add_argument("--repeats", type=int, default=None, help="default 5 (quick: 2)")
    ap.add_argument("--shapes", nargs="+", default=None, help="BATCHxSECONDS, e.g. 8x5 1x20")
    args = ap.parse_args(argv)

    shapes = ([(int(b), float(s)) for b, s in (x.lower().split("x") for x in args.shapes)] if args.shapes
              else QUICK_SHAPES if args.quick else SHAPES)
    repeats = args.repeats or (2 if args.quick else 5)
    device = common.pick_device(args.device)
    threads = common.set_threads(args.threads)
    model = common.resolve_model(args.model, args.quick)
    info = common.machine_info(device, threads)
    print(f"model {model.name}, device {device}, {threads} threads, load {info['loadavg_at_start']}", flush=True)
    classes = {"aviary": AviaryCeiling, "aviary-sdpa": AviarySdpaCeiling, "aviary-int8": AviaryInt8Ceiling,
               "nemo": NemoCeiling}
    engines = [classes[e.strip()](model, device) for e in args.engines.split(",") if e.strip()]

    common.maybe_wait(args)
    results: dict[str, list[dict[str, Any]]] = {e.name: [] for e in engines}
    with common.LoadMonitor() as mon:
        for batch, seconds in shapes:
            for e in engines:  # interleaved per shape
                r = measure(e, batch, seconds, repeats)
                results[e.name].append(r)
                print(f"  {e.name:6s} {batch:2d} x {seconds:4.1f} s: RTFx {r['rtfx_median']:7.2f} "
                      f"(encoder {r['enc_s_median']:.3f} s, decoding {r['dec_s_median']:.3f} s)", flush=True)
    best = {n: max(rs, key=lambda r: r["rtfx_median"]) for n, rs in results.items()}
    headers = ["shape", *[f"{n} RTFx" for n in results], *[f"{n} decode share" for n in results]]
    rows = [[f"{b}x{s:g}s", *[results[n][i]["rtfx_median"] for n in results],
             *[results[n][i]["decode_share"] for n in results]] for i, (b, s) in enumerate(shapes)]
    print(common.table(headers, rows))
    for n, r in best.items():
        print(f"{n} ceiling: RTFx {r['rtfx_median']:.2f} ({r['batch']} x {r['seconds']:g} s)")
    agree = agreement(results)
    if agree:
        print(f"utterances with the same tokens as {next(iter(results))}: {agree}")
    for rs in results.values():
        for r in rs:
            r["n_tokens"] = sum(len(t) for t in r.pop("tokens"))
    data = {"benchmark": "ceiling", "machine": info, "load": mon.summary(), "model": str(model),
            "repeats": repeats, "results": results, "token_agreement": agree,
            "ceiling": {n: {"rtfx": r["rtfx_median"], "batch": r["batch"], "seconds": r["seconds"]}
                        for n, r in best.items()}}
    path = common.write_results(args.out or ("ceiling_quick" if args.quick else "ceiling"), data)
    print(f"load during run: {data['load']}\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
