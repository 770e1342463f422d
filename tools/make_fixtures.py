#!/usr/bin/env python
"""Builds tiny random-weight NeMo ASR models and records NeMo's own outputs on them (parity fixtures).

Dev-only: runs in the NeMo virtualenv (tools/make_nemo_venv.sh), never at test time:

    /work/nemo-venv/bin/python tools/make_fixtures.py --out tests/fixtures/models

For every model in MODELS it
  1. loads NeMo's example config (default dir /work/shared/reference/nemo_configs), shrinks it,
  2. builds the model with NeMo, overwrites every float parameter/buffer with seeded noise (except the
     mel window / filterbank and positional tables), shapes the output layers so greedy decoding emits a
     realistic handful of tokens per second and every greedy decision wins clearly (>= MIN_MARGIN),
  3. ``save_to("<name>.nemo")`` and ``restore_from`` it again (so artifacts resolve as for real checkpoints),
  4. records NeMo's transcripts / tokens / scores / frame indices / durations / timestamps (batch size 1,
     checked against a batch-4 run) in ``<name>.ref.json`` and log-probs, mel features (FEATURE_FILES only)
     and encoder outputs in ``<name>.ref.npz``; asserts the decision margins of everything recorded.

Everything is CPU, fp32, seeded and single-threaded. The schema is documented in tools/README.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = Path("/work/shared/reference/nemo_configs")
DEFAULT_AUDIO = REPO / "tests" / "fixtures" / "audio"

# 16 kHz mono fixture files that get NeMo references (all >= 1.0 s, see tools/README.md).
AUDIO_FILES = [
    "s1_en_us.wav",
    "s2_en_f3.wav",
    "s3_en_m7.wav",
    "s4_en_m3.wav",
    "s5_en_f2.wav",
    "exact_1s.wav",
    "len_16037.wav",
    "silence_1s.wav",
]
# References are recorded with batch size 1: NeMo 3.0's batched TDT decoding reports wrong token durations
# (see tools/README.md); every other output is batch-invariant, which the script checks with BATCHED_CHECK.
BATCH_SIZE = 1
BATCHED_CHECK = 4
# Mel features go into the .npz for these files only (5 of the 7 models share the same 80-mel front end;
# the encoder outputs are small and are stored for every file).
FEATURE_FILES = ["s1_en_us.wav", "exact_1s.wav", "len_16037.wav", "silence_1s.wav"]
SEED = 1234
NOISE_SCALE = 0.4  # std of the noise written into biases / 1-D parameters and buffers (spec: 0.3-0.5)
WEIGHT_GAIN = 1.5  # weight matrices / kernels get std WEIGHT_GAIN / sqrt(fan_in)
# Decision margins: every greedy decision NeMo takes on the fixtures (CTC frame argmax; transducer label
# argmax and TDT duration argmax at every joint step) must win by at least MIN_MARGIN (asserted) in logits /
# log-probs, so that float noise between implementations (~1e-5) or batch sizes (~1e-6) cannot flip it.
# The tuning searches (re-drawing the output layer up to *_ATTEMPTS times) stop at GOAL_MARGIN.
MIN_MARGIN = 1e-3
GOAL_MARGIN = 5e-2
CTC_ATTEMPTS = 16
TRANSDUCER_ATTEMPTS = 8
CTC_LOGIT_STD = 3.0  # std of the (centred) CTC token logits over the fixture frames
JOINT_LOGIT_STD = 4.0  # std of the random part of the joint's token / TDT duration logits
THETA_SCAN, THETA_STEP = 12, 0.02  # transducer threshold candidates: bisection result +- 12 x 0.02 (std units)
LOCAL_ATT_CONTEXT = (8, 8)  # fastconformer_ctc_bpe's extra rel_pos_local_attn run
RATE_TOLERANCE = 1.25  # the tuned token rate may be target / 1.25 .. target * 1.25

# ---------------------------------------------------------------------------------------------------------
# Synthetic text for the SentencePiece tokenizer
# ---------------------------------------------------------------------------------------------------------
WORDS = [
    "the", "a", "an", "and", "or", "but", "so", "if", "then", "than", "that", "this", "these", "those",
    "there", "here", "where", "when", "what", "who", "whom", "whose", "why", "how", "i", "you", "he",
    "she", "it", "we", "they", "me", "him", "her", "us", "them", "my", "your", "his", "its", "our",
    "their", "mine", "yours", "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did",
    "done", "have", "has", "had", "having", "can", "could", "will", "would", "shall", "should", "may",
    "might", "must", "go", "goes", "went", "gone", "going", "come", "comes", "came", "coming", "get",
    "gets", "got", "make", "makes", "made", "take", "takes", "took", "see", "sees", "saw", "seen", "look",
    "looks", "looked", "say", "says", "said", "tell", "told", "ask", "asked", "call", "called", "bring",
    "brought", "buy", "bought", "sell", "sold", "give", "gave", "find", "found", "think", "thought",
    "know", "knew", "known", "want", "wanted", "need", "needed", "like", "liked", "love", "loved", "help",
    "helped", "work", "worked", "play", "played", "run", "ran", "walk", "walked", "talk", "talked", "read",
    "write", "wrote", "sing", "sang", "sit", "sat", "stand", "stood", "open", "opened", "close", "closed",
    "start", "started", "stop", "stopped", "wait", "waited", "try", "tried", "keep", "kept", "leave",
    "left", "put", "set", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "cat", "bird", "fish",
    "horse", "cow", "sheep", "house", "home", "room", "door", "window", "table", "chair", "bed", "car",
    "bus", "train", "plane", "boat", "road", "street", "city", "town", "river", "sea", "shore", "shell",
    "shells", "water", "fire", "tree", "trees", "flower", "grass", "sun", "moon", "star", "sky", "rain",
    "snow", "wind", "day", "night", "morning", "evening", "today", "tomorrow", "yesterday", "week",
    "month", "year", "time", "hour", "minute", "moment", "thing", "things", "place", "people", "man",
    "woman", "child", "children", "friend", "friends", "family", "mother", "father", "brother", "sister",
    "teacher", "student", "doctor", "store", "shop", "market", "school", "office", "book", "books",
    "paper", "letter", "word", "words", "name", "story", "music", "song", "food", "bread", "milk",
    "coffee", "tea", "apple", "orange", "money", "phone", "computer", "picture", "color", "red", "blue",
    "green", "yellow", "white", "black", "big", "small", "long", "short", "old", "new", "young", "good",
    "bad", "great", "little", "high", "low", "early", "late", "hot", "cold", "warm", "happy", "sad",
    "nice", "fine", "right", "wrong", "true", "sure", "ready", "easy", "hard", "slow", "fast", "really",
    "very", "too", "also", "just", "only", "still", "even", "again", "never", "always", "often",
    "sometimes", "soon", "now", "later", "please", "thanks", "thank", "yes", "no", "not", "okay", "hello",
    "hi", "well", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "first", "second", "last", "next", "every", "each", "all", "some", "many", "much", "more", "most",
    "few", "other", "another", "same", "different", "with", "without", "from", "into", "onto", "about",
    "above", "below", "under", "between", "after", "before", "during", "through", "across", "around",
    "near", "far", "to", "of", "in", "on", "at", "by", "for", "up", "down", "out", "off", "away", "back",
    "stella", "bob", "alice", "john", "mary", "london", "paris", "monday", "friday",
]
CONTRACTIONS = ["it's", "don't", "isn't", "can't", "won't", "i'm", "you're", "we're", "they're", "that's",
                "what's", "let's", "didn't", "doesn't", "i'll", "we'll", "she's", "he's", "bob's", "o'clock"]
PROPER = {"stella", "bob", "alice", "john", "mary", "london", "paris", "monday", "friday", "i"}


def synthetic_sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(3, 14)
        words = []
        for _ in range(k):
            w = rng.choice(CONTRACTIONS) if rng.random() < 0.12 else rng.choice(WORDS)
            base = w.split("'")[0]
            if base in PROPER:
                w = w[0].upper() + w[1:]
            words.append(w)
        words[0] = words[0][0].upper() + words[0][1:]
        # commas inside, one of . ? ! at the end, sometimes two clauses
        for i in range(1, len(words) - 1):
            if rng.random() < 0.1:
                words[i] += ","
        end = rng.choices([".", "?", "!"], weights=[6, 3, 1])[0]
        s = " ".join(words) + end
        if rng.random() < 0.15:
            s += " " + rng.choice(["Yes.", "No!", "Okay?", "Really?", "Thanks.", "Well, fine."])
        out.append(s)
    return out


def train_tokenizer(tok_dir: Path, vocab_size: int, seed: int) -> None:
    """SentencePiece BPE via NeMo's own helper (writes tokenizer.model, tokenizer.vocab, vocab.txt)."""
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    tok_dir.mkdir(parents=True, exist_ok=True)
    text_file = tok_dir / "corpus.txt"
    text_file.write_text("\n".join(synthetic_sentences(4000, seed)) + "\n", encoding="utf-8")
    # bos/eos off -> --bos_id=-1 --eos_id=-1; sample_size -1 -> the whole corpus, no random sampling.
    create_spt_model(str(text_file), vocab_size, sample_size=-1, do_lower_case=False, tokenizer_type="bpe",
                     output_dir=str(tok_dir), bos=False, eos=False)
    # Size: the default nmt_nfkc normaliser embeds a 240 KB character map in tokenizer.model (in every .nemo).
    # The corpus is plain ASCII, on which NFKC is the identity, so switch the normaliser to "identity"; the
    # pieces, scores and all encodings/decodings stay the same (checked below).
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    model_file = tok_dir / "tokenizer.model"
    before = spm.SentencePieceProcessor(model_file=str(model_file))
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.precompiled_charsmap = b""
    after = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    lines = text_file.read_text(encoding="utf-8").splitlines()
    assert before.encode(lines) == after.encode(lines), "identity normaliser changed the encodings"
    ids = list(range(after.get_piece_size()))
    assert [before.id_to_piece(i) for i in ids] == [after.id_to_piece(i) for i in ids]
    assert [before.decode([i]) for i in ids] == [after.decode([i]) for i in ids]
    model_file.write_bytes(proto.SerializeToString())
    text_file.unlink()


