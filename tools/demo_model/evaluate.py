"""Held-out WER of the demo model with aviary's runtime, and (``--nemo``) the same with NeMo itself.

    /work/nemo-venv/bin/python tools/demo_model/evaluate.py --data /tmp/demo-data \
        [--model models/assets/aviary-demo-en.nemo] [--nemo] [--int8] [--json OUT.json]

The held-out set of make_data.py: sentences not in the training set, spoken by espeak-ng voice variants never
used in training, with noise and reverberation. WER = word edits / reference words over the whole set. With
``--nemo`` NeMo's ``transcribe()`` runs on the same arrays: the script reports how many texts agree and the
largest log-probability difference (the .nemo is genuine and aviary reproduces NeMo).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def edit_distance(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def corpus_wer(refs: list[str], hyps: list[str]) -> float:
    edits = sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps))
    return edits / max(sum(len(r.split()) for r in refs), 1)


def load_test(data: Path) -> tuple[list[np.ndarray], list[dict]]:
    pcm = np.memmap(data / "test.pcm", dtype=np.int16, mode="r")
    meta = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    audio = [np.asarray(pcm[m["offset"]: m["offset"] + m["num_samples"]], dtype=np.float32) / 32768.0 for m in meta]
    return audio, meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "assets" / "aviary-demo-en.nemo")
    ap.add_argument("--nemo", action="store_true", help="also run NeMo (needs the NeMo venv)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", type=Path, help="write the numbers here")
    ap.add_argument("--int8", action="store_true",
                    help="also the WER with the encoder's nn.Linear layers dynamically quantised to int8 "
                         "(the speed experiment of bench/ceiling.py --engines aviary-int8)")
    args = ap.parse_args(argv)

    import torch

    sys.path.insert(0, str(ROOT))
    from models import ASRModel

    torch.set_num_threads(2)
    audio, meta = load_test(args.data)
    refs = [m["text"] for m in meta]
    model = ASRModel.restore_from(str(args.model), map_location="cpu")
    t0 = time.perf_counter()
    hyps = model.transcribe(audio, batch_size=args.batch_size, return_hypotheses=True, verbose=False)
    seconds = time.perf_counter() - t0
    texts = [h.text for h in hyps]
    audio_s = sum(len(a) for a in audio) / 16000
    out = {"model": str(args.model), "utterances": len(refs), "words": sum(len(r.split()) for r in refs),
           "audio_seconds": round(audio_s, 1), "wer": round(corpus_wer(refs, texts), 4),
           "rtfx": round(audio_s / seconds, 1)}
    by_noise: dict[str, list[int]] = {}
    for i, m in enumerate(meta):
        by_noise.setdefault("clean" if m["snr"] is None else ("snr<15" if m["snr"] < 15 else "snr>=15"), []).append(i)
    out["wer_by_condition"] = {k: round(corpus_wer([refs[i] for i in v], [texts[i] for i in v]), 4)
                               for k, v in sorted(by_noise.items())}
    if args.int8:
        quantised = ASRModel.restore_from(str(args.model), map_location="cpu")
        quantised.encoder = torch.ao.quantization.quantize_dynamic(quantised.encoder, {torch.nn.Linear},
                                                                   dtype=torch.qint8)
        q_texts = [h.text for h in quantised.transcribe(audio, batch_size=args.batch_size, verbose=False,
                                                        return_hypotheses=True)]
        out["int8"] = {"wer": round(corpus_wer(refs, q_texts), 4),
                       "same_text": sum(a == b for a, b in zip(texts, q_texts))}
    if args.nemo:
        from nemo.collections.asr.models import ASRModel as NeMoASRModel

        nemo = NeMoASRModel.restore_from(str(args.model), map_location="cpu").eval()
        nemo_hyps = nemo.transcribe(audio, batch_size=args.batch_size, return_hypotheses=True, verbose=False)
        nemo_texts = [h.text for h in nemo_hyps]
        diffs = [float((torch.as_tensor(a.y_sequence) - torch.as_tensor(b.y_sequence)).abs().max())
                 for a, b in zip(hyps, nemo_hyps)]
        out["nemo"] = {"wer": round(corpus_wer(refs, nemo_texts), 4),
                       "same_text": sum(a == b for a, b in zip(texts, nemo_texts)),
                       "max_abs_logprob_diff": max(diffs)}
    print(json.dumps(out, indent=2))
    for ref, hyp in list(zip(refs, texts))[:8]:
        print(f"REF {ref}\nHYP {hyp}\n")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
