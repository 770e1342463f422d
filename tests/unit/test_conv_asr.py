"""Unit tests of the Jasper / QuartzNet / Citrinet encoder (``models/encoders/conv_asr.py``); no NeMo needed."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from models.encoders import build_encoder
from models.encoders.conv_asr import (
    ConvASREncoder,
    GroupShuffle,
    MaskedConv1d,
    SqueezeExcite,
    conv_padding,
    effective_kernel,
)
from models.errors import CheckpointError

torch.set_num_threads(1)

TARGET = "nemo.collections.asr.modules.ConvASREncoder"


def block(
    filters: int,
    repeat: int,
    kernel: int,
    stride: int = 1,
    dilation: int = 1,
    residual: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    d = {
        "filters": filters,
        "repeat": repeat,
        "kernel": [kernel],
        "stride": [stride],
        "dilation": [dilation],
        "dropout": 0.2,
        "residual": residual,
    }
    d.update(extra)
    return d


QUARTZNET = {
    "_target_": TARGET,
    "feat_in": 16,
    "activation": "relu",
    "conv_mask": True,
    "jasper": [
        block(32, 1, 33, stride=2, residual=False, separable=True),
        block(32, 3, 15, separable=True),
        block(24, 1, 29, dilation=2, residual=False, separable=True),
        block(40, 1, 1, residual=False),
    ],
}

CITRINET = {
    "_target_": TARGET,
    "feat_in": 16,
    "activation": "relu",
    "conv_mask": True,
    "jasper": [
        block(32, 1, 5, residual=False, separable=True, se=True),
        block(
            32,
            3,
            11,
            stride=2,
            separable=True,
            se=True,
            se_reduction_ratio=4,
            stride_last=True,
            residual_mode="stride_add",
            kernel_size_factor=0.5,
        ),
        block(32, 2, 13, separable=True, se=True, se_context_size=16),
        block(40, 2, 7, stride=2, separable=True, se=True, stride_last=True, residual_mode="stride_add"),
        block(48, 1, 41, residual=False, separable=True, se=True, kernel_size_factor=0.25),
    ],
}


def randomized(cfg: dict[str, Any], seed: int = 0) -> ConvASREncoder:
    """Encoder with random weights *and* random BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    enc = ConvASREncoder.from_config(cfg).eval()
    with torch.no_grad():
        for name, t in enc.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif t.is_floating_point():
                t.normal_(0.0, 0.3)
    return enc


def strided_len(lens: torch.Tensor) -> torch.Tensor:
    """One stride-2 conv with odd kernel k and padding (k-1)/2: ``floor((L - 1) / 2) + 1``."""
    return torch.div(lens - 1, 2, rounding_mode="floor") + 1


def assert_batch_invariant(enc: ConvASREncoder, feat: int, lengths: list[int]) -> None:
    torch.manual_seed(1)
    x = torch.randn(len(lengths), feat, max(lengths))
    with torch.no_grad():
        out, out_len = enc(x, torch.tensor(lengths))
        for b, n in enumerate(lengths):
            alone, alone_len = enc(x[b : b + 1, :, :n], torch.tensor([n]))
            assert alone_len.item() == out_len[b].item()
            m = int(alone_len)
            torch.testing.assert_close(out[b, :, :m], alone[0, :, :m], atol=1e-5, rtol=1e-5)


def test_quartznet_shapes_lengths_and_keys() -> None:
    enc = randomized(QUARTZNET)
    assert enc.subsampling_factor == 2 and enc.output_dim == 40
    lens = torch.tensor([101, 64, 9, 1])
    with torch.no_grad():
        out, out_len = enc(torch.randn(4, 16, 101), lens)
    assert out.shape == (4, 40, 51)
    assert out_len.dtype == torch.int64
    assert torch.equal(out_len, strided_len(lens))  # k=33, s=2: L -> floor((L-1)/2) + 1
    sd = enc.state_dict()
    assert sd["encoder.0.mconv.0.conv.weight"].shape == (16, 1, 33)  # depthwise
    assert sd["encoder.0.mconv.1.conv.weight"].shape == (32, 16, 1)  # pointwise
    assert "encoder.0.mconv.2.running_mean" in sd  # BatchNorm
    assert sd["encoder.1.mconv.5.conv.weight"].shape == (32, 1, 15)  # 2nd repeat after act + dropout slots
    assert sd["encoder.1.mconv.12.weight"].shape == (32,)  # 3rd repeat's BatchNorm
    assert sd["encoder.1.res.0.0.conv.weight"].shape == (32, 32, 1)
    assert "encoder.1.res.0.1.running_var" in sd
    assert not any("bias" in k for k in sd if ".conv." in k)  # convs have no bias
    assert all(m.eps == 1e-3 for m in enc.modules() if isinstance(m, nn.BatchNorm1d))