# ---------------------------------------------------------------------------------------------------------
# Model specs: config edits
# ---------------------------------------------------------------------------------------------------------

def _common(m, tok_dir):
    from omegaconf import open_dict

    with open_dict(m):
        m.train_ds = None
        m.test_ds = None
        m.optim = None
        # keep a validation_ds mapping: BPE models read validation_ds.use_start_end_token inside transcribe()
        m.validation_ds.manifest_filepath = None
        if "tokenizer" in m:
            m.tokenizer.dir = str(tok_dir)
            m.tokenizer.type = "bpe"


def _conformer(enc, d_model, n_heads=2, n_layers=2, conv_channels=None):
    enc.n_layers = n_layers
    enc.d_model = d_model
    enc.n_heads = n_heads
    if conv_channels is not None:
        enc.subsampling_conv_channels = conv_channels


def edit_fastconformer_ctc(m, tok_dir):
    _common(m, tok_dir)
    _conformer(m.encoder, 32, conv_channels=16)


def edit_conformer_ctc(m, tok_dir):
    _common(m, tok_dir)
    _conformer(m.encoder, 48)  # striding x4, conv channels = d_model (-1), kernel 31 from the config
    assert m.encoder.subsampling == "striding" and m.encoder.subsampling_factor == 4
    assert m.encoder.conv_kernel_size == 31


def edit_fastconformer_rnnt(m, tok_dir):
    _common(m, tok_dir)
    _conformer(m.encoder, 32, conv_channels=16)
    m.model_defaults.pred_hidden = 24
    m.model_defaults.joint_hidden = 32


def edit_hybrid_tdt(m, tok_dir):
    _common(m, tok_dir)
    _conformer(m.encoder, 64, conv_channels=16)
    m.model_defaults.pred_hidden = 32
    m.model_defaults.joint_hidden = 24
    assert m.preprocessor.features == 128 and list(m.model_defaults.tdt_durations) == [0, 1, 2, 3, 4]


def edit_hybrid_rnnt(m, tok_dir):
    _common(m, tok_dir)
    _conformer(m.encoder, 40, conv_channels=16)
    m.model_defaults.pred_hidden = 24
    m.model_defaults.joint_hidden = 24


def edit_quartznet(m, tok_dir):
    _common(m, tok_dir)
    blocks = list(m.encoder.jasper)
    keep = [blocks[0], blocks[1], blocks[-2], blocks[-1]]  # k33 s2 | k33 residual | k87 dilation 2 | k1
    filters = [16, 16, 24, 24]
    for b, f in zip(keep, filters):
        b.filters = f
        if b.repeat > 1:
            b.repeat = 2
    m.encoder.jasper = keep
    m.decoder.feat_in = filters[-1]  # the config hard-codes 1024


def edit_citrinet(m, tok_dir):
    _common(m, tok_dir)
    blocks = list(m.encoder.jasper)
    # block 0 (k5), block 1 (stride 2, stride_last, stride_add), block 2 (plain residual middle block),
    # blocks 7 and 14 (the other two stride-2 stride_add blocks, so the encoder keeps its 8x), last block.
    keep = [blocks[0], blocks[1], blocks[2], blocks[7], blocks[14], blocks[-1]]
    for b in keep:
        b.filters = 16
        if b.repeat > 1:
            b.repeat = 2
    keep[-1].filters = 24
    m.encoder.jasper = keep
    m.model_defaults.enc_final = 24
    m.decoder.feat_in = 24


MODELS = {
    "fastconformer_ctc_bpe": {"config": "fast-conformer_ctc_bpe.yaml", "cls": "EncDecCTCModelBPE", "kind": "ctc",
                                  "edit": edit_fastconformer_ctc},
    "conformer_ctc_bpe": {"config": "conformer_ctc_bpe.yaml", "cls": "EncDecCTCModelBPE", "kind": "ctc",
                              "edit": edit_conformer_ctc},
    "fastconformer_rnnt_bpe": {"config": "fast-conformer_transducer_bpe.yaml", "cls": "EncDecRNNTBPEModel",
                                   "kind": "rnnt", "edit": edit_fastconformer_rnnt},
    "fastconformer_hybrid_tdt_ctc_bpe": {"config": "fastconformer_hybrid_tdt_ctc_bpe.yaml",
                                             "cls": "EncDecHybridRNNTCTCBPEModel", "kind": "hybrid",
                                             "edit": edit_hybrid_tdt},
    "fastconformer_hybrid_rnnt_ctc_bpe": {"config": "fastconformer_hybrid_transducer_ctc_bpe.yaml",
                                              "cls": "EncDecHybridRNNTCTCBPEModel", "kind": "hybrid",
                                              "edit": edit_hybrid_rnnt},
    "quartznet_char": {"config": "quartznet_15x5.yaml", "cls": "EncDecCTCModel", "kind": "ctc",
                           "edit": edit_quartznet, "numpy_input": True},
    "citrinet_bpe": {"config": "citrinet_384.yaml", "cls": "EncDecCTCModelBPE", "kind": "ctc", "edit": edit_citrinet},
}
TARGET_RATE = {"bpe": 4.0, "char": 9.0}  # tokens per second of speech after tuning the blank bias


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------

