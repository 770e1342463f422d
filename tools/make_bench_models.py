#!/usr/bin/env python
"""Builds full-size random-weight NeMo checkpoints for the benchmarks (bench/README.md).

Dev-only, runs in the NeMo virtualenv; the outputs are large (~0.45 GB and ~2.5 GB) and gitignored:

    /work/nemo-venv/bin/python tools/make_bench_models.py --out bench/models [--only parakeet-tdt_ctc-110m]

Models (the published sizes; weights are random):
  parakeet-tdt_ctc-110m   FastConformer d_model 512 x 17 layers, 8 heads, hybrid TDT + CTC, 128 mels,
                          prediction net 640 (1 LSTM layer), joint 640, TDT durations 0-4, vocabulary 1024
  parakeet-tdt-0.6b-v2    FastConformer d_model 1024 x 24 layers, 8 heads, TDT only, 128 mels, prediction
                          net 640 (2 LSTM layers), joint 640, TDT durations 0-4, vocabulary 1024
Both are read from NeMo's example config fastconformer_hybrid_tdt_ctc_bpe.yaml (--configs; not copied).

Random weights must still decode *realistically*, or decoding cost is misrepresented: a random joint emits a
token on nearly every frame or never. So after building, the joint's final-layer biases are tuned on the
encoder outputs of the espeak-ng fixture speech:
  1. token logits are centred over (frame, prediction state) pairs, so no single token wins everywhere;
  2. TDT duration logits are biased so that the argmax durations follow DURATION_TARGET (mean ~2 frames,
     like a trained TDT model that hops over silence and emits most tokens with duration 1-2);
  3. the blank bias is bisected until NeMo's own greedy TDT decoding emits TOKENS_PER_S tokens per second.
The CTC head of the hybrid is centred and its blank bias bisected to the same rate. The result, measured by
NeMo's decoding, is written to ``<name>.stats.json`` beside each ``<name>.nemo``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = Path("/work/shared/reference/nemo_configs")
CONFIG = "fastconformer_hybrid_tdt_ctc_bpe.yaml"
SPEECH = REPO / "tests" / "fixtures" / "audio"
SPEECH_FILES = ["s1_en_us.wav", "s2_en_f3.wav", "s3_en_m7.wav", "s4_en_m3.wav", "s5_en_f2.wav"]
TOKENS_PER_S = 4.0  # ~2.7 words/s of read English x ~1.5 BPE tokens per word at vocabulary 1024
# Share of argmax durations 0..4 over (frame, state) pairs. Duration 0 is kept rare: random joints are
# frame-dominated, so a frame that picks duration 0 tends to emit a burst of tokens up to max_symbols.
DURATION_TARGET = [0.02, 0.40, 0.25, 0.17, 0.16]
SEED = 2024

SPECS: dict[str, dict[str, Any]] = {
    "parakeet-tdt_ctc-110m": {"cls": "EncDecHybridRNNTCTCBPEModel", "hybrid": True, "d_model": 512,
                              "n_layers": 17, "n_heads": 8, "conv_channels": 256, "pred_hidden": 640,
                              "pred_rnn_layers": 1, "joint_hidden": 640, "vocab": 1024, "use_bias": True},
    "parakeet-tdt-0.6b-v2": {"cls": "EncDecRNNTBPEModel", "hybrid": False, "d_model": 1024, "n_layers": 24,
                             "n_heads": 8, "conv_channels": 256, "pred_hidden": 640, "pred_rnn_layers": 2,
                             "joint_hidden": 640, "vocab": 1024, "use_bias": False},
}

# ---------------------------------------------------------------------------------------------------------
# Tokenizer: SentencePiece BPE on synthetic English-like text
# ---------------------------------------------------------------------------------------------------------
WORDS = ["the", "a", "and", "or", "but", "so", "if", "then", "that", "this", "there", "here", "where", "when", "what", "who", "why", "how", "i", "you", "he", "she", "it", "we", "they", "me", "him", "her", "us", "them", "my", "your", "his", "our", "their", "is", "are", "was", "were", "be", "been", "do", "does", "did", "have", "has", "had", "can", "could", "will", "would", "should", "may", "might", "must", "go", "went", "come", "came", "get", "got", "make", "made", "take", "took", "see", "saw", "look", "say", "said", "tell", "told", "ask", "call", "bring", "buy", "sell", "give", "find", "think", "know", "want", "need", "like", "love", "help", "work", "play", "run", "walk", "talk", "read", "write", "sing", "sit", "stand", "open", "close", "start", "stop", "wait", "try", "keep", "leave", "put", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "cat", "bird", "fish", "horse", "house", "home", "room", "door", "window", "table", "chair", "car", "bus", "train", "road", "street", "city", "river", "sea", "shore", "shells", "water", "fire", "tree", "sun", "moon", "sky", "rain", "snow", "wind", "day", "night", "morning", "evening", "today", "tomorrow", "time", "hour", "minute", "thing", "place", "people", "man", "woman", "child", "friend", "family", "mother", "father", "brother", "sister", "teacher", "doctor", "store", "school", "office", "book", "paper", "letter", "word", "name", "story", "music", "song", "food", "bread", "milk", "coffee", "tea", "apple", "money", "phone", "picture", "red", "blue", "green", "white", "black", "big", "small", "long", "short", "old", "new", "good", "bad", "great", "little", "high", "low", "early", "late", "hot", "cold", "happy", "nice", "fine", "right", "wrong", "sure", "ready", "easy", "hard", "slow", "fast", "really", "very", "also", "just", "only", "still", "even", "again", "never", "always", "often", "soon", "now", "later", "please", "thanks", "thank", "yes", "no", "not", "okay", "hello", "well", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "first", "last", "next", "every", "all", "some", "many", "much", "more", "most", "other", "same", "with", "without", "from", "into", "about", "above", "under", "between", "after", "before", "through", "around", "to", "of", "in", "on", "at", "by", "for", "up", "down", "out", "off", "away", "back", "stella", "bob", "alice", "john", "mary"]
SYLLABLES = ["ka", "ri", "to", "men", "sa", "lo", "pe", "dar", "vin", "qu", "el", "an", "or", "ist", "ter", "ble", "con", "pro", "ing", "tion", "ment", "ly", "er", "est"]


def synthetic_corpus(n: int, seed: int) -> list[str]:
    """Sentences of common words plus made-up words, so that a 1024-piece BPE vocabulary can be filled."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = []
        for _ in range(rng.randint(3, 16)):
            if rng.random() < 0.25:
                words.append("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))))
            else:
                words.append(rng.choice(WORDS))
        s = " ".join(words)
        lines.append(s[0].upper() + s[1:] + rng.choice([".", ".", "?", "!", ","]))
    return lines


def train_tokenizer(tok_dir: Path, vocab_size: int, seed: int) -> None:
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    tok_dir.mkdir(parents=True, exist_ok=True)
    corpus = tok_dir / "corpus.txt"
    corpus.write_text("\n".join(synthetic_corpus(30000, seed)) + "\n", encoding="utf-8")
    create_spt_model(str(corpus), vocab_size, sample_size=-1, do_lower_case=False, tokenizer_type="bpe",
                     output_dir=str(tok_dir), bos=False, eos=False)
    corpus.unlink()


# ---------------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------------

def build_config(configs: Path, spec: dict[str, Any], tok_dir: Path):
    from omegaconf import OmegaConf, open_dict

    conf = OmegaConf.load(configs / CONFIG)
    m = conf.model
    with open_dict(m):
        m.train_ds = None
        m.test_ds = None
        m.optim = None
        m.validation_ds.manifest_filepath = None
        m.tokenizer.dir = str(tok_dir)
        m.tokenizer.type = "bpe"
        m.encoder.d_model = spec["d_model"]
        m.encoder.n_layers = spec["n_layers"]
        m.encoder.n_heads = spec["n_heads"]
        m.encoder.subsampling_conv_channels = spec["conv_channels"]
        m.encoder.use_bias = spec["use_bias"]
        m.model_defaults.pred_hidden = spec["pred_hidden"]
        m.model_defaults.joint_hidden = spec["joint_hidden"]
        m.decoder.prednet.pred_rnn_layers = spec["pred_rnn_layers"]
        if not spec["hybrid"]:
            del m["aux_ctc"]
            del m["interctc"]
    OmegaConf.resolve(conf)
    assert conf.model.preprocessor.features == 128 and list(conf.model.model_defaults.tdt_durations) == [0, 1, 2, 3, 4]
    return conf.model


def perturb(model, seed: int) -> dict[str, int]:
    """Keep NeMo's own initialisation of weight matrices (well-scaled activations: no overflow, no denormals),
    but give every bias, norm, BatchNorm statistic and positional bias non-trivial values, as a trained model
    has (init-time zeros/ones can make kernels take shortcuts)."""
    import torch
    from torch import nn

    norm_params = set()
    for mname, mod in model.named_modules():
        if isinstance(mod, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)):
            norm_params |= {f"{mname}.weight", f"{mname}.bias"}
    g = torch.Generator().manual_seed(seed)
    counts = {"bias": 0, "norm": 0, "bn_stats": 0}
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            if not t.is_floating_point() or name.startswith("preprocessor.") or "pos_enc" in name:
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
                counts["bn_stats"] += 1
            elif name.endswith("running_mean"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
                counts["bn_stats"] += 1
            elif name in norm_params:
                base = 1.0 if name.endswith(".weight") else 0.0
                t.copy_(base + 0.1 * torch.randn(t.shape, generator=g))
                counts["norm"] += 1
            elif name.endswith(".bias") or "pos_bias" in name:
                t.copy_(0.02 * torch.randn(t.shape, generator=g))
                counts["bias"] += 1
    return counts


def read_speech() -> tuple[list[np.ndarray], float]:
    import soundfile as sf

    clips = []
    for name in SPEECH_FILES:
        x, sr = sf.read(str(SPEECH / name), dtype="float32")
        assert sr == 16000 and x.ndim == 1
        clips.append(x)
    return clips, sum(len(c) for c in clips) / 16000


def encode(model, clips: list[np.ndarray]) -> list:
    import torch

    outs = []
    with torch.inference_mode():
        for x in clips:
            sig = torch.from_numpy(x)[None]
            feats, flen = model.preprocessor(input_signal=sig, length=torch.tensor([sig.shape[1]]))
            enc, elen = model.encoder(audio_signal=feats, length=flen)
            outs.append(enc[0, :, : int(elen[0])].clone())  # [D, T]
    return outs


# ---------------------------------------------------------------------------------------------------------
# Tuning the joint (TDT) and the CTC head
# ---------------------------------------------------------------------------------------------------------

def final_linear(model):
    import torch

    return [m for m in model.joint.joint_net if isinstance(m, torch.nn.Linear)][-1]


def pair_logits(model, encs: list, n_states: int, seed: int):
    """Joint logits for every speech frame x n_states prediction-net states (SOS and random tokens)."""
    import torch

    blank = model.decoding.blank_id if hasattr(model.decoding, "blank_id") else model.decoder.blank_idx
    gen = torch.Generator().manual_seed(seed)
    ids = torch.cat([torch.tensor([blank]), torch.randint(0, blank, (n_states - 1,), generator=gen)])[:, None]
    with torch.inference_mode():
        f = model.joint.project_encoder(torch.cat(encs, dim=1).T[None])[0]  # [T, J]
        g, _ = model.decoder.predict(ids, state=None, add_sos=False, batch_size=ids.shape[0])
        g = model.joint.project_prednet(g[:, 0])  # [S, J]
        hidden = model.joint.joint_net[:-1]
        final = final_linear(model)
        out = torch.stack([final(hidden(f + gi)) for gi in g])  # [S, T, V+1+E]
    return out, blank


def tune_durations(model, logits, blank: int) -> list[float]:
    """Bias the duration logits so that their argmax over all pairs follows DURATION_TARGET."""
    import torch

    final = final_linear(model)
    dur = logits[..., blank + 1:].reshape(-1, len(DURATION_TARGET)).clone()
    centre = dur.mean(dim=0)
    dur -= centre
    target = torch.tensor(DURATION_TARGET)
    bias = torch.zeros(len(DURATION_TARGET))
    scale = dur.std().item()
    for _ in range(300):
        share = torch.bincount((dur + bias).argmax(-1), minlength=len(bias)).float() / dur.shape[0]
        bias += 0.2 * scale * torch.log(target / share.clamp_min(1e-4))
    with torch.no_grad():
        final.bias[blank + 1:] += bias - centre
    share = torch.bincount((dur + bias).argmax(-1), minlength=len(bias)).float() / dur.shape[0]
    return [round(float(s), 3) for s in share]


def centre_tokens(model, logits, blank: int) -> None:
    final = final_linear(model)
    with torch_no_grad():
        final.bias[:blank] -= logits[..., :blank].mean(dim=(0, 1))


def torch_no_grad():
    import torch

    return torch.no_grad()


def tdt_decode(model, encs: list) -> dict[str, Any]:
    """NeMo's greedy TDT decoding of each speech clip: tokens, frames, joint steps (emissions + blank hops)."""
    import torch

    tokens = frames = 0
    per_frame: list[int] = []
    calls = [0]
    hook = final_linear(model).register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    with torch.inference_mode():
        for e in encs:
            hyps = model.decoding.rnnt_decoder_predictions_tensor(
                encoder_output=e[None], encoded_lengths=torch.tensor([e.shape[1]]), return_hypotheses=True)
            h = (hyps[0] if isinstance(hyps, tuple) else hyps)[0]
            toks = h.y_sequence.tolist() if torch.is_tensor(h.y_sequence) else list(h.y_sequence)
            tokens += len(toks)
            frames += e.shape[1]
            ts = h.timestamp.tolist() if torch.is_tensor(h.timestamp) else list(h.timestamp)
            per_frame += np.bincount(np.asarray(ts, dtype=np.int64), minlength=1)[np.unique(ts)].tolist() if ts else []
    hook.remove()
    # batch 1: one joint call per decoding step (emission or blank hop)
    hist = np.bincount(np.asarray(per_frame, dtype=np.int64), minlength=2)[1:].tolist() if per_frame else []
    return {"tokens": tokens, "frames": frames, "joint_calls": calls[0],
            "frames_with_n_tokens": {str(i + 1): n for i, n in enumerate(hist) if n}}


def tune_blank(model, encs: list, secs: float, blank: int) -> tuple[float, float]:
    final = final_linear(model)
    base = final.bias[blank].item()

    def rate(delta: float) -> float:
        with torch_no_grad():
            final.bias[blank] = base + delta
        return tdt_decode(model, encs)["tokens"] / secs

    lo, hi = -40.0, 40.0
    for _ in range(22):
        mid = 0.5 * (lo + hi)
        if rate(mid) > TOKENS_PER_S:
            lo = mid
        else:
            hi = mid
    delta = 0.5 * (lo + hi)
    return delta, rate(delta)


def ctc_rate(logits: list, blank: int, delta: float, secs: float) -> float:
    n = 0
    for lg in logits:
        lab = lg.clone()
        lab[:, blank] += delta
        lab = lab.argmax(-1).tolist()
        prev = blank
        for p in lab:
            if p != blank and p != prev:
                n += 1
            prev = p
    return n / secs


def tune_ctc(model, encs: list, secs: float) -> tuple[float, float]:
    import torch

    conv = model.ctc_decoder.decoder_layers[0]
    blank = conv.bias.shape[0] - 1
    with torch.no_grad():
        logits = torch.cat([conv(e[None])[0] for e in encs], dim=1)  # [V+1, T]
        conv.bias[:blank] -= logits[:blank].mean(dim=1)
        logits = [conv(e[None])[0].T.clone() for e in encs]  # [T, V+1]
    lo, hi = -40.0, 40.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if ctc_rate(logits, blank, mid, secs) > TOKENS_PER_S:
            lo = mid
        else:
            hi = mid
    delta = 0.5 * (lo + hi)
    with torch.no_grad():
        conv.bias[blank] += delta
    return delta, ctc_rate(logits, blank, delta, secs)


# ---------------------------------------------------------------------------------------------------------

def build(name: str, spec: dict[str, Any], args: argparse.Namespace, tok_dir: Path) -> dict[str, Any]:
    import nemo.collections.asr.models as M
    import torch

    t0 = time.time()
    cfg = build_config(args.configs, spec, tok_dir)
    torch.manual_seed(args.seed)
    model = getattr(M, spec["cls"])(cfg=cfg, trainer=None)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[{name}] built {spec['cls']}: {n_params / 1e6:.1f} M parameters ({time.time() - t0:.0f} s)")
    print(f"[{name}] perturbed: {perturb(model, args.seed + len(name))}")

    clips, secs = read_speech()
    encs = encode(model, clips)
    logits, blank = pair_logits(model, encs, args.states, args.seed)
    centre_tokens(model, logits, blank)
    logits, blank = pair_logits(model, encs, args.states, args.seed)
    share = tune_durations(model, logits, blank)
    print(f"[{name}] duration argmax shares over (frame, state) pairs: {share}")
    del logits
    delta, rate = tune_blank(model, encs, secs, blank)
    stats = tdt_decode(model, encs)
    print(f"[{name}] TDT blank bias {delta:+.2f}: {rate:.2f} tokens/s; {stats}")
    result: dict[str, Any] = {"name": name, "class": spec["cls"], "parameters": n_params, "spec": spec,
                              "speech_seconds": round(secs, 3), "tdt_tokens_per_s": round(rate, 3),
                              "tdt_blank_bias_delta": round(delta, 3), "duration_argmax_shares": share,
                              "tdt_decode": stats, "frames_per_s": round(stats["frames"] / secs, 3)}
    if spec["hybrid"]:
        cdelta, crate = tune_ctc(model, encs, secs)
        print(f"[{name}] CTC blank bias {cdelta:+.2f}: {crate:.2f} tokens/s")
        result.update(ctc_tokens_per_s=round(crate, 3), ctc_blank_bias_delta=round(cdelta, 3))

    path = args.out / f"{name}.nemo"
    model.save_to(str(path))
    restored = getattr(M, spec["cls"]).restore_from(str(path), map_location=torch.device("cpu"))
    restored.eval()
    texts = restored.transcribe([str(SPEECH / f) for f in SPEECH_FILES], batch_size=4, num_workers=0,
                                verbose=False)
    texts = [t.text if hasattr(t, "text") else t for t in (texts[0] if isinstance(texts, tuple) else texts)]
    result["nemo_texts"] = texts
    result["bytes"] = path.stat().st_size
    result["build_seconds"] = round(time.time() - t0, 1)
    (args.out / f"{name}.stats.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"[{name}] wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {result['build_seconds']} s; "
          f"NeMo texts: {[t[:40] for t in texts]}")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "models")
    ap.add_argument("--configs", type=Path, default=DEFAULT_CONFIGS)
    ap.add_argument("--only", action="append", choices=sorted(SPECS), help="build only these (repeatable)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--states", type=int, default=48, help="prediction-net states used to tune the joint")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = Path(tmp) / "tokenizer"
        train_tokenizer(tok_dir, 1024, args.seed)
        for name in args.only or list(SPECS):
            build(name, SPECS[name], args, tok_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