def test_quartznet_batch_invariant() -> None:
    assert_batch_invariant(randomized(QUARTZNET, seed=3), 16, [90, 71, 40, 8])


def test_citrinet_shapes_lengths_and_keys() -> None:
    enc = randomized(CITRINET)
    assert enc.subsampling_factor == 4 and enc.output_dim == 48
    lens = torch.tensor([97, 50, 17, 2])
    with torch.no_grad():
        out, out_len = enc(torch.randn(4, 16, 97), lens)
    assert torch.equal(out_len, strided_len(strided_len(lens)))  # stride_last: one stride-2 conv per block
    assert out.shape == (4, 48, int(out_len.max()))
    sd = enc.state_dict()
    # kernel 11 * 0.5 -> 5; separable repeat 3 = [dw, pw, bn, act, drop] * 2 + [dw, pw, bn], then SE at 13
    assert sd["encoder.1.mconv.0.conv.weight"].shape == (32, 1, 5)
    assert sd["encoder.1.mconv.13.fc.0.weight"].shape == (8, 32)
    assert sd["encoder.1.mconv.13.fc.2.weight"].shape == (32, 8)
    assert enc.encoder[1].mconv[0].conv.stride == (1,) and enc.encoder[1].mconv[10].conv.stride == (2,)
    assert enc.encoder[1].res[0][0].conv.stride == (2,)  # stride_add strides the residual too
    assert sd["encoder.4.mconv.0.conv.weight"].shape == (40, 1, 11)  # 41 * 0.25 -> 10 -> odd 11


def test_citrinet_batch_invariant() -> None:
    assert_batch_invariant(randomized(CITRINET, seed=4), 16, [83, 60, 21, 5])


def test_squeeze_excite_uses_masked_global_mean() -> None:
    se = SqueezeExcite(4, 2, nn.ReLU()).eval()
    x = torch.randn(1, 4, 10)
    y, _ = se(x, torch.tensor([6]))
    mean = x[:, :, :6].mean(-1)  # [1, 4]
    gate = torch.sigmoid(se.fc(mean))
    torch.testing.assert_close(y[0, :, :6], x[0, :, :6] * gate[0, :, None])
    assert torch.all(y[0, :, 6:] == 0)


def test_masked_conv_masks_input_and_updates_lengths() -> None:
    conv = MaskedConv1d(2, 3, 5, stride=2, padding=2)
    x = torch.randn(2, 2, 12)
    out, lens = conv(x, torch.tensor([12, 7]))
    assert lens.tolist() == [6, 4]
    x2 = x.clone()
    x2[1, :, 7:] = 100.0  # garbage beyond the length must not leak in
    out2, _ = conv(x2, torch.tensor([12, 7]))
    torch.testing.assert_close(out, out2)
    # trunc (not floor) division, as NeMo: an empty input gives length 1 here
    assert MaskedConv1d(2, 2, 33, stride=2, padding=16).out_lengths(torch.tensor([0])).tolist() == [1]


@pytest.mark.parametrize(
    ("k", "f", "want"), [(11, 1.0, 11), (10, 1.0, 11), (11, 0.5, 5), (13, 0.5, 7), (4, 0.25, 1)]
)
def test_effective_kernel(k: int, f: float, want: int) -> None:
    assert effective_kernel(k, f) == want


def test_conv_padding() -> None:
    assert conv_padding(11, 1, 1, -1) == 5
    assert conv_padding(11, 2, 1, -1) == 5
    assert conv_padding(11, 1, 1, 2) == (8, 2)
    assert conv_padding(5, 1, 1, 9) == 2  # future context wider than the kernel -> symmetric
    assert conv_padding(5, 1, 2, 1) == (7, 2)  # dilated asymmetric padding (NeMo's formula)
    with pytest.raises(CheckpointError):
        conv_padding(5, 2, 2, -1)


def test_future_context_asymmetric_padding_keeps_length() -> None:
    cfg = {"feat_in": 8, "activation": "relu", "jasper": [block(8, 2, 7, future_context=1, separable=True)]}
    enc = ConvASREncoder.from_config(cfg).eval()
    conv = enc.encoder[0].mconv[0]
    assert conv.asym_pad == (5, 1)
    x = torch.randn(1, 8, 20)
    with torch.no_grad():
        out, lens = enc(x, torch.tensor([20]))
        x2 = x.clone()
        x2[..., 15:] = torch.randn(1, 8, 5)  # frame 10 sees at most one future frame per conv (2 convs)
        out2, _ = enc(x2, torch.tensor([20]))
    assert lens.tolist() == [20] and out.shape == (1, 8, 20)
    torch.testing.assert_close(out[..., :13], out2[..., :13])