def to_py(x):
    """Convert NeMo outputs (tensors, numpy scalars, nested containers) to plain JSON types."""
    import torch

    if isinstance(x, torch.Tensor):
        return to_py(x.detach().cpu().tolist())
    if isinstance(x, np.ndarray):
        return to_py(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {str(k): to_py(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_py(v) for v in x]
    if isinstance(x, float):
        return float(x)
    return x


def model_class(name):
    import nemo.collections.asr.models as M

    return getattr(M, name)


def randomize_weights(model, seed: int, scale: float = NOISE_SCALE) -> dict:
    """Overwrite every floating parameter / persistent buffer with seeded noise (spec section 10.4)."""
    import torch
    from torch import nn

    skip_exact = {"preprocessor.featurizer.window", "preprocessor.featurizer.fb"}
    norm_weights = set()
    for mname, mod in model.named_modules():
        if isinstance(mod, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)):
            norm_weights.add(f"{mname}.weight")
    g = torch.Generator().manual_seed(seed)
    counts = {"weight": 0, "noise": 0, "norm_weight": 0, "running_var": 0, "skipped": 0}
    seen = set()
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            if not t.is_floating_point() or name in skip_exact or "pos_enc" in name:
                counts["skipped"] += 1
                continue
            if t.data_ptr() in seen:
                continue
            seen.add(t.data_ptr())
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
                counts["running_var"] += 1
            elif name in norm_weights:
                t.copy_(1.0 + scale * torch.randn(t.shape, generator=g))
                counts["norm_weight"] += 1
            elif t.dim() >= 2:
                # weight matrices / conv kernels: He-like std so activations stay O(1) through deep stacks
                # (flat 0.4 noise blows QuartzNet's BatchNorm'd convs up to ~1e2 and makes fp32 parity moot)
                fan_in = t[0].numel()
                t.copy_(WEIGHT_GAIN / math.sqrt(fan_in) * torch.randn(t.shape, generator=g))
                counts["weight"] += 1
            else:
                t.copy_(scale * torch.randn(t.shape, generator=g))
                counts["noise"] += 1
    return counts


def read_audio(path: Path) -> np.ndarray:
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="float32")
    assert sr == 16000 and x.ndim == 1, (path, sr, x.shape)
    return x


def encode_file(model, audio: np.ndarray, encoder=None):
    """model.preprocessor then model.encoder (or `encoder`) on one utterance (eval mode): valid frames only."""
    import torch

    model.eval()
    encoder = model.encoder if encoder is None else encoder.eval()
    with torch.inference_mode():
        sig = torch.from_numpy(audio)[None]
        length = torch.tensor([sig.shape[1]], dtype=torch.long)
        feats, flen = model.preprocessor(input_signal=sig, length=length)
        enc, elen = encoder(audio_signal=feats, length=flen)
    return feats[0, :, : int(flen[0])].clone(), enc[0, :, : int(elen[0])].clone()


def ctc_collapse(labels, blank):
    out, prev = [], blank
    for p in labels:
        if p != blank and (p != prev or prev == blank):
            out.append(int(p))
        prev = p
    return out


def transcribe(model, inputs, batch_size=BATCH_SIZE, **kw):
    out = model.transcribe(inputs, batch_size=batch_size, num_workers=0, verbose=False, **kw)
    model.eval()  # NeMo leaves encoder/decoder/joint in train mode after transcribe()
    if isinstance(out, tuple):  # (best, all) for some RNNT paths
        out = out[0]
    return list(out)


def ts_dict(hyp):
    ts = hyp.timestamp
    assert isinstance(ts, dict), f"no timestamp dict: {type(ts)}"
    return {k: to_py(ts.get(k, [])) for k in ("char", "word", "segment")}


def as_list(x):
    import torch

    if x is None:
        return []
    if isinstance(x, torch.Tensor):
        return [int(v) for v in x.reshape(-1).tolist()]
    return [int(v) for v in x]


def set_ctc_timestamps(model, on: bool, hybrid: bool):
    """Reset compute_timestamps on the CTC decoding config (transcribe(timestamps=True) leaves it on)."""
    from omegaconf import open_dict

    if hybrid:
        cfg = copy.deepcopy(model.cfg.aux_ctc.decoding)
        with open_dict(cfg):
            cfg.compute_timestamps = on
        model.change_decoding_strategy(cfg, decoder_type="ctc", verbose=False)
    else:
        cfg = copy.deepcopy(model.cfg.decoding)
        with open_dict(cfg):
            cfg.compute_timestamps = on
        model.change_decoding_strategy(cfg, verbose=False)


# ---------------------------------------------------------------------------------------------------------
# Decision margins
# ---------------------------------------------------------------------------------------------------------

def top2_margin(x):
    """Best minus second-best value along the last axis (numpy or torch)."""
    import torch

    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double()
    top = torch.topk(x, 2, dim=-1).values
    return top[..., 0] - top[..., 1]


def ctc_margins(logprobs) -> float:
    """Smallest top-2 gap of the per-frame argmax (the CTC greedy decision) of a [T, V+1] matrix."""
    return float(top2_margin(logprobs).min()) if len(logprobs) else math.inf


def transducer_greedy(model, enc, max_symbols):
    """Batch-1 greedy decoding of one encoder output [D, T], step by step as NeMo's label-looping decoders
    (rnnt_label_looping.py / tdt_label_looping.py) do it, recording the margin of every decision NeMo takes:
    label argmax (blank vs tokens and among tokens) at every joint evaluation and, for TDT, the duration
    argmax (for blank steps the durations 0 and 1 mean the same jump, so they count as one choice).
    Returns tokens, frames, durations (TDT) and the smallest label / duration margins."""
    import torch

    dec, joint = model.decoder, model.joint
    blank = model.decoding.blank_id
    durs = list(model.cfg.decoding.get("durations", []) or [])
    tdt = model.cfg.decoding.get("model_type", "rnnt") == "tdt"
    T = enc.shape[1]
    tokens, frames, durations = [], [], []
    label_m, dur_m = math.inf, math.inf
    with torch.inference_mode():
        f = joint.project_encoder(enc.T[None])[0]  # [T, J]
        state = dec.initialize_state(f[None])
        g, state, *_ = dec.predict(torch.tensor([[blank]]), state, add_sos=False, batch_size=1)
        g = joint.project_prednet(g)
        t, last_t, lasts = 0, -1, 0
        while t < T:
            # one label: search over frames while blank wins
            found = None
            while t < T:
                out = joint.joint_after_projection(f[t][None, None], g)[0, 0, 0]  # [V+1 (+D)]
                lab = out[: blank + 1] if tdt else out
                label = int(lab.argmax())
                label_m = min(label_m, float(top2_margin(lab)))
                if tdt:
                    dl = out[blank + 1:].double()
                    d = durs[int(dl.argmax())]
                    if label == blank and 0 in durs and 1 in durs:
                        # blank forces duration 0 to 1: the two are one choice, compare the others to the better
                        i0, i1 = durs.index(0), durs.index(1)
                        dl = dl.clone()
                        dl[i1] = torch.maximum(dl[i0], dl[i1])
                        dl = torch.cat([dl[:i0], dl[i0 + 1:]])
                    if len(dl) > 1:
                        dur_m = min(dur_m, float(top2_margin(dl)))
                    if label == blank:
                        t += max(d, 1)
                        continue
                    found = (label, t, d)
                    t += d
                    break
                if label == blank:
                    t += 1
                    continue
                found = (label, t, None)
                break
            if found is None:
                break
            label, t_lab, d = found
            tokens.append(label)
            frames.append(t_lab)
            if tdt:
                durations.append(d)
            lasts = lasts + 1 if t_lab == last_t else 1
            last_t = t_lab
            g, state, *_ = dec.predict(torch.tensor([[label]]), state, add_sos=False, batch_size=1)
            g = joint.project_prednet(g)
            if max_symbols is not None and lasts >= max_symbols and last_t == t:
                t += 1
    return {"tokens": tokens, "frames": frames, "durations": durations if tdt else None,
            "label_margin": label_m, "duration_margin": dur_m if tdt else None}


