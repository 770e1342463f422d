"""Synthetic English speech for the bundled demo model (`aviary-demo-en`).

    python3 tools/demo_model/make_data.py --out /tmp/demo-data [--train 20000] [--test 400] [--jobs 2]

Sentences are random sequences of 2-18 words drawn from `words.txt` (about 2,300 common English words,
number words replaced by the digits 0-9, which espeak-ng reads aloud), spoken by espeak-ng with a random
accent, voice variant, speed, pitch and word gap, then passed through sox (reverberation on half of them,
resampling to 16 kHz) and mixed with white/pink/brown noise at 8-35 dB SNR on most of them.

Held-out data (`test`) uses voice variants never used for training and sentences that do not occur in the
training set, so its WER measures generalisation, not memorisation.

Output (all 16 kHz mono):
    OUT/{train,test,words}.pcm  concatenated int16 samples ("words": isolated words, for the curriculum)
    OUT/{train,test,words}.jsonl one line per utterance: text, offset, num_samples, duration, voice, ...
    OUT/test_wav/NNNN.flac      the first --test-files held-out utterances as files (for the test suite)

Needs espeak-ng and sox (Debian: apt-get install espeak-ng sox) and numpy; deterministic for a given seed
and espeak-ng/sox version.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SAMPLE_RATE = 16000

ACCENTS = ["en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd"]
# espeak-ng voice variants (espeak-ng-data/voices/!v). Novelty voices (robots, whisper, croak) are left out.
TRAIN_VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m7", "m8", "f1", "f2", "f3", "f5", "klatt", "klatt2",
                  "klatt4", "klatt5", "adam", "anika", "benjamin", "boris", "caleb", "david", "edward", "iven",
                  "iven2", "john", "max", "michel", "norbert", "pablo", "quincy", "rob", "steph", "travis",
                  "victor", "zac", "Alex", "Andrea", "Annie", "Denis", "Gene", "Hugo", "Lee", "Marco",
                  "Michael", "Nguyen", "antonio", "aunty", "ed", "gustave", "marcelo", "miguel", "sandro",
                  "shelby", "steph2"]
TEST_VARIANTS = ["m6", "f4", "klatt3", "klatt6", "belinda", "linda", "paul", "robert", "iven3", "steph3",
                 "Mike", "Diogo", "grandpa", "pedro"]
DIGITS = [str(d) for d in range(10)]


def load_words() -> list[str]:
    return [w for w in (HERE / "words.txt").read_text().split() if w]


def make_sentence(rng: random.Random, words: list[str], single: bool = False) -> str:
    if single:  # the curriculum's isolated words (and digits)
        return rng.choice(words + DIGITS)
    n = rng.choice([2, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 10, 11, 12, 14, 16, 18])
    out = [rng.choice(words) for _ in range(n)]
    if rng.random() < 0.2:  # a run of spoken digits ("3 7 2") somewhere in the sentence
        run = [rng.choice(DIGITS) for _ in range(rng.randint(1, 5))]
        at = rng.randint(0, len(out))
        out[at:at] = run
    return " ".join(out)


def colored_noise(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    spec = spec / (np.sqrt(f) if kind == "pink" else f)
    return np.fft.irfft(spec, n)


def synthesize(job: dict) -> tuple[dict, np.ndarray]:
    """One utterance: espeak-ng -> sox (effects, 16 kHz) -> noise in numpy. Returns (meta, int16 samples)."""
    voice = job["accent"] + (f"+{job['variant']}" if job["variant"] else "")
    espeak = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(job["speed"]), "-p", str(job["pitch"]), "-g", str(job["gap"]),
         "--stdout", "--", job["text"]], check=True, capture_output=True)
    effects = ["rate", "-v", str(SAMPLE_RATE)]
    if job["reverb"] is not None:
        effects += ["reverb", str(job["reverb"]), "50", str(job["room"])]
    effects += ["pad", f"{job['pad_head']:.3f}", f"{job['pad_tail']:.3f}"]
    sox = subprocess.run(["sox", "-D", "-R", "-V1", "-t", "wav", "-", "-r", str(SAMPLE_RATE), "-c", "1", "-b",
                          "32", "-e", "floating-point", "-t", "raw", "-", *effects],
                         input=espeak.stdout, check=True, capture_output=True)
    x = np.frombuffer(sox.stdout, dtype=np.float32).astype(np.float64)
    rng = np.random.default_rng(job["seed"])
    peak = np.max(np.abs(x)) or 1.0
    x = x / peak
    if job["snr"] is not None:
        noise = colored_noise(rng, len(x), job["noise"])
        speech_power = np.mean(x**2)
        noise *= np.sqrt(speech_power / (np.mean(noise**2) * 10 ** (job["snr"] / 10)))
        x = x + noise
    x = x / (np.max(np.abs(x)) or 1.0) * job["gain"]
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
    meta = {k: job[k] for k in ("text", "accent", "variant", "speed", "pitch", "gap", "reverb", "noise", "snr")}
    meta["voice"] = voice
    return meta, pcm


def make_jobs(split: str, count: int, seed: int, words: list[str], exclude: set[str]) -> list[dict]:
    rng = random.Random(f"{split}-{seed}")
    variants = TEST_VARIANTS if split == "test" else TRAIN_VARIANTS
    jobs, texts = [], set()
    while len(jobs) < count:
        text = make_sentence(rng, words, single=split == "words")
        if split != "words" and (text in exclude or text in texts):
            continue
        texts.add(text)
        reverb = rng.choice([None, None, rng.randint(10, 70)])
        noisy = rng.random() < 0.75
        jobs.append({
            "text": text, "accent": rng.choice(ACCENTS), "variant": rng.choice(variants),
            "speed": rng.randint(125, 215), "pitch": rng.randint(20, 80), "gap": rng.choice([0, 0, 0, 1, 2, 4]),
            "reverb": reverb, "room": rng.randint(20, 100), "pad_head": rng.uniform(0.05, 0.6),
            "pad_tail": rng.uniform(0.05, 0.6), "noise": rng.choice(["white", "pink", "brown"]),
            "snr": rng.uniform(8, 35) if noisy else None, "gain": rng.uniform(0.1, 0.95),
            "seed": rng.getrandbits(32),
        })
    return jobs


def write_split(out: Path, split: str, jobs: list[dict], workers: int, wav_files: int) -> set[str]:
    pcm_path, meta_path = out / f"{split}.pcm", out / f"{split}.jsonl"
    wav_dir = out / f"{split}_wav"
    if wav_files:
        wav_dir.mkdir(parents=True, exist_ok=True)
    offset, seconds = 0, 0.0
    with open(pcm_path, "wb") as pcm_file, open(meta_path, "w") as meta_file, \
            ProcessPoolExecutor(workers) as pool:
        for i, (meta, pcm) in enumerate(pool.map(synthesize, jobs, chunksize=16)):
            pcm_file.write(pcm.tobytes())
            meta.update(offset=offset, num_samples=len(pcm), duration=round(len(pcm) / SAMPLE_RATE, 4))
            if i < wav_files:
                import soundfile as sf  # only needed for the held-out files

                name = f"{i:04d}.flac"
                sf.write(wav_dir / name, pcm, SAMPLE_RATE, subtype="PCM_16")
                meta["audio_file"] = f"{split}_wav/{name}"
            meta_file.write(json.dumps(meta) + "\n")
            offset += len(pcm)
            seconds += len(pcm) / SAMPLE_RATE
            if (i + 1) % 1000 == 0:
                print(f"{split}: {i + 1}/{len(jobs)} utterances, {seconds / 3600:.2f} h", flush=True)
    print(f"{split}: {len(jobs)} utterances, {seconds / 3600:.2f} h -> {pcm_path}", flush=True)
    return {j["text"] for j in jobs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train", type=int, default=20000, help="training utterances")
    ap.add_argument("--test", type=int, default=400, help="held-out utterances")
    ap.add_argument("--test-files", type=int, default=24, help="held-out utterances also written as FLAC files")
    ap.add_argument("--words", type=int, default=8000,
                    help="isolated-word utterances (split 'words', training voices) for train.py's curriculum")
    ap.add_argument("--only-words", action="store_true", help="make only the 'words' split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    words = load_words()
    if args.words:
        write_split(args.out, "words", make_jobs("words", args.words, args.seed, words, set()), args.jobs, 0)
    if args.only_words:
        return 0
    test_jobs = make_jobs("test", args.test, args.seed, words, exclude=set())
    train_jobs = make_jobs("train", args.train, args.seed, words, exclude={j["text"] for j in test_jobs})
    write_split(args.out, "test", test_jobs, args.jobs, args.test_files)
    write_split(args.out, "train", train_jobs, args.jobs, 0)
    (args.out / "words.txt").write_text("\n".join(words) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