def test_conv_mask_false_plain_convs_and_unchanged_lengths() -> None:
    cfg = {
        "feat_in": 8,
        "activation": "relu",
        "conv_mask": False,
        "jasper": [
            block(16, 1, 11, stride=2, residual=False, separable=True),
            block(16, 2, 5, separable=True),
        ],
    }
    enc = ConvASREncoder.from_config(cfg).eval()
    sd = enc.state_dict()
    assert "encoder.0.mconv.0.weight" in sd and "encoder.1.res.0.0.weight" in sd
    with torch.no_grad():
        out, lens = enc(torch.randn(2, 8, 30), torch.tensor([30, 20]))
    assert out.shape == (2, 16, 15)
    assert lens.tolist() == [30, 20]  # NeMo does no length bookkeeping without masked convs


def test_legacy_cls_params_config_and_build_encoder() -> None:
    legacy = {
        "cls": "nemo.collections.asr.modules.ConvASREncoder",
        "params": {k: v for k, v in QUARTZNET.items() if k != "_target_"},
    }
    a, b = ConvASREncoder.from_config(legacy), build_encoder(QUARTZNET)
    assert isinstance(b, ConvASREncoder)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


def test_groups_heads_and_frame_splicing() -> None:
    cfg = {
        "feat_in": 8,
        "frame_splicing": 2,
        "activation": "hardtanh",
        "jasper": [
            block(16, 1, 5, residual=False, separable=True, heads=4),
            block(16, 2, 5, separable=True, groups=4),
        ],
    }
    enc = randomized(cfg)
    sd = enc.state_dict()
    assert sd["encoder.0.mconv.0.conv.weight"].shape == (4, 1, 5)  # shared across channel groups
    assert sd["encoder.0.mconv.1.conv.weight"].shape == (16, 16, 1)  # feat_in * frame_splicing
    assert sd["encoder.1.mconv.1.conv.weight"].shape == (16, 4, 1)  # grouped pointwise
    assert isinstance(enc.encoder[1].mconv[3], GroupShuffle)
    assert isinstance(enc.encoder[0].mout[0], nn.Hardtanh) and enc.encoder[0].mout[0].max_val == 1.0
    assert_batch_invariant(enc, 16, [33, 12])


def test_group_shuffle_interleaves() -> None:
    x = torch.arange(6.0).view(1, 6, 1)
    assert GroupShuffle(2, 6)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_residual_mode_carries_over_and_dense_residual() -> None:
    cfg = {
        "feat_in": 8,
        "activation": "swish",
        "jasper": [
            block(16, 1, 5, residual=False),
            block(16, 1, 5, residual_dense=True, residual_mode="max"),
            block(24, 1, 5, residual_dense=True),
            block(24, 1, 5, residual_dense=True),
        ],
    }
    enc = randomized(cfg)
    # NeMo quirk: a block's residual_mode becomes the default of every later block
    assert [b.residual_mode for b in enc.encoder] == ["add", "max", "max", "max"]
    # dense residual: one branch per earlier dense-block input (this block's own input included)
    assert [len(b.res) if b.res is not None else 0 for b in enc.encoder] == [0, 1, 2, 3]
    assert enc.state_dict()["encoder.3.res.2.0.conv.weight"].shape == (24, 24, 1)
    assert_batch_invariant(enc, 8, [25, 11])


@pytest.mark.parametrize("name", ["relu", "hardtanh", "selu", "swish", "silu", "gelu", "identity"])
def test_activations(name: str) -> None:
    cfg = {"feat_in": 4, "activation": name, "jasper": [block(4, 2, 3)]}
    enc = ConvASREncoder.from_config(cfg).eval()
    with torch.no_grad():
        out, _ = enc(torch.randn(1, 4, 6), torch.tensor([6]))
    assert out.shape == (1, 4, 6)


def test_unknown_activation_rejected() -> None:
    with pytest.raises(CheckpointError):
        ConvASREncoder.from_config({"feat_in": 4, "activation": "mish", "jasper": [block(4, 1, 3)]})


def test_int32_lengths_become_int64() -> None:
    enc = ConvASREncoder.from_config(QUARTZNET).eval()
    with torch.no_grad():
        _, lens = enc(torch.randn(1, 16, 20), torch.tensor([20], dtype=torch.int32))
    assert lens.dtype == torch.int64 and lens.tolist() == [10]