# ---------------------------------------------------------------------------------------------------------
# Blank-bias tuning
# ---------------------------------------------------------------------------------------------------------

def unk_id(model):
    """SentencePiece <unk> id of a BPE model (None for char models)."""
    sp = getattr(getattr(model, "tokenizer", None), "tokenizer", None)
    return sp.unk_id() if sp is not None and hasattr(sp, "unk_id") else None


def ctc_head_and_blank(model, hybrid):
    head = model.ctc_decoder if hybrid else model.decoder
    conv = head.decoder_layers[0]
    return head, conv, conv.bias.shape[0] - 1


def redraw(weight, bias, g):
    """Re-draw one output layer with fresh seeded noise, distributed as in randomize_weights()."""
    import torch

    weight.copy_(WEIGHT_GAIN / math.sqrt(weight[0].numel()) * torch.randn(weight.shape, generator=g))
    if bias is not None:
        bias.copy_(NOISE_SCALE * torch.randn(bias.shape, generator=g))


def ctc_count(labels, blank):
    """Number of tokens greedy CTC emits for the frame labels [..., T] (same rule as ctc_collapse)."""
    import torch

    prev = torch.cat([torch.full_like(labels[..., :1], blank), labels[..., :-1]], dim=-1)
    return ((labels != blank) & (labels != prev)).sum(-1)


def tune_ctc_blank(model, encs, secs, target, hybrid=False, seed=0, extra_encs=(), min_tokens=None):
    """Shape the CTC head so greedy decoding emits ~target tokens per second with clear decisions.

    Token logits are centred over the fixture frames (random encoders have a large time-constant output
    component, which otherwise makes one or two tokens win everywhere) and scaled to CTC_LOGIT_STD;
    <unk> is pushed down. The blank bias shift is then not bisected on the token rate (that lands exactly
    on a frame where blank and the best token tie) but chosen among the midpoints between consecutive
    blank/token crossing points: the one with the largest smallest top-2 margin over all frames (including
    `extra_encs`, e.g. the local-attention encoder outputs) whose rate is within RATE_TOLERANCE of target
    and that gives every file of `encs` at least its `min_tokens` tokens (so no utterance is left nearly
    empty). Token/token near-ties do not depend on the blank shift: if the smallest margin stays below
    GOAL_MARGIN the head is re-drawn with new seeded noise (up to CTC_ATTEMPTS times) and the best attempt is
    kept. Returns (blank shift, tokens per second, smallest margin, attempt)."""
    import torch

    _, conv, blank = ctc_head_and_blank(model, hybrid)
    unk = unk_id(model)
    w0, b0 = conv.weight.detach().clone(), conv.bias.detach().clone()
    g = torch.Generator().manual_seed(seed)
    n_main = len(encs)
    all_encs = list(encs) + list(extra_encs)
    best = None
    for attempt in range(CTC_ATTEMPTS):
        with torch.no_grad():
            if attempt == 0:
                conv.weight.copy_(w0)
                conv.bias.copy_(b0)
            else:
                redraw(conv.weight, conv.bias, g)
            logits = torch.cat([conv(e[None])[0] for e in encs], dim=1)  # [V+1, T]
            conv.bias[:blank] -= logits[:blank].mean(dim=1)
            logits = torch.cat([conv(e[None])[0] for e in encs], dim=1)
            keep = [i for i in range(blank) if i != unk]
            gain = CTC_LOGIT_STD / float(logits[keep].std())
            conv.weight.mul_(gain)
            conv.bias.mul_(gain)
            if unk is not None:  # trained models practically never emit <unk>
                conv.bias[unk] -= 30.0
            per_file = [conv(e[None])[0].T.double() for e in all_encs]  # [T, V+1] each
        lg = torch.cat(per_file)
        top2 = torch.topk(lg[:, :blank], 2, dim=-1)
        m1, m2, i1 = top2.values[:, 0], top2.values[:, 1], top2.indices[:, 0]
        b = lg[:, blank]
        cross = torch.unique(m1 - b)  # blank wins on a frame iff shift > its crossing point
        cand = torch.cat([cross[:1] - 1.0, 0.5 * (cross[1:] + cross[:-1]), cross[-1:] + 1.0])
        B = b[None, :] + cand[:, None]  # [C, T]
        margin = torch.where(B >= m1, B - m1, torch.where(B >= m2, m1 - B, m1 - m2)).min(1).values
        n_file, off = [], 0
        for pf in per_file[:n_main]:
            T = len(pf)
            lab = torch.where(B[:, off:off + T] > m1[None, off:off + T], blank, i1[None, off:off + T])
            n_file.append(ctc_count(lab, blank))
            off += T
        n_file = torch.stack(n_file, 1)  # [C, files]
        rates = n_file.sum(1).double() / secs
        rate_ok = (rates >= target / RATE_TOLERANCE) & (rates <= target * RATE_TOLERANCE)
        files_ok = (n_file >= torch.tensor(min_tokens or [0] * n_main)).all(1)
        # rank 2: rate and every file fine; 1: rate fine; 0: only the closest rate(s)
        if bool((rate_ok & files_ok).any()):
            rank, ok = 2, rate_ok & files_ok
        elif bool(rate_ok.any()):
            rank, ok = 1, rate_ok
        else:
            rank, ok = 0, (rates - target).abs() == (rates - target).abs().min()
        score = torch.where(ok, margin, torch.tensor(-math.inf, dtype=margin.dtype))
        k = int(score.argmax())
        trial = ((rank, float(margin[k])), attempt, float(cand[k]), float(rates[k]),
                 conv.weight.detach().clone(), conv.bias.detach().clone())
        if best is None or trial[0] > best[0]:
            best = trial
        if best[0] >= (2, GOAL_MARGIN):
            break
    (_, margin), attempt, delta, r, w, bias = best
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(bias)
        conv.bias[blank] += delta
    return delta, r, margin, attempt


def rnnt_stats(model, encs, secs):
    """Greedy-decode each encoder output alone: (tokens per second, histogram of tokens per emitting frame)."""
    import torch

    n, per_frame = 0, []
    with torch.inference_mode():
        for e in encs:
            hyps = model.decoding.rnnt_decoder_predictions_tensor(
                encoder_output=e[None], encoded_lengths=torch.tensor([e.shape[1]]), return_hypotheses=True)
            h = (hyps[0] if isinstance(hyps, tuple) else hyps)[0]
            n += len(as_list(h.y_sequence))
            frames = as_list(h.timestamp) if not isinstance(h.timestamp, dict) else []
            if frames:
                c = np.bincount(frames)
                per_frame += c[c > 0].tolist()
    hist = np.bincount(per_frame, minlength=2)[1:].tolist() if per_frame else []
    return n / secs, hist


