"""Dev-only parity check of ``models/features.py`` and ``models/encoders`` against NeMo itself.

Run with NeMo's virtualenv (NeMo is never imported by the runtime):

    PYTHONPATH=/work/main /work/nemo-venv/bin/python tools/check_encoders_vs_nemo.py

Builds NeMo's ``AudioToMelSpectrogramPreprocessor`` / ``ConformerEncoder`` with random weights (everything,
BatchNorm statistics and ``pos_bias_u/v`` included), loads the same state dict into ours (strict) and prints
the max-abs difference over valid frames, for a padded batch of different lengths. Exit status 1 if any
difference exceeds the tolerance.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch

TOL = 1e-5
FEAT_IN = 80


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Overwrite every float parameter/buffer with noise so that init-time zeros/ones hide nothing."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point() or name.endswith(("featurizer.window", "featurizer.fb")):
                continue
            noise = torch.randn(t.shape, generator=gen)
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif "norm" in name and name.endswith("weight"):
                t.copy_(1.0 + 0.2 * noise)
            else:
                t.copy_(0.3 * noise)


def make_batch(lengths: list[int], feat_in: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), feat_in, max(lengths), generator=gen)
    lens = torch.tensor(lengths)
    x = x.masked_fill(torch.arange(max(lengths))[None, None, :] >= lens[:, None, None], 0.0)
    return x, lens


def valid_diff(a: torch.Tensor, b: torch.Tensor, la: torch.Tensor, lb: torch.Tensor) -> float:
    """Max |a - b| over each utterance's valid frames ([B, D, T]); inf if the lengths disagree."""
    if not torch.equal(la.long(), lb.long()):
        return float("inf")
    return max(
        float((a[i, :, :n] - b[i, :, :n]).abs().max()) if n > 0 else 0.0 for i, n in enumerate(la.tolist())
    )


# ------------------------------------------------------------------------------------------------------
# Features
# ------------------------------------------------------------------------------------------------------
FEATURE_CASES: list[tuple[str, dict[str, Any]]] = [
    (
        "80 mels per_feature (FastConformer)",
        {"window_size": 0.025, "features": 80, "n_fft": 512, "pad_to": 0},
    ),
    (
        "128 mels per_feature (parakeet v2)",
        {"window_size": 0.025, "features": 128, "n_fft": 512, "pad_to": 0},
    ),
    (
        "80 mels all_features",
        {"window_size": 0.025, "features": 80, "normalize": "all_features", "pad_to": 0},
    ),
    (
        "64 mels NA, hamming, pad_to 16",
        {"features": 64, "normalize": "NA", "window": "hamming", "pad_to": 16},
    ),
    (
        "fixed_mean/std",
        {"features": 64, "normalize": {"fixed_mean": [0.5] * 64, "fixed_std": [2.0] * 64}, "pad_to": 0},
    ),
    (
        "exact_pad, clamp tiny",
        {
            "features": 64,
            "exact_pad": True,
            "log_zero_guard_type": "clamp",
            "log_zero_guard_value": "tiny",
            "pad_to": 0,
        },
    ),
    (
        "splice 3, no preemph, blackman, band",
        {
            "features": 40,
            "frame_splicing": 3,
            "preemph": None,
            "lowfreq": 100,
            "highfreq": 7000,
            "window": "blackman",
            "mag_power": 1.0,
            "pad_to": 0,
        },
    ),
    (
        "bartlett, eps guard, no log",
        {"features": 64, "window": "bartlett", "log_zero_guard_value": "eps", "log": False, "pad_to": 0},
    ),
    (
        "n_window_size/stride samples",
        {
            "window_size": None,
            "window_stride": None,
            "n_window_size": 320,
            "n_window_stride": 160,
            "features": 64,
            "pad_to": 0,
        },
    ),
]


def check_features() -> list[tuple[str, float]]:
    from nemo.collections.asr.modules import AudioToMelSpectrogramPreprocessor

    from models.features import MelFrontend

    gen = torch.Generator().manual_seed(0)
    audio = 0.1 * torch.randn(3, 40000, generator=gen)
    lengths = torch.tensor([40000, 23457, 9000])
    results = []
    for name, kw in FEATURE_CASES:
        kw = {**kw, "dither": 0.0}
        ref = AudioToMelSpectrogramPreprocessor(**kw).eval()
        mine = MelFrontend.from_config({"_target_": "AudioToMelSpectrogramPreprocessor", **kw}).eval()
        fb_diff = float((mine.featurizer.fb - ref.featurizer.fb).abs().max())
        mine.load_state_dict(ref.state_dict(), strict=True)
        # NeMo's fixed_mean/std path only works for batch 1 (it views the stats as [B, F])
        n = 1 if isinstance(kw.get("normalize"), dict) else len(lengths)
        a, la = ref(input_signal=audio[:n], length=lengths[:n])
        b, lb = mine(audio[:n], lengths[:n])
        diff = valid_diff(a, b, la, lb) if a.shape == b.shape else float("inf")
        results.append((f"features: {name} (fb Δ {fb_diff:.1e})", max(diff, fb_diff)))
    return results


