"""Trains the bundled demo model `aviary-demo-en` with NeMo, on the data of make_data.py.

    /work/nemo-venv/bin/python tools/demo_model/train.py --data /tmp/demo-data --out /tmp/demo-run \
        [--minutes 240] [--threads 2] [--resume [--total-steps N]]

A NeMo `EncDecCTCModelBPE` (config.yaml: Conformer, 6 layers x 144, 4x subsampling, 128-piece vocabulary)
trained by a plain PyTorch loop around NeMo's own modules: `model.forward()` (NeMo's mel
front-end, SpecAugment when --spec-augment, encoder and CTC decoder) and `model.loss` (NeMo's CTC loss).
Lightning is not needed for one CPU process. AdamW, linear warm-up then cosine decay over the step budget,
which is fitted to --minutes after the first steps and re-fitted every 200 steps as the machine's speed changes
(a --resume'd run fits its remaining steps to --minutes, or takes --total-steps). Batches hold utterances of similar length (at most
--batch-seconds of padded audio each); the first --easy-steps see the isolated words of the data's "words"
split, if it has one (a curriculum against the CTC plateau).

Every --eval-every steps it prints the greedy WER on the first 100 held-out utterances; every 10 minutes it
writes OUT/last.pt (model + optimiser, for --resume) and at the end OUT/aviary-demo-en.nemo, saved by
NeMo's `save_to` (a genuine .nemo: NeMo's `restore_from` loads it).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from evaluate import edit_distance  # tools/demo_model/evaluate.py (the script's directory is on sys.path)

HERE = Path(__file__).resolve().parent


def load_split(data: Path, split: str) -> list[dict]:
    pcm = np.memmap(data / f"{split}.pcm", dtype=np.int16, mode="r")
    meta = [json.loads(line) for line in (data / f"{split}.jsonl").read_text().splitlines()]
    for m in meta:
        m["_pcm"] = pcm  # each utterance knows its samples (the curriculum mixes splits)
    return meta


def train_tokenizer(tok_dir: Path, texts: list[str], vocab_size: int) -> None:
    """SentencePiece BPE with NeMo's helper; NFKC normaliser swapped for identity (ASCII text: same pieces)."""
    import sentencepiece as spm
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model
    from sentencepiece import sentencepiece_model_pb2

    tok_dir.mkdir(parents=True, exist_ok=True)
    corpus = tok_dir / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n")
    create_spt_model(str(corpus), vocab_size, sample_size=-1, do_lower_case=False, tokenizer_type="bpe",
                     output_dir=str(tok_dir), bos=False, eos=False)
    model_file = tok_dir / "tokenizer.model"
    before = spm.SentencePieceProcessor(model_file=str(model_file))
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.precompiled_charsmap = b""
    after = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    assert before.encode(texts[:2000]) == after.encode(texts[:2000]), "identity normaliser changed encodings"
    model_file.write_bytes(proto.SerializeToString())
    corpus.unlink()


def make_batches(meta: list[dict], batch_seconds: float, rng: random.Random, keep: list[int]) -> list[list[int]]:
    order = sorted(keep, key=lambda i: meta[i]["duration"] + rng.uniform(0, 0.4))
    batches, cur, longest = [], [], 0.0
    for i in order:
        d = meta[i]["duration"]
        if cur and max(longest, d) * (len(cur) + 1) > batch_seconds:
            batches.append(cur)
            cur, longest = [], 0.0
        cur.append(i)
        longest = max(longest, d)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def audio_batch(meta: list[dict], idx: list[int]):
    lens = [meta[i]["num_samples"] for i in idx]
    x = torch.zeros(len(idx), max(lens))
    for row, i in enumerate(idx):
        m = meta[i]
        x[row, : m["num_samples"]] = torch.from_numpy(
            np.asarray(m["_pcm"][m["offset"]: m["offset"] + m["num_samples"]], dtype=np.float32) / 32768.0)
    return x, torch.tensor(lens)


def greedy_texts(model, log_probs: torch.Tensor, lens: torch.Tensor) -> list[str]:
    blank = log_probs.shape[-1] - 1
    out = []
    for row, n in zip(log_probs.argmax(-1), lens.tolist()):
        ids, last = [], None
        for t in row[:n].tolist():
            if t != last and t != blank:
                ids.append(t)
            last = t
        out.append(model.tokenizer.ids_to_text(ids))
    return out