def tune_transducer(model, encs, secs, target, seed, max_symbols):
    """shape_transducer(); if the smallest decision margin stays below GOAL_MARGIN, start again from the
    randomised prediction net / joint with a re-drawn joint output layer (up to TRANSDUCER_ATTEMPTS times)
    and keep the best attempt. Returns (info, tokens per second, smallest margin)."""
    import torch

    final = [m for m in model.joint.joint_net if isinstance(m, torch.nn.Linear)][-1]
    snap = {k: v.detach().clone() for k, v in model.state_dict().items()
            if k.startswith(("decoder.", "joint."))}
    g = torch.Generator().manual_seed(seed + 1000)
    best = None
    for attempt in range(TRANSDUCER_ATTEMPTS):
        model.load_state_dict(snap, strict=False)
        if attempt:
            with torch.no_grad():
                redraw(final.weight, final.bias, g)
        info, r, m = shape_transducer(model, encs, secs, target, seed + attempt, max_symbols)
        info["attempt"] = attempt
        if best is None or m > best[2]:
            best = (info, r, m, {k: v.detach().clone() for k, v in model.state_dict().items()
                                 if k.startswith(("decoder.", "joint."))})
        if m >= GOAL_MARGIN:
            break
    info, r, m, sd = best
    model.load_state_dict(sd, strict=False)
    return info, r, m


