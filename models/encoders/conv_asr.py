"""Jasper / QuartzNet / Citrinet encoder (NeMo ``ConvASREncoder``), inference only.

State-dict keys match NeMo's with the model-level ``encoder.`` prefix stripped, e.g.
``encoder.0.mconv.0.conv.weight`` (masked convs), ``encoder.0.mconv.0.weight`` (``conv_mask: false``),
``encoder.3.res.0.0.conv.weight``, ``encoder.3.mconv.N.fc.0.weight`` (squeeze-excite).

Layout of one block's ``mconv`` list (indices matter for the keys), per repeat ``r``:
``[depthwise conv, pointwise conv]`` (separable) or ``[conv]``, then the norm, then ``GroupShuffle`` if
``groups > 1``, then (except after the last repeat) activation and dropout; ``SqueezeExcite`` last if ``se``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.encoders import config_params
from models.errors import CheckpointError

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "identity": nn.Identity,
    "hardtanh": nn.Hardtanh,  # default clamp [-1, 1], exactly what NeMo's registry instantiates
    "relu": nn.ReLU,
    "selu": nn.SELU,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
}


def _first(v: int | Sequence[int]) -> int:
    return int(v[0]) if isinstance(v, Sequence) else int(v)


def _time_mask(lens: Tensor, max_len: int) -> Tensor:
    """``[B, 1, T]`` bool, True on valid frames."""
    return (torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]).unsqueeze(1)


def effective_kernel(kernel: int, factor: float) -> int:
    """NeMo scales the kernel and always rounds it to an odd size (even a factor-1.0 even kernel grows by 1)."""
    k = max(int(kernel * float(factor)), 1)
    return k + 1 if k % 2 == 0 else k


def conv_padding(kernel: int, stride: int, dilation: int, future_context: int) -> int | tuple[int, int]:
    """Symmetric "same" padding, or ``(left, right)`` zero padding when a future context is requested."""
    if stride > 1 and dilation > 1:
        raise CheckpointError("Only stride OR dilation may be greater than 1")
    same = dilation * (kernel - 1) // 2
    if future_context < 0 or kernel <= future_context:
        return same  # a future context wider than the kernel falls back to symmetric padding
    if dilation > 1:
        return (dilation * kernel - 1 - dilation * future_context, dilation * future_context)
    return (kernel - 1 - future_context, future_context)


class MaskedConv1d(nn.Module):
    """Conv1d that zeroes frames ``t >= length`` of its input and returns updated lengths.

    ``heads != -1`` (depthwise only) shares a ``[heads, 1, k]`` kernel across channel groups.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int = 1,
        groups: int = 1,
        heads: int = -1,
    ) -> None:
        super().__init__()
        if not (heads == -1 or groups == in_channels):
            raise CheckpointError("Only use heads for depthwise convolutions")
        self.real_out_channels = out_channels
        self.heads = heads
        if heads != -1:
            in_channels = out_channels = groups = heads
        self.asym_pad: tuple[int, int] | None = tuple(padding) if isinstance(padding, (tuple, list)) else None
        total_pad = sum(self.asym_pad) if self.asym_pad else 2 * int(padding)
        self.conv = nn.Conv1d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=0 if self.asym_pad else int(padding),
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self._total_pad = total_pad
        # lengths are untouched when the conv is "same" (stride 1, padding covering the receptive field)
        self._keeps_length = stride == 1 and total_pad == dilation * (kernel_size - 1)

    def out_lengths(self, lens: Tensor) -> Tensor:
        if self._keeps_length:
            return lens
        k, s, d = self.conv.kernel_size[0], self.conv.stride[0], self.conv.dilation[0]
        # trunc division (not floor), as NeMo does; only differs for empty inputs
        return torch.div(lens + self._total_pad - d * (k - 1) - 1, s, rounding_mode="trunc") + 1

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        x = x * _time_mask(lens, x.shape[-1]).to(x.dtype)  # [B, C, T]
        if self.asym_pad is not None:
            x = nn.functional.pad(x, self.asym_pad)
        batch = x.shape[0]
        if self.heads != -1:
            x = x.reshape(-1, self.heads, x.shape[-1])  # [B * C / heads, heads, T]
        out = self.conv(x)
        if self.heads != -1:
            out = out.reshape(batch, self.real_out_channels, -1)
        return out, self.out_lengths(lens)