@torch.inference_mode()
def evaluate(model, meta, n: int = 100, batch: int = 16) -> float:
    model.eval()
    errors = words = 0
    for s in range(0, min(n, len(meta)), batch):
        idx = list(range(s, min(s + batch, n, len(meta))))
        x, lens = audio_batch(meta, idx)
        log_probs, enc_len, _ = model.forward(input_signal=x, input_signal_length=lens)
        for i, hyp in zip(idx, greedy_texts(model, log_probs, enc_len)):
            ref = meta[i]["text"].split()
            errors += edit_distance(ref, hyp.split())
            words += len(ref)
    model.train()
    return errors / max(words, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=HERE / "config.yaml")
    ap.add_argument("--vocab-size", type=int, default=128)
    ap.add_argument("--minutes", type=float, default=240.0, help="training time budget (wall clock)")
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--batch-seconds", type=float, default=48.0, help="padded audio seconds per batch")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--weight-decay", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--total-steps", type=int, default=0,
                    help="with --resume: a fixed step budget for the schedule (default: fit the rest to --minutes)")
    ap.add_argument("--spec-augment", action="store_true", help="train with the config's SpecAugment (off: the data is already noisy)")
    ap.add_argument("--easy-steps", type=int, default=500,
                    help="curriculum: the first N steps (of this run) see the isolated words of make_data.py's "
                         "'words' split (CTC learns the sounds of the pieces without having to align sentences)")
    args = ap.parse_args(argv)

    from nemo.collections.asr.models import EncDecCTCModelBPE
    from omegaconf import OmegaConf

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = load_split(args.data, "train")
    test_meta = load_split(args.data, "test")
    sentences = list(range(len(meta)))
    words: list[int] = []
    if (args.data / "words.jsonl").exists():
        word_meta = load_split(args.data, "words")
        words = list(range(len(meta), len(meta) + len(word_meta)))
        meta = meta + word_meta
    tok_dir = args.out / "tokenizer"
    if not (tok_dir / "tokenizer.model").exists():
        train_tokenizer(tok_dir, [m["text"] for m in meta], args.vocab_size)

    cfg = OmegaConf.load(args.config)
    cfg.model.tokenizer.dir = str(tok_dir)
    model = EncDecCTCModelBPE(cfg=cfg.model)
    if not args.spec_augment:
        model.spec_augmentation = None  # the saved config keeps its spec_augment section (inference ignores it)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, vocabulary {model.tokenizer.vocab_size}", flush=True)
    targets = [model.tokenizer.text_to_ids(m["text"]) for m in meta]

    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    step, total_steps = 0, args.max_steps
    ckpt = args.out / "last.pt"
    resumed = args.resume and ckpt.exists()
    if resumed:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, total_steps = state["step"], args.total_steps or args.max_steps
        print(f"resumed at step {step} of {total_steps}", flush=True)

    def lr_at(s: int) -> float:
        if s < args.warmup:
            return args.lr * (s + 1) / args.warmup
        frac = min(1.0, (s - args.warmup) / max(1, total_steps - args.warmup))
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))

    model.train()
    start = last_save = time.monotonic()
    budget = args.minutes * 60
    start_step, losses, epoch = step, [], 0
    fit_budget = not (resumed and args.total_steps)
    while step < total_steps:
        easy = step - start_step < args.easy_steps and bool(words)
        for idx in make_batches(meta, args.batch_seconds, rng, words if easy else sentences):
            if step >= total_steps or (easy and step - start_step >= args.easy_steps):
                break
            x, lens = audio_batch(meta, idx)
            tgt = [targets[i] for i in idx]
            tlen = torch.tensor([len(t) for t in tgt])
            tpad = torch.zeros(len(tgt), int(tlen.max()), dtype=torch.long)
            for row, t in enumerate(tgt):
                tpad[row, : len(t)] = torch.tensor(t)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            log_probs, enc_len, _ = model.forward(input_signal=x, input_signal_length=lens)
            loss = model.loss(log_probs=log_probs, targets=tpad, input_lengths=enc_len, target_lengths=tlen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            losses.append(loss.item())
            elapsed = time.monotonic() - start
            done = step - start_step
            if fit_budget and done >= 40 and (done == 40 or done % 200 == 0):
                # fit the schedule to the time budget, and re-fit as the machine's speed changes
                per_step = elapsed / done
                total_steps = min(args.max_steps, step + max(1, int((budget - elapsed) / per_step)))
                if done == 40:
                    print(f"{per_step:.2f} s/step -> {total_steps} steps in {args.minutes:.0f} min", flush=True)
            if step % 25 == 0:
                print(f"step {step}/{total_steps} epoch {epoch} loss {np.mean(losses[-25:]):.3f} "
                      f"lr {lr_at(step):.2e} {elapsed / 60:.1f} min", flush=True)
            if step % args.eval_every == 0:
                print(f"step {step}: held-out WER (100 utt) {evaluate(model, test_meta):.3f}", flush=True)
            if time.monotonic() - last_save > 600:
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                            "total_steps": total_steps}, ckpt)
                last_save = time.monotonic()
        epoch += 1

    model.eval()
    wer = evaluate(model, test_meta, n=len(test_meta))
    print(f"{step - start_step} steps in {(time.monotonic() - start) / 60:.2f} min", flush=True)
    print(f"final held-out WER ({len(test_meta)} utt): {wer:.4f}", flush=True)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "total_steps": total_steps}, ckpt)
    nemo_path = args.out / "aviary-demo-en.nemo"
    model.save_to(str(nemo_path))
    print(f"saved {nemo_path} ({nemo_path.stat().st_size / 1e6:.1f} MB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
