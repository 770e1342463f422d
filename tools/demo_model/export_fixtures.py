"""Test fixtures for the demo model: held-out utterances and NeMo's outputs on them.

    /work/nemo-venv/bin/python tools/demo_model/export_fixtures.py --data /tmp/demo-data \
        [--model models/assets/aviary-demo-en.nemo] [--count 96] [--out tests/fixtures/demo]

Writes the first ``--count`` held-out utterances (unseen voices and sentences; make_data.py's int16 samples,
unchanged) as FLAC into OUT with ``manifest.json`` (file, reference text, voice, noise), and records what NeMo 3.0
makes of them with the same checkpoint: ``nemo_ref.json`` (texts, per-frame argmax ids, the WER of NeMo's texts) and ``nemo_ref.npz``
(the CTC log-probabilities of the first four files, ``logprobs_<file stem>``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "assets" / "aviary-demo-en.nemo")
    ap.add_argument("--count", type=int, default=96)
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "demo")
    args = ap.parse_args(argv)

    import soundfile as sf
    import torch
    from nemo.collections.asr.models import ASRModel

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from evaluate import corpus_wer
    from make_data import SAMPLE_RATE

    torch.set_num_threads(2)
    meta = [json.loads(line) for line in (args.data / "test.jsonl").read_text().splitlines()]
    pcm = np.memmap(args.data / "test.pcm", dtype=np.int16, mode="r")
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("*.flac"):
        stale.unlink()
    entries = []
    for i, m in enumerate(meta[: args.count]):
        name = f"{i:04d}.flac"
        sf.write(args.out / name, np.asarray(pcm[m["offset"]: m["offset"] + m["num_samples"]]), SAMPLE_RATE,
                 subtype="PCM_16")
        entries.append({"audio_filepath": name, "duration": m["duration"], "text": m["text"], "voice": m["voice"],
                        "noise": m["noise"] if m["snr"] is not None else None,
                        "snr": round(m["snr"], 1) if m["snr"] is not None else None, "reverb": m["reverb"]})
    (args.out / "manifest.json").write_text(json.dumps(entries, indent=1) + "\n")

    model = ASRModel.restore_from(str(args.model), map_location="cpu").eval()
    audio = [sf.read(args.out / e["audio_filepath"], dtype="float32")[0] for e in entries]
    hyps = model.transcribe(audio, batch_size=1, return_hypotheses=True, verbose=False)

    ref = {"nemo": "3.0", "model_sha": _sha(args.model),
           "wer": round(corpus_wer([e["text"] for e in entries], [h.text for h in hyps]), 4), "files": [
        {"audio_filepath": e["audio_filepath"], "text": h.text,
         "frame_argmax": torch.as_tensor(h.y_sequence).argmax(-1).tolist()}
        for e, h in zip(entries, hyps)]}
    (args.out / "nemo_ref.json").write_text(json.dumps(ref, indent=1) + "\n")
    arrays = {f"logprobs_{Path(e['audio_filepath']).stem}": torch.as_tensor(h.y_sequence).numpy().astype(np.float32)
              for e, h in list(zip(entries, hyps))[:4]}
    np.savez_compressed(args.out / "nemo_ref.npz", **arrays)
    print(f"wrote {len(entries)} files and NeMo's outputs to {args.out}")
    return 0


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


if __name__ == "__main__":
    sys.exit(main())