class GroupShuffle(nn.Module):
    """Interleaves channels of ``groups`` groups (channel shuffle after grouped convs)."""

    def __init__(self, groups: int, channels: int) -> None:
        super().__init__()
        self.groups = groups
        self.per_group = channels // groups

    def forward(self, x: Tensor) -> Tensor:
        b, _, t = x.shape
        x = x.reshape(b, self.groups, self.per_group, t).transpose(1, 2)
        return x.reshape(b, self.groups * self.per_group, t)


class SqueezeExcite(nn.Module):
    """Channel gating from the masked mean over valid frames (inference always uses the global mean)."""

    def __init__(self, channels: int, reduction_ratio: int, activation: nn.Module) -> None:
        super().__init__()
        hidden = channels // reduction_ratio
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False), activation, nn.Linear(hidden, channels, bias=False)
        )

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        dtype = x.dtype
        x = x.float()  # NeMo computes SE in fp32
        mask = _time_mask(lens, x.shape[-1])  # [B, 1, T]
        x = x.masked_fill(~mask, 0.0)
        mean = x.sum(dim=-1, keepdim=True) / mask.sum(dim=-1, keepdim=True).to(x.dtype)  # [B, C, 1]
        gate = torch.sigmoid(self.fc(mean.transpose(1, 2)).transpose(1, 2))  # [B, C, 1]
        return (x * gate).to(dtype), lens