# ------------------------------------------------------------------------------------------------------
# Encoders
# ------------------------------------------------------------------------------------------------------
BASE = {
    "feat_in": FEAT_IN,
    "n_layers": 2,
    "d_model": 32,
    "n_heads": 2,
    "dropout": 0.0,
    "dropout_pre_encoder": 0.0,
    "dropout_emb": 0.0,
    "dropout_att": 0.0,
    "pos_emb_max_len": 5000,
}
FAST = dict(
    BASE, subsampling="dw_striding", subsampling_factor=8, subsampling_conv_channels=16, conv_kernel_size=9
)
CLASSIC = dict(BASE, subsampling="striding", subsampling_factor=4, conv_kernel_size=31)
LONG = [211, 157, 64, 9]
SAME = [160, 160]  # for options whose NeMo implementation depends on batch padding

# (name, NeMo kwargs, feature lengths, hook applied to both encoders after loading)
Hook = Callable[[Any], None]
ENCODER_CASES: list[tuple[str, dict[str, Any], list[int], Hook | None]] = [
    ("FastConformer dw_striding x8 rel_pos", FAST, LONG, None),
    ("FastConformer x8, 128 mels", dict(FAST, feat_in=128), LONG, None),
    ("FastConformer x16 dw_striding", dict(FAST, subsampling_factor=16), LONG, None),
    ("Conformer striding x4 kernel 31", CLASSIC, LONG, None),
    ("Conformer striding x2", dict(CLASSIC, subsampling_factor=2), LONG, None),
    ("abs_pos", dict(FAST, self_attention_model="abs_pos"), LONG, None),
    ("use_bias false", dict(FAST, use_bias=False), LONG, None),
    ("untie_biases false", dict(FAST, untie_biases=False), LONG, None),
    ("xscaling false, feat_out 24", dict(FAST, xscaling=False, feat_out=24), LONG, None),
    ("regular context [8, 4]", dict(FAST, att_context_size=[8, 4]), LONG, None),
    (
        "streaming: causal sub, chunked_limited [16,3], causal layer_norm conv",
        dict(
            FAST,
            causal_downsampling=True,
            att_context_style="chunked_limited",
            att_context_size=[16, 3],
            conv_context_size="causal",
            conv_norm_type="layer_norm",
        ),
        LONG,
        None,
    ),
    (
        "streaming multi-lookahead [[16,3],[16,0]]",
        dict(
            FAST,
            causal_downsampling=True,
            att_context_style="chunked_limited",
            att_context_size=[[16, 3], [16, 0]],
            conv_context_size="causal",
            conv_norm_type="layer_norm",
        ),
        LONG,
        None,
    ),
    (
        "causal striding x4, conv_context [5, 3]",
        dict(CLASSIC, causal_downsampling=True, conv_kernel_size=9, conv_context_size=[5, 3]),
        LONG,
        None,
    ),
    ("fused_batch_norm", dict(FAST, conv_norm_type="fused_batch_norm"), LONG, None),
    ("group_norm2 (equal lengths)", dict(FAST, conv_norm_type="group_norm2"), SAME, None),
    ("instance_norm (equal lengths)", dict(FAST, conv_norm_type="instance_norm"), SAME, None),
    (
        "stacking x4 (equal lengths)",
        dict(BASE, subsampling="stacking", subsampling_factor=4),
        [161, 161],
        None,
    ),
    (
        "stacking_norm x4 (equal lengths)",
        dict(BASE, subsampling="stacking_norm", subsampling_factor=4),
        [161, 161],
        None,
    ),
    ("no subsampling (factor 1)", dict(BASE, subsampling_factor=1), [40, 23], None),
    (
        "reduction pooling x2 at layer 0",
        dict(FAST, reduction="pooling", reduction_position=0, reduction_factor=2),
        LONG,
        None,
    ),
    (
        "reduction striding x2 at end",
        dict(FAST, reduction="striding", reduction_position=-1, reduction_factor=2),
        LONG,
        None,
    ),
    (
        "local attention [8, 8]",
        dict(FAST, self_attention_model="rel_pos_local_attn", att_context_size=[8, 8]),
        LONG,
        None,
    ),
    (
        "local attention [8, 2] (asymmetric)",
        dict(FAST, self_attention_model="rel_pos_local_attn", att_context_size=[8, 2]),
        LONG,
        None,
    ),
    (
        "local attention [3, 7] (asymmetric)",
        dict(FAST, self_attention_model="rel_pos_local_attn", att_context_size=[3, 7]),
        LONG,
        None,
    ),
    (
        "local [16, 16], d_model 48 (d_k 24), 1.5k frames",
        dict(FAST, d_model=48, self_attention_model="rel_pos_local_attn", att_context_size=[16, 16]),
        [1500, 1203, 411],
        None,
    ),
    ("use_pytorch_sdpa rel_pos", dict(FAST, use_pytorch_sdpa=True), LONG, None),
    (
        "use_pytorch_sdpa abs_pos",
        dict(FAST, use_pytorch_sdpa=True, self_attention_model="abs_pos"),
        LONG,
        None,
    ),
    (
        "realistic size: d_model 256, 4 heads, 64 conv channels, 10 s",
        dict(FAST, d_model=256, n_heads=4, subsampling_conv_channels=64),
        [1000, 731],
        None,
    ),
    (
        "local [6, 6] + 1 global token (fast-conformer-long)",
        dict(FAST, self_attention_model="rel_pos_local_attn", att_context_size=[6, 6], global_tokens=1),
        LONG,
        None,
    ),
    (
        "local [4, 4] + 1 global token, separate qkv",
        dict(
            FAST,
            self_attention_model="rel_pos_local_attn",
            att_context_size=[4, 4],
            global_tokens=1,
            global_attn_separate=True,
        ),
        LONG,
        None,
    ),
    # NeMo's _compute_out_global_to_all reshapes [G, B, H] as [B*H, G], mixing heads (and batch items) when
    # there is more than one global token; with one head and batch 1 the mix is the identity.
    (
        "local [4, 4] + 2 global tokens spacing 3, separate (1 head, batch 1)",
        dict(
            FAST,
            self_attention_model="rel_pos_local_attn",
            att_context_size=[4, 4],
            global_tokens=2,
            global_tokens_spacing=3,
            global_attn_separate=True,
            n_heads=1,
        ),
        [211],
        None,
    ),
    (
        "change_attention_model(rel_pos_local_attn, [8, 8])",
        FAST,
        LONG,
        lambda enc: enc.change_attention_model("rel_pos_local_attn", [8, 8]),
    ),
    (
        "change_attention_model(local [16, 4]) then back to rel_pos [-1, -1]",
        FAST,
        LONG,
        lambda enc: (
            enc.change_attention_model("rel_pos_local_attn", [16, 4]),
            enc.change_attention_model("rel_pos", [-1, -1]),
        ),
    ),
    (
        "use_bias false + change_attention_model(local [8, 8])",
        dict(FAST, use_bias=False),
        LONG,
        lambda enc: enc.change_attention_model("rel_pos_local_attn", [8, 8]),
    ),
    (
        "chunking factor 2 (NeMo) vs 4 (ours)",
        dict(FAST, subsampling_conv_chunking_factor=2),
        LONG,
        lambda enc: (
            enc.change_subsampling_conv_chunking_factor(4) if enc.__module__.startswith("models") else None
        ),
    ),
    (
        "batch of 1, chunking factor 4 (channel split)",
        dict(FAST, subsampling_conv_chunking_factor=4),
        [203],
        None,
    ),
]