def shape_transducer(model, encs, secs, target, seed, max_symbols=(10,)):
    """Make greedy RNNT/TDT decoding of a random-weight model look like speech recognition.

    With plain noise weights the joint's blank-vs-token decision is dominated by a few "hot" frames or
    prediction-net states, so greedy decoding emits bursts of max_symbols identical tokens on a few frames.
    Real models emit about one token per acoustic unit: after a token the prediction net "knows" it was
    emitted and blank wins on that frame. We imitate that with (seeded, random) structured weights:

    * LSTM unit p=0 of the prediction net is a flip-flop (forget gate ~0, input/output gates ~1, recurrent
      weight -4 on its own cell input), so its output alternates sign with every emitted token;
    * joint hidden units 0..3 compute I = |F+G| - |F-G| = 2 sign(F G) min(|F|,|G|) of a scalar acoustic
      feature F (the fastest-varying projection of the centred encoder output, minus a threshold theta) and
      G = the flip-flop output; the blank logit gets -beta * I. A token is emitted when the sign of F agrees
      with the parity, which then flips, so tokens appear where F(t) crosses theta, one per crossing;
    * "hold" tokens (~1/4 of the argmax mass, marked by embedding dim 0) close the flip-flop's input gate
      and open its forget gate, so the parity is kept and one more token follows on the same frame; LSTM
      unit q=1 remembers "last token was a hold token" and joint unit 4 then forbids another hold token;
    * the random output layer is scaled so token and TDT duration logits spread by JOINT_LOGIT_STD, then
      token logits (and TDT duration logits) are centred over (frame, state) pairs so no token wins
      everywhere; <unk> is pushed down; theta is tuned by bisection to ~target tokens per second, then moved
      (THETA_SCAN steps either way) to the value with the clearest greedy decisions on the fixture frames,
      decoding with every setting in `max_symbols`.
    Every other weight keeps its seeded noise. Returns (info, tokens per second, smallest decision margin).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    dec, joint = model.decoder, model.joint
    lstm = dec.prediction["dec_rnn"].lstm
    assert lstm.num_layers == 1 and lstm.proj_size == 0
    H = lstm.hidden_size
    emb = dec.prediction["embed"].weight
    enc_lin, pred_lin = joint.enc, joint.pred
    hidden = joint.joint_net[:-1]
    final = [m for m in joint.joint_net if isinstance(m, torch.nn.Linear)][-1]
    blank = model.decoding.blank_id
    n_out = final.out_features
    p, q = 0, 1
    E = torch.cat([e.T for e in encs], 0)  # [T, D] all fixture frames
    with torch.no_grad():
        # --- prediction net: flip-flop unit p and hold-memory unit q (gate order i, f, g, o) ---------------
        for unit in (p, q):
            for gate in range(4):
                lstm.weight_ih_l0[gate * H + unit] *= 0.1
                lstm.weight_hh_l0[gate * H + unit] *= 0.1
        lstm.weight_hh_l0[2 * H + p, p] = -4.0
        lstm.weight_ih_l0[0 * H + p, 0] = -4.0  # input gate: 6 - 12 for hold tokens
        lstm.weight_ih_l0[1 * H + p, 0] = 4.0  # forget gate: -6 + 12 for hold tokens
        lstm.weight_ih_l0[2 * H + q, 0] = 2.0  # cell input tanh(2*3 - 3) > 0 for hold tokens, < 0 otherwise
        for unit, biases in ((p, (6.0, -6.0, 1.0, 6.0)), (q, (6.0, -6.0, -3.0, 6.0))):
            for gate, b in enumerate(biases):
                lstm.bias_ih_l0[gate * H + unit] = b - lstm.bias_hh_l0[gate * H + unit]
        emb[:, 0] = 0.2 * torch.randn(emb.shape[0], generator=g)  # hold marks are added below

        # --- joint units 0..3: parity x acoustic feature; unit 4: "after a hold token" ----------------------
        mu = E.mean(0)
        # F: the projection that varies fastest from frame to frame (most crossings), i.e. the top solution
        # of the generalised eigenproblem max var(u . (f_t - f_t-1)) / var(u . f_t)
        Ed = torch.cat([(e[:, 1:] - e[:, :-1]).T for e in encs], 0).double()
        C = torch.cov(E.T.double()) + 1e-4 * torch.eye(E.shape[1], dtype=torch.float64)
        Li = torch.linalg.inv(torch.linalg.cholesky(C))
        _, vecs = torch.linalg.eigh(Li @ (Ed.T @ Ed / len(Ed)) @ Li.T)
        u = (Li.T @ vecs[:, -1]).float()
        proj = (E - mu) @ u
        u, med = u / proj.std(), float(proj.median() / proj.std())
        s_f, s_g = 8.0, 1.0
        sign_f = torch.tensor([1.0, -1.0, 1.0, -1.0])
        sign_g = torch.tensor([1.0, -1.0, -1.0, 1.0])
        sign_w = torch.tensor([1.0, 1.0, -1.0, -1.0])

        def set_theta(theta):
            for k in range(4):
                enc_lin.weight[k] = sign_f[k] * s_f * u
                enc_lin.bias[k] = sign_f[k] * s_f * (-(u @ mu) - theta)

        set_theta(med)
        for k in range(5):
            pred_lin.weight[k] = 0.0
            pred_lin.bias[k] = 0.0
            final.weight[:, k] = 0.0
        for k in range(4):
            pred_lin.weight[k, p] = sign_g[k] * s_g
        enc_lin.weight[4] = 0.0
        enc_lin.bias[4] = 0.0
        pred_lin.weight[4, q] = 1.0

        f_proj = joint.project_encoder(E[None])[0]  # [T, J]

        def sample_states():
            seqs = torch.randint(0, blank, (32, 30), generator=g)
            sos = torch.full((32, 1), blank, dtype=torch.long)
            h, _ = dec.predict(torch.cat([sos, seqs], 1), state=None, add_sos=False, batch_size=32)
            return seqs, h

        def centre():
            """Centre token / duration logits over (frame, state) pairs; return the argmax-token counts."""
            _, h = sample_states()
            gi = joint.project_prednet(h.reshape(-1, H)[::8])  # [K, J]
            acc = torch.zeros(n_out)
            counts = torch.zeros(blank)
            for gk in gi:
                z = final(hidden(f_proj + gk))
                acc += z.mean(0)
                counts += torch.bincount(z[:, :blank].argmax(-1), minlength=blank)
            acc /= len(gi)
            final.bias[:blank] -= acc[:blank]
            if n_out > blank + 1:  # TDT duration logits
                final.bias[blank + 1:] -= acc[blank + 1:]
            return counts, gi

        # scale the random output layer: token (and blank) logits and TDT duration logits get a spread of
        # JOINT_LOGIT_STD over (frame, state) pairs, so token/token and duration decisions are clear
        _, h = sample_states()
        gi = joint.project_prednet(h.reshape(-1, H)[::8])
        z = torch.cat([final(hidden(f_proj + gk)) for gk in gi])
        tgain = JOINT_LOGIT_STD / float(z[:, :blank].std(-1).mean())
        final.weight[: blank + 1] *= tgain
        final.bias[: blank + 1] *= tgain
        if n_out > blank + 1:
            dstd = float(z[:, blank + 1:].std(-1).mean())
            final.weight[blank + 1:] *= JOINT_LOGIT_STD / dstd
            final.bias[blank + 1:] *= JOINT_LOGIT_STD / dstd
        unk = unk_id(model)
        if unk is not None:
            final.bias[unk] -= 30.0  # trained models practically never emit <unk>
        counts, _ = centre()
        # hold tokens: in a seeded random order, until they make up ~1/4 of the argmax mass
        hold = torch.zeros(emb.shape[0], dtype=torch.bool)
        share = 0.0
        for t in torch.randperm(blank, generator=g).tolist():
            if share >= 0.25:
                break
            if counts[t] > 0 and t != unk:
                hold[t] = True
                share += float(counts[t] / counts.sum())
        emb[:, 0] += 3.0 * hold.float()
        seqs, h = sample_states()
        par = h[:, :, p]
        flips = par[:, 1:] * par[:, :-1] < 0
        assert torch.equal(flips, ~hold[seqs]) and par.abs().min() > 0.5, "flip-flop unit misbehaves"
        assert torch.equal(h[:, 1:, q] > 0, hold[seqs]) and h[:, :, q].abs().min() > 0.5, "hold unit misbehaves"
        _, gi = centre()
        if unk is not None:
            final.bias[unk] -= 30.0
        # margin without the parity term: best token minus blank, over (frame, state) pairs
        margins = []
        for gk in gi:
            z = final(hidden(f_proj + gk))
            margins.append(z[:, :blank].max(-1).values - z[:, blank])
        margins = torch.cat(margins)
        # the parity term is +-2*s_g*|flip-flop output| ~ +-1.5*beta on the blank logit. Blank bias and beta:
        # "agree" emits for > 99 % and "disagree" for none of the sampled (frame, state) pairs (25 % headroom).
        q_lo, q_hi = float(margins.quantile(0.01)), float(margins.max())
        final.bias[blank] += 0.5 * (q_lo + q_hi)
        beta = 1.25 * 0.5 * (q_hi - q_lo) / (2 * s_g * 0.75)
        final.weight[blank, :4] = -beta * sign_w
        final.weight[:blank, 4] = -30.0 * hold[:blank].float()

    def rate(theta):
        with torch.no_grad():
            set_theta(theta)
        return rnnt_stats(model, encs, secs)[0]

    lo, hi = med, med + 4.0  # the crossing rate falls as theta moves away from the median
    if rate(lo) < target:
        theta = lo
    else:
        for _ in range(20):
            mid = 0.5 * (lo + hi)
            if rate(mid) > target:
                lo = mid
            else:
                hi = mid
        theta = 0.5 * (lo + hi)
    # The bisection ends where one (frame, state) decision flips, i.e. at a blank/token tie. Scan theta around
    # it and keep the value whose decoding of the fixture frames has the largest smallest decision margin
    # (every max_symbols setting that gets recorded), among those within RATE_TOLERANCE of the target rate.
    best = None
    for k in range(-THETA_SCAN, THETA_SCAN + 1):
        th = theta + THETA_STEP * k
        with torch.no_grad():
            set_theta(th)
        runs = [[transducer_greedy(model, e, ms) for e in encs] for ms in max_symbols]
        r = sum(len(x["tokens"]) for x in runs[0]) / secs
        m = min(min(x["label_margin"], x["duration_margin"] or math.inf) for run in runs for x in run)
        ok = target / RATE_TOLERANCE <= r <= target * RATE_TOLERANCE
        key = (ok, m if ok else -abs(r - target))
        if best is None or key > best[0]:
            best = (key, th, r, m)
    _, theta, r, m = best
    with torch.no_grad():
        set_theta(theta)
    info = {"theta": round(theta, 4), "beta": round(beta, 4), "hold_tokens": int(hold.sum())}
    return info, r, m


# ---------------------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------------------

def record_ctc(model, inputs, files, hybrid, branch, npz):
    """CTC branch: frame labels (return_hypotheses=False), log-probs/text/score (True), timestamps; all with
    batch size BATCH_SIZE, then checked against a BATCHED_CHECK-sized run. Returns (results, min margin)."""
    set_ctc_timestamps(model, False, hybrid)
    plain = transcribe(model, inputs, return_hypotheses=False)
    rich = transcribe(model, inputs, return_hypotheses=True)
    tstamp = transcribe(model, inputs, timestamps=True)
    set_ctc_timestamps(model, False, hybrid)
    batched = transcribe(model, inputs, batch_size=BATCHED_CHECK, return_hypotheses=True)
    results, margin = [], math.inf
    for f, hp, hr, ht, hb in zip(files, plain, rich, tstamp, batched):
        logp = hr.y_sequence
        assert logp.ndim == 2, logp.shape
        blank = logp.shape[1] - 1
        frame_labels = as_list(hp.y_sequence)
        assert frame_labels == logp.argmax(-1).tolist(), f"{f}: frame labels differ from log-prob argmax"
        tokens = ctc_collapse(frame_labels, blank)
        assert hp.text == hr.text == ht.text, (f, hp.text, hr.text, ht.text)
        # batch invariance: same decisions and log-probs with batch size BATCHED_CHECK
        assert hb.text == hr.text and hb.y_sequence.argmax(-1).tolist() == frame_labels, f"{f}: batched run differs"
        assert float((hb.y_sequence - logp).abs().max()) < 1e-4, f"{f}: batched log-probs differ"
        margin = min(margin, ctc_margins(logp))
        npz[f"logprobs/{branch}/{f}"] = logp.detach().cpu().float().numpy()
        results.append({"file": f, "text": hr.text, "tokens": tokens, "score": float(hr.score),
                        "frame_labels": frame_labels, "timestamps": ts_dict(ht)})
    return results, margin


def rnnt_outputs(hr, ht, f, tdt):
    """tokens, frames, durations (TDT) of one file from the return_hypotheses / timestamps hypotheses."""
    tokens = as_list(hr.y_sequence)
    assert tokens == as_list(ht.y_sequence), f"{f}: timestamps run changed the tokens"
    assert hr.text == ht.text, (f, hr.text, ht.text)
    if isinstance(hr.timestamp, dict) or hr.timestamp is None or len(as_list(hr.timestamp)) != len(tokens):
        frames = as_list(ht.timestamp["timestep"])
    else:
        frames = as_list(hr.timestamp)
    if isinstance(ht.timestamp, dict) and "timestep" in ht.timestamp:
        assert frames == as_list(ht.timestamp["timestep"]), f"{f}: frame indices differ between runs"
    assert len(frames) == len(tokens)
    durations = None
    if tdt:
        dur = hr.token_duration if hr.token_duration is not None and len(as_list(hr.token_duration)) else None
        if dur is None or len(as_list(dur)) != len(tokens):
            dur = ht.token_duration
        durations = as_list(dur)
        if len(durations) != len(tokens):
            # NeMo gives an empty token_duration when every duration is 0 (spec 6.2)
            assert len(durations) == 0, (f, durations, tokens)
            durations = [0] * len(tokens)
    return tokens, frames, durations


def record_rnnt(model, inputs, files, tdt):
    """Transducer branch with batch size BATCH_SIZE (1: NeMo 3.0's batched TDT token_duration is wrong),
    checked against a BATCHED_CHECK-sized run (tokens, frames, text and timestamps except TDT's). Returns
    (results, number of files whose batched TDT durations differ)."""
    rich = transcribe(model, inputs, return_hypotheses=True)
    tstamp = transcribe(model, inputs, timestamps=True)
    b_rich = transcribe(model, inputs, batch_size=BATCHED_CHECK, return_hypotheses=True)
    b_tstamp = transcribe(model, inputs, batch_size=BATCHED_CHECK, timestamps=True)
    results, dur_diff = [], 0
    for f, hr, ht, br, bt in zip(files, rich, tstamp, b_rich, b_tstamp):
        tokens, frames, durations = rnnt_outputs(hr, ht, f, tdt)
        b_tokens, b_frames, b_durations = rnnt_outputs(br, bt, f, tdt)
        assert (b_tokens, b_frames) == (tokens, frames), f"{f}: batched run gives other tokens / frames"
        assert abs(float(br.score) - float(hr.score)) < 1e-3, f"{f}: batched score differs"
        d = {"file": f, "text": hr.text, "tokens": tokens, "score": float(hr.score), "frames": frames}
        if tdt:
            d["durations"] = durations
            dur_diff += b_durations != durations
        else:
            assert ts_dict(bt) == ts_dict(ht), f"{f}: batched timestamps differ"
        d["timestamps"] = ts_dict(ht)
        results.append(d)
    return results, dur_diff


def rnnt_change(model, hybrid, **greedy):
    from omegaconf import open_dict

    cfg = copy.deepcopy(model.cfg.decoding)
    with open_dict(cfg):
        cfg.compute_timestamps = False
        for k, v in greedy.items():
            cfg.greedy[k] = v
    if hybrid:
        model.change_decoding_strategy(cfg, decoder_type="rnnt", verbose=False)
    else:
        model.change_decoding_strategy(cfg, verbose=False)


def check_nondegenerate(name, branch, results, secs_by_file):
    speech = [r for r in results if r["file"] != "silence_1s.wav"]
    seqs = [tuple(r["tokens"]) for r in speech]
    problems = []
    if any(len(s) == 0 for s in seqs):
        problems.append("empty transcript for " + ", ".join(r["file"] for r in speech if not r["tokens"]))
    if len(set(seqs)) < len(seqs):
        problems.append("identical token sequences for different files")
    for r in speech:
        rate = len(r["tokens"]) / secs_by_file[r["file"]]
        if rate > 20:
            problems.append(f"{r['file']}: {rate:.1f} tokens/s")
    for p in problems:
        print(f"  WARNING {name}/{branch}: {p}")
    return problems


# ---------------------------------------------------------------------------------------------------------
# Main per-model procedure
# ---------------------------------------------------------------------------------------------------------

def make_model(name, spec, args, tok_dir):
    import torch
    from omegaconf import OmegaConf

    conf = OmegaConf.load(args.configs / spec["config"])
    m = conf.model
    spec["edit"](m, tok_dir)
    OmegaConf.resolve(conf)
    cfg = conf.model
    cls = model_class(spec["cls"])
    torch.manual_seed(args.seed)
    model = cls(cfg=cfg, trainer=None)
    model.eval()
    seed = args.seed + sum(map(ord, name))
    counts = randomize_weights(model, seed)
    print(f"  randomised: {counts}")
    return model, cls


def process(name, spec, args, tok_dir, versions, summary):
    import torch

    t0 = time.time()
    print(f"=== {name}")
    model, cls = make_model(name, spec, args, tok_dir)
    kind = spec["kind"]
    hybrid = kind == "hybrid"
    numpy_input = spec.get("numpy_input", False)
    files = AUDIO_FILES
    audio = {f: read_audio(args.audio / f) for f in files}
    secs_by_file = {f: len(a) / 16000 for f, a in audio.items()}
    is_char = spec["cls"] in ("EncDecCTCModel", "EncDecRNNTModel")
    target = TARGET_RATE["char" if is_char else "bpe"]

    # --- tune blank biases on the randomised model -------------------------------------------------------
    # calibrate on all fixture files (silence included, so that it does not produce bursts of tokens)
    encs = [encode_file(model, audio[f])[1] for f in files]
    all_secs = sum(secs_by_file.values())
    print(f"  encoder output std {torch.cat([e.flatten() for e in encs]).std():.3f}")
    extra_encs = []
    if name == "fastconformer_ctc_bpe":  # the local-attention run must have clear decisions, too
        local = copy.deepcopy(model.encoder)
        local.change_attention_model("rel_pos_local_attn", list(LOCAL_ATT_CONTEXT))
        extra_encs = [encode_file(model, audio[f], encoder=local)[1] for f in files]
        del local
    tuning = {}
    if kind in ("rnnt", "hybrid"):
        max_symbols = [int(model.cfg.decoding.greedy.max_symbols)]
        if name == "fastconformer_rnnt_bpe":
            max_symbols.append(1)
        info, r, m = tune_transducer(model, encs, all_secs, target, seed=args.seed + 7, max_symbols=max_symbols)
        tuning["transducer"] = info
        print(f"  transducer shaping {info} -> {r:.2f} tok/s, smallest margin {m:.3g}, "
              f"frames with 1,2,.. tokens {rnnt_stats(model, encs, all_secs)[1]}")
    if kind in ("ctc", "hybrid"):
        # every speech file gets at least a quarter of the target rate (and 1 token)
        min_tokens = [0 if f == "silence_1s.wav" else max(1, math.ceil(0.25 * target * secs_by_file[f]))
                      for f in files]
        delta, r, m, attempt = tune_ctc_blank(model, encs, all_secs, target, hybrid=hybrid, seed=args.seed + 11,
                                              extra_encs=extra_encs, min_tokens=min_tokens)
        tuning["ctc_blank_shift"] = round(delta, 4)
        tuning["ctc_attempt"] = attempt
        print(f"  ctc head attempt {attempt}, blank shift {delta:+.3f} -> {r:.2f} tok/s, smallest margin {m:.3g}")

    # --- save, restore -----------------------------------------------------------------------------------
    out = args.out
    nemo_path = out / f"{name}.nemo"
    ref_sd = {k: v.clone() for k, v in model.state_dict().items()}
    model.save_to(str(nemo_path))
    del model
    model = cls.restore_from(str(nemo_path), map_location=torch.device("cpu"))
    model.eval()
    sd = model.state_dict()
    assert set(sd) == set(ref_sd), "state-dict keys changed across save/restore"
    for k, v in ref_sd.items():
        assert torch.equal(sd[k], v), f"{k} changed across save/restore"
    n_params = sum(p.numel() for p in model.parameters())

    # --- record -------------------------------------------------------------------------------------------
    paths = [str(args.audio / f) for f in files]
    inputs = [audio[f] for f in files] if numpy_input else paths
    npz, encoded = {}, {}
    for f in files:
        feats, enc = encode_file(model, audio[f])
        encoded[f] = enc
        if f in FEATURE_FILES:
            npz[f"features/{f}"] = feats.numpy().astype(np.float32)
        npz[f"encoded/{f}"] = enc.numpy().astype(np.float32)

    results, margins, dur_diff = {}, {}, {}
    if kind == "ctc":
        results["default"], margins["default"] = record_ctc(model, inputs, files, False, "default", npz)
    else:
        tdt = model.cfg.decoding.get("model_type", "rnnt") == "tdt"
        ms_default = int(model.cfg.decoding.greedy.max_symbols)
        branches = [("default", ms_default)]
        if name == "fastconformer_rnnt_bpe":
            branches.append(("max_symbols_1", 1))
        for branch, ms in branches:
            if ms != ms_default:
                rnnt_change(model, hybrid, max_symbols=ms)
            results[branch], dur_diff[branch] = record_rnnt(model, inputs, files, tdt)
            if ms != ms_default:
                rnnt_change(model, hybrid, max_symbols=ms_default)
            # margins: re-run NeMo's greedy decision sequence step by step on the per-file encoder outputs
            margins[branch] = math.inf
            for f, res in zip(files, results[branch]):
                g = transducer_greedy(model, encoded[f], ms)
                assert g["tokens"] == res["tokens"] and g["frames"] == res["frames"], f"{name}/{branch}/{f}: replay"
                if tdt:
                    assert g["durations"] == res["durations"], f"{name}/{branch}/{f}: replayed durations differ"
                margins[branch] = min(margins[branch], g["label_margin"], g["duration_margin"] or math.inf)
        if hybrid:
            model.change_decoding_strategy(decoder_type="ctc", verbose=False)
            results["ctc"], margins["ctc"] = record_ctc(model, inputs, files, True, "ctc", npz)
            model.change_decoding_strategy(decoder_type="rnnt", verbose=False)

    # sanity: transcribe()'s CTC log-probs equal the head applied to our per-file encoder outputs
    for branch in [b for b in ("default", "ctc") if b in results and "frame_labels" in results[b][0]]:
        head = model.ctc_decoder if hybrid else model.decoder
        for f in files:
            with torch.inference_mode():
                lp = head(encoder_output=torch.from_numpy(npz[f"encoded/{f}"])[None])[0].numpy()
            diff = np.abs(lp - npz[f"logprobs/{branch}/{f}"]).max()
            assert diff < 1e-4, f"{name}/{branch}/{f}: transcribe log-probs differ from head(encoder) by {diff}"

    # sanity: transcribe()'s (batched) transducer tokens equal greedy decoding of our per-file encoder outputs
    if kind != "ctc":
        model.eval()
        with torch.inference_mode():
            for f, res in zip(files, results["default"]):
                enc = torch.from_numpy(npz[f"encoded/{f}"])[None]
                hyp = model.decoding.rnnt_decoder_predictions_tensor(
                    encoder_output=enc, encoded_lengths=torch.tensor([enc.shape[2]]), return_hypotheses=True)
                hyp = (hyp[0] if isinstance(hyp, tuple) else hyp)[0]
                assert as_list(hyp.y_sequence) == res["tokens"], f"{name}/{f}: batched vs single decode differ"

    ref = {
        "versions": versions,
        "model": name,
        "target": model.cfg.target,
        "input_mode": "numpy" if numpy_input else "paths",
        "batch_size": BATCH_SIZE,
        "audio": files,
        "results": results,
    }

    if name == "fastconformer_ctc_bpe":
        ctx = list(LOCAL_ATT_CONTEXT)
        model.change_attention_model("rel_pos_local_attn", ctx)
        model.eval()
        la, margins["local_attention"] = record_ctc(model, inputs, files, False, "local_attention", npz)
        ref["local_attention"] = {"att_context_size": ctx, "results": {"default": la}}
        check_nondegenerate(name, "local_attention", la, secs_by_file)

    # every recorded greedy decision must be clear (see MIN_MARGIN)
    ref["min_margins"] = {b: float(f"{m:.4g}") for b, m in margins.items()}
    print(f"  smallest decision margins: {ref['min_margins']}")
    for b, n in dur_diff.items():
        if n:
            print(f"  NeMo bug: batch size {BATCHED_CHECK} gives other TDT token_duration than batch size 1 "
                  f"for {n}/{len(files)} files ({b})")
    low = {b: m for b, m in margins.items() if m < MIN_MARGIN}
    assert not low, f"{name}: decision margins below {MIN_MARGIN}: {low}"

    for branch, res in results.items():
        check_nondegenerate(name, branch, res, secs_by_file)

    with open(out / f"{name}.ref.json", "w", encoding="utf-8") as fh:
        json.dump(ref, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    np.savez_compressed(out / f"{name}.ref.npz", **npz)

    sizes = {ext: (out / f"{name}{ext}").stat().st_size for ext in (".nemo", ".ref.json", ".ref.npz")}
    summary.append({"model": name, "params": n_params, "sizes": sizes, "tuning": tuning, "margins": margins,
                    "tokens": {b: [len(r["tokens"]) for r in res] for b, res in results.items()},
                    "texts": {b: [r["text"] for r in res] for b, res in results.items()},
                    "seconds": round(time.time() - t0, 1)})
    del model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "models")
    ap.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    ap.add_argument("--configs", type=Path, default=DEFAULT_CONFIGS)
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--vocab-size", type=int, default=128)
    args = ap.parse_args(argv)

    import logging as pylogging

    import torch

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)

    import librosa
    import nemo
    import sentencepiece
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(pylogging.ERROR)
    versions = {"nemo": nemo.__version__, "torch": torch.__version__,
                "sentencepiece": sentencepiece.__version__, "librosa": librosa.__version__}
    print("versions:", versions)

    for f in AUDIO_FILES:
        if not (args.audio / f).exists():
            sys.exit(f"missing {args.audio / f}: run tools/make_test_audio.sh first")
    args.out = args.out.resolve()
    args.audio = args.audio.resolve()
    args.out.mkdir(parents=True, exist_ok=True)

    work = Path(tempfile.mkdtemp(prefix="aviary_fixtures_"))
    try:
        tok_dir = work / "tokenizer"
        train_tokenizer(tok_dir, args.vocab_size, args.seed)
        summary = []
        for name in args.models:
            spec = MODELS[name]
            process(name, spec, args, tok_dir, versions, summary)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    hdr = f"{'model':36s} {'params':>8s} {'.nemo':>9s} {'.json':>8s} {'.npz':>9s}  tokens per file"
    print(hdr)
    print("-" * len(hdr))
    for s in summary:
        toks = "; ".join(f"{b}: {' '.join(map(str, t))}" for b, t in s["tokens"].items())
        print(f"{s['model']:36s} {s['params']:8d} {s['sizes']['.nemo']:9d} {s['sizes']['.ref.json']:8d} "
              f"{s['sizes']['.ref.npz']:9d}  {toks}")
    print()
    for s in summary:
        print(f"{s['model']:36s} smallest decision margins: "
              + ", ".join(f"{b} {m:.3g}" for b, m in s["margins"].items()))
    print()
    for s in summary:
        for b, texts in s["texts"].items():
            print(f"{s['model']}/{b}: {texts[0]!r} | {texts[1]!r}")
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"\ntotal size of {args.out}: {total} bytes")


if __name__ == "__main__":
    main()