def _make_norm(kind: str, channels: int, norm_groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(channels, eps=1e-3)
    if kind == "group":
        return nn.GroupNorm(channels if norm_groups == -1 else norm_groups, channels)
    if kind == "instance":
        return nn.GroupNorm(channels, channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    raise CheckpointError(f"unsupported ConvASR normalization {kind!r}")


@dataclass(frozen=True)
class _ConvSpec:
    """Geometry of the (main-path or residual) convolutions of a block."""

    kernel: int
    dilation: int = 1
    padding: int | tuple[int, int] = 0
    groups: int = 1
    heads: int = -1
    separable: bool = False


class JasperBlock(nn.Module):
    """One encoder block: ``repeat`` conv+norm(+act) sub-blocks, optional SE, residual(s), output activation."""

    def __init__(
        self,
        in_ch: int,
        spec: Mapping[str, Any],
        enc: Mapping[str, Any],
        act: nn.Module,
        residual_panes: list[int],
    ) -> None:
        super().__init__()
        self.conv_mask = bool(enc["conv_mask"])
        self._norm = (str(enc["normalization_mode"]), int(enc["norm_groups"]))
        self.residual_mode = str(enc["residual_mode"])
        filters, stride = int(spec["filters"]), _first(spec["stride"])
        self.mconv = nn.ModuleList(self._main_path(in_ch, filters, stride, spec, act))
        self.dense_residual = bool(spec["residual"]) and len(residual_panes) > 0
        self.res: nn.ModuleList | None = None
        if spec["residual"]:
            res_stride = stride if self.residual_mode == "stride_add" else 1
            self.res = nn.ModuleList(
                nn.ModuleList(self._conv_norm(p, filters, _ConvSpec(kernel=1), res_stride))
                for p in (residual_panes or [in_ch])
            )
        self.mout = nn.Sequential(act, nn.Identity())  # activation + (inference no-op) dropout

    def _main_path(
        self, in_ch: int, filters: int, stride: int, spec: Mapping[str, Any], act: nn.Module
    ) -> list[nn.Module]:
        kernel = effective_kernel(_first(spec["kernel"]), spec.get("kernel_size_factor", 1.0))
        dilation = _first(spec["dilation"])
        conv = _ConvSpec(
            kernel=kernel,
            dilation=dilation,
            padding=conv_padding(kernel, stride, dilation, int(spec.get("future_context", -1))),
            groups=int(spec.get("groups", 1)),
            heads=int(spec.get("heads", -1)),
            separable=bool(spec.get("separable", False)),
        )
        repeat = int(spec["repeat"])
        inner_stride = 1 if spec.get("stride_last", False) else stride
        layers: list[nn.Module] = []
        for r in range(repeat):
            last = r == repeat - 1
            layers += self._conv_norm(
                in_ch if r == 0 else filters, filters, conv, stride if last else inner_stride
            )
            if not last:
                layers += [act, nn.Identity()]  # activation + (inference no-op) dropout
        if spec.get("se", False):
            layers.append(SqueezeExcite(filters, int(spec.get("se_reduction_ratio", 8)), act))
        return layers

    def _conv(self, cin: int, cout: int, conv: _ConvSpec, stride: int, groups: int, heads: int) -> nn.Module:
        k, d, pad = conv.kernel, conv.dilation, conv.padding
        if self.conv_mask:
            return MaskedConv1d(
                cin, cout, k, stride=stride, padding=pad, dilation=d, groups=groups, heads=heads
            )
        # plain conv: no masking and -- as in NeMo -- no length bookkeeping either
        return nn.Conv1d(cin, cout, k, stride=stride, padding=pad, dilation=d, groups=groups, bias=False)

    def _conv_norm(self, cin: int, cout: int, conv: _ConvSpec, stride: int) -> list[nn.Module]:
        if conv.separable:  # depthwise (may share "heads" kernels) then grouped pointwise
            layers = [
                self._conv(cin, cin, conv, stride, groups=cin, heads=conv.heads),
                self._conv(cin, cout, _ConvSpec(kernel=1), 1, groups=conv.groups, heads=-1),
            ]
        else:
            layers = [self._conv(cin, cout, conv, stride, groups=conv.groups, heads=-1)]
        layers.append(_make_norm(self._norm[0], cout, self._norm[1]))
        if conv.groups > 1:
            layers.append(GroupShuffle(conv.groups, cout))
        return layers

    @staticmethod
    def _run(layers: nn.ModuleList, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        for layer in layers:
            if isinstance(layer, (MaskedConv1d, SqueezeExcite)):
                x, lens = layer(x, lens)
            else:
                x = layer(x)
        return x, lens

    def forward(self, xs: list[Tensor], lens: Tensor) -> tuple[list[Tensor], Tensor]:
        out, out_lens = self._run(self.mconv, xs[-1], lens)  # [B, F, T']
        if self.res is not None:
            for pane, branch in zip(xs, self.res):
                res_out, _ = self._run(branch, pane, lens)  # masked with the block's *input* lengths
                out = (
                    out + res_out if self.residual_mode in ("add", "stride_add") else torch.max(out, res_out)
                )
        out = self.mout(out)
        if self.dense_residual:
            return xs + [out], out_lens
        return [out], out_lens


class ConvASREncoder(nn.Module):
    """``forward(feats [B, F, T], lengths [B]) -> (enc [B, D, T'], lengths [B] int64)``.

    Frames beyond the returned lengths are not zeroed (same as NeMo).
    """

    def __init__(
        self,
        jasper: Sequence[Mapping[str, Any]],
        activation: str,
        feat_in: int,
        normalization_mode: str = "batch",
        residual_mode: str = "add",
        norm_groups: int = -1,
        conv_mask: bool = True,
        frame_splicing: int = 1,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise CheckpointError(f"unsupported ConvASR activation {activation!r}")
        act = _ACTIVATIONS[activation]()  # one parameter-free instance shared by all blocks, like NeMo
        enc = {
            "conv_mask": conv_mask,
            "normalization_mode": normalization_mode,
            "norm_groups": norm_groups,
            "residual_mode": residual_mode,
        }
        ch = int(feat_in) * int(frame_splicing)
        self.feat_in = ch
        dense_panes: list[int] = []
        blocks: list[JasperBlock] = []
        self.subsampling_factor = 1
        for spec in jasper:
            # NeMo quirk: a block's residual_mode becomes the default for all later blocks
            enc["residual_mode"] = spec.get("residual_mode", enc["residual_mode"])
            panes: list[int] = []
            if spec.get("residual_dense", False):
                dense_panes.append(ch)
                panes = list(dense_panes)  # snapshot: inputs of all dense blocks so far, this one included
            blocks.append(JasperBlock(ch, spec, enc, act, panes))
            ch = int(spec["filters"])
            # NeMo reports the product of the configured strides (not stride**repeat without stride_last)
            self.subsampling_factor *= _first(spec["stride"])
        self.encoder = nn.ModuleList(blocks)
        self.output_dim = ch

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ConvASREncoder:
        c = config_params(cfg)
        return cls(
            jasper=list(c["jasper"]),
            activation=str(c["activation"]),
            feat_in=int(c["feat_in"]),
            normalization_mode=str(c.get("normalization_mode", "batch")),
            residual_mode=str(c.get("residual_mode", "add")),
            norm_groups=int(c.get("norm_groups", -1)),
            conv_mask=bool(c.get("conv_mask", True)),
            frame_splicing=int(c.get("frame_splicing", 1)),
        )

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        xs, lens = [feats], lengths.to(device=feats.device, dtype=torch.long)
        for block in self.encoder:
            xs, lens = block(xs, lens)
        return xs[-1], lens  # [B, D, T'], [B]