def _zero_new_attention_biases(enc: torch.nn.Module) -> None:
    """NeMo's change_attention_model gives use_bias=false encoders *random* q/k/v/out biases; we use zeros."""
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if ".self_attn.linear_" in name and name.endswith(".bias"):
                p.zero_()


def check_encoders(only: str | None) -> list[tuple[str, float]]:
    from nemo.collections.asr.modules import ConformerEncoder as NemoConformer
    from omegaconf import OmegaConf

    from models.encoders import build_encoder

    results = []
    for i, (name, kw, lengths, hook) in enumerate(ENCODER_CASES):
        if only and only not in name:
            continue
        torch.manual_seed(i)
        ref = NemoConformer.from_config_dict(
            OmegaConf.create({"_target_": "nemo.collections.asr.modules.ConformerEncoder", **kw})
        ).eval()
        randomize_(ref, seed=100 + i)
        mine = build_encoder({"_target_": "nemo.collections.asr.modules.ConformerEncoder", **kw}).eval()
        mine.load_state_dict(ref.state_dict(), strict=True)
        if hook is not None:
            hook(ref)
            hook(mine)
            if not kw.get("use_bias", True):
                _zero_new_attention_biases(ref)
        x, lens = make_batch(lengths, kw["feat_in"], seed=i)
        a, la = ref(audio_signal=x, length=lens)
        b, lb = mine(x, lens)
        results.append((f"encoder: {name}", valid_diff(a, b, la, lb)))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only encoder cases whose name contains this text")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    with torch.inference_mode():
        results = ([] if args.only else check_features()) + check_encoders(args.only)
    width = max(len(n) for n, _ in results)
    for name, diff in results:
        print(f"{name:<{width}}  max|Δ| = {diff:.3e}  {'ok' if diff <= TOL else 'FAIL'}")
    failed = [n for n, d in results if not d <= TOL]
    print(f"\n{len(results) - len(failed)}/{len(results)} within {TOL:g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
