#!/usr/bin/env python
"""Builds the benchmark audio in bench/audio from the espeak-ng fixture WAVs (deterministic, 16 kHz PCM16).

    python bench/make_audio.py            # writes bench/audio/{mixed,long}/*.wav and bench/audio/sets.json

Sets:
  mixed  nine 1-6 s clips and one 28 s clip, in a fixed order with the long clip in the middle (as the
         team measured NeMo on): the realistic "short requests plus an occasional long one" mix.
  long   20 s, 40 s and 60 s clips (sentences joined with pauses).
The equal-length batches of the in-process ceiling are cut from the long clips by ``bench.common``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "audio"
OUT = REPO / "bench" / "audio"
SR = 16000
SENTENCES = ["s1_en_us.wav", "s2_en_f3.wav", "s3_en_m7.wav", "s4_en_m3.wav", "s5_en_f2.wav"]
NOISE_STD = 3e-4  # about -70 dBFS of noise in the pauses, so "silence" is not digital zero

# Each short clip is a list of fixture files joined with PAUSE_S pauses.
PAUSE_S = 0.3
SHORT_CLIPS: list[list[str]] = [
    ["s1_en_us.wav"],                                  # 3.1 s
    ["s4_en_m3.wav"],                                  # 1.2 s
    ["s2_en_f3.wav"],                                  # 5.1 s
    ["len_16037.wav", "s4_en_m3.wav"],                 # 2.5 s
    ["s3_en_m7.wav"],                                  # 6.1 s
    ["exact_1s.wav", "s1_en_us.wav"],                  # 4.4 s
    ["s5_en_f2.wav"],                                  # 4.7 s
    ["s4_en_m3.wav", "s1_en_us.wav"],                  # 4.6 s
    ["exact_1s.wav"],                                  # 1.0 s
]
LONG_POSITION = 4  # index of the 28 s clip inside the mixed set's order
MIXED_LONG_S = 28.0
LONG_SET_S = [20.0, 40.0, 60.0]


def read(name: str) -> np.ndarray:
    x, sr = sf.read(str(FIXTURES / name), dtype="float32")
    if sr != SR or x.ndim != 1:
        raise SystemExit(f"{name}: expected 16 kHz mono, got {sr} Hz, shape {x.shape}")
    return x


def pause(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return (NOISE_STD * rng.standard_normal(round(seconds * SR))).astype(np.float32)


def join(parts: list[np.ndarray], gap: float, rng: np.random.Generator) -> np.ndarray:
    out: list[np.ndarray] = []
    for i, p in enumerate(parts):
        if i:
            out.append(pause(gap, rng))
        out.append(p)
    return np.concatenate(out)


def long_clip(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Sentences (cycling through the fixtures) with 0.4-0.9 s pauses, padded with quiet to ``seconds``."""
    target = round(seconds * SR)
    out: list[np.ndarray] = []
    total, k = 0, 0
    while True:
        s = read(SENTENCES[k % len(SENTENCES)])
        gap = pause(float(rng.uniform(0.4, 0.9)), rng)
        if total + len(gap) + len(s) > target:
            break
        out += [gap, s]
        total += len(gap) + len(s)
        k += 1
    out.append(pause((target - total) / SR, rng))
    return np.concatenate(out)[:target]


def write(out: Path, rel: str, x: np.ndarray) -> dict:
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(x, -1.0, 1.0), SR, subtype="PCM_16")
    return {"file": rel, "seconds": round(len(x) / SR, 4)}


def build(out: Path) -> dict:
    rng = np.random.default_rng(8)
    mixed = []
    for i, names in enumerate(SHORT_CLIPS):
        mixed.append(write(out, f"mixed/short_{i:02d}.wav", join([read(n) for n in names], PAUSE_S, rng)))
    mixed.insert(LONG_POSITION, write(out, "mixed/long_28s.wav", long_clip(MIXED_LONG_S, rng)))
    long = [write(out, f"long/long_{int(s)}s.wav", long_clip(s, rng)) for s in LONG_SET_S]
    sets = {"mixed": mixed, "long": long}
    (out / "sets.json").write_text(json.dumps(sets, indent=2) + "\n")
    return sets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    sets = build(args.out)
    for name, items in sets.items():
        secs = [it["seconds"] for it in items]
        print(f"{name:6s} {len(items):2d} clips, {sum(secs):6.1f} s: {', '.join(f'{s:.1f}' for s in secs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
