"""Front subsampling of the Conformer (``pre_encode``): conv striding / depthwise striding, frame stacking.

``ConvSubsampling`` treats the features ``[B, T, F]`` as a one-channel image ``[B, 1, T, F]`` and halves
both axes ``log2(factor)`` times with 3×3 stride-2 convolutions (ReLU after each stage), then flattens
``[C, F']`` channel-major and projects to ``d_model``. As in NeMo ≥ 2.5, time steps past each utterance's
(current) length are zeroed after every layer, so batch padding never leaks into valid frames.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.errors import UnsupportedOptionError

KERNEL, STRIDE = 3, 2
# 2**31 elements: beyond this torch conv kernels can fail on indexing (pytorch issue 80020), so NeMo splits
INDEX_LIMIT = 2**31
# CPU: the first conv stage's activations per stretch of input (0 = whole batches in one pass); see cpu_window
CPU_WINDOW_BYTES = 12 << 20


def conv_out_length(
    lengths: torch.Tensor,
    all_paddings: int,
    kernel: int,
    stride: int,
    repeat: int = 1,
    ceil_mode: bool = False,
) -> torch.Tensor:
    """Length after ``repeat`` conv/pool stages: ``L ← floor((L + pads - k)/s + 1)`` (NeMo calc_length)."""
    lengths = lengths.to(torch.float32)
    for _ in range(repeat):
        lengths = torch.div(lengths + (all_paddings - kernel), stride) + 1.0
        lengths = torch.ceil(lengths) if ceil_mode else torch.floor(lengths)
    return lengths.to(torch.int64)


class CausalConv2d(nn.Conv2d):
    """Conv2d that sees no future: zero pad ``k-1`` before, ``s-1`` after, on both axes (``CausalConv2D``)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int = 1
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups)
        self.pad_left, self.pad_right = kernel_size - 1, stride - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = (
            self.pad_left,
            self.pad_right,
            self.pad_left,
            self.pad_right,
        )  # (F left, F right, T left, T right)
        return super().forward(nn.functional.pad(x, pads))


def _time_pads(layer: nn.Module) -> int:
    """Total padding a strided conv adds along time."""
    if isinstance(layer, CausalConv2d):
        return layer.pad_left + layer.pad_right
    return 2 * layer.padding[0]


class ConvSubsampling(nn.Module):
    """``striding`` (plain 3×3 convs) or ``dw_striding`` (FastConformer: depthwise 3×3 + pointwise 1×1).

    Keys: ``conv.{i}.weight/bias`` (ReLUs occupy indices too, as in NeMo's ``nn.Sequential``), ``out.*``.
    """

    def __init__(
        self,
        subsampling: str,
        factor: int,
        feat_in: int,
        feat_out: int,
        channels: int,
        chunking_factor: int = 1,
        causal: bool = False,
    ) -> None:
        super().__init__()
        if subsampling not in ("striding", "dw_striding"):
            # vggnet / *_conv1d cannot run under NeMo >= 2.5's masked subsampling either
            raise UnsupportedOptionError(f"subsampling {subsampling!r} is not supported")
        if factor < 2 or factor & (factor - 1):
            raise UnsupportedOptionError(f"subsampling_factor must be a power of 2, got {factor}")
        self.subsampling, self.factor, self.channels, self.causal = subsampling, factor, channels, causal
        self.stages = int(math.log2(factor))
        self.conv = nn.Sequential(*self._layers(subsampling, channels))
        # time/mel padding per stage: causal pads k-1 before and s-1 after, otherwise (k-1)/2 on each side
        self.all_paddings = (KERNEL - 1) + (STRIDE - 1) if causal else 2 * ((KERNEL - 1) // 2)
        f_out = int(conv_out_length(torch.tensor(feat_in), self.all_paddings, KERNEL, STRIDE, self.stages))
        self.out = nn.Linear(channels * f_out, feat_out)
        self.chunking_factor = 1
        self.change_subsampling_conv_chunking_factor(chunking_factor)

    def _strided(self, c_in: int, c_out: int, groups: int = 1) -> nn.Conv2d:
        if self.causal:
            return CausalConv2d(c_in, c_out, KERNEL, STRIDE, groups=groups)
        return nn.Conv2d(c_in, c_out, KERNEL, STRIDE, padding=(KERNEL - 1) // 2, groups=groups)

    def _layers(self, subsampling: str, ch: int) -> list[nn.Module]:
        layers: list[nn.Module] = [self._strided(1, ch), nn.ReLU()]
        for _ in range(self.stages - 1):
            if subsampling == "striding":
                layers += [self._strided(ch, ch), nn.ReLU()]
            else:  # depthwise 3x3 (stride 2) then pointwise 1x1 mixing channels
                layers += [self._strided(ch, ch, groups=ch), nn.Conv2d(ch, ch, 1), nn.ReLU()]
        return layers

    def change_subsampling_conv_chunking_factor(self, factor: int) -> None:
        """1 = split only when a tensor would exceed 2**31 elements, k = always split k ways, -1 = never."""
        if factor not in (-1, 1) and (factor < 1 or factor & (factor - 1)):
            raise UnsupportedOptionError("subsampling_conv_chunking_factor must be -1, 1 or a power of 2")
        self.chunking_factor = factor

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: [B, T, F]
        window = self.cpu_window(x)
        if window and (x.shape[0] > 1 or x.shape[1] > window + 4 * self.factor):
            return self.windowed(x, lengths, window)
        n_chunks = self._n_chunks(x)
        if n_chunks == 1:
            y, lengths = self._masked_convs(x.unsqueeze(1), lengths)
        elif x.shape[0] > 1:  # split the batch: each utterance's result does not depend on the others
            size = max(1, x.shape[0] // n_chunks)
            parts = [
                self._masked_convs(xb.unsqueeze(1), lb) for xb, lb in zip(x.split(size), lengths.split(size))
            ]
            y, lengths = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        else:  # a single huge utterance: split channels / time inside the convs
            y, lengths = self._masked_convs(x.unsqueeze(1), lengths, split=n_chunks)
        b, c, t, f = y.shape  # [B, C, T', F']
        return self.out(y.transpose(1, 2).reshape(b, t, c * f)), lengths  # [B, T', d_model]

    def cpu_window(self, x: torch.Tensor) -> int:
        """Input frames per stretch on CPU (0: one pass). The first stage's activations ``[B, C, T/2, F/2]``
        are the model's largest tensors; kept within ``CPU_WINDOW_BYTES`` they stay in the CPU's cache, and
        the stack runs ~2x faster than on a whole 28 s utterance or a batch of several (bench/README.md)."""
        if x.device.type != "cpu" or self.chunking_factor != 1 or CPU_WINDOW_BYTES <= 0:
            return 0
        per_frame = self.channels * ((x.shape[2] + 1) // 2) * x.element_size() / STRIDE
        return max(8, int(CPU_WINDOW_BYTES / per_frame) // self.factor) * self.factor

    def windowed(self, x: torch.Tensor, lengths: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One utterance at a time, each cut to its own length, in stretches of ``window`` input frames that
        start at multiples of the factor with ``2·factor`` frames of context on each side: an output frame
        depends on input frames within ``2·factor`` of its own (causal convs included), so each stretch's
        middle equals the one-pass result. Frames past each length are ``out`` of a zero conv output. (On CPU
        ``forward`` does this with cache-sized stretches; long-audio encoding uses it on any device with
        long ones, to bound memory.)"""
        b, t, _ = x.shape
        lengths = lengths.to(torch.int64)
        out_len = conv_out_length(lengths, self.all_paddings, KERNEL, STRIDE, self.stages)
        t_out = int(conv_out_length(torch.tensor(t), self.all_paddings, KERNEL, STRIDE, self.stages))
        pad_row = self.out(x.new_zeros(1, self.out.in_features))  # a zero conv output (the bias)
        out = pad_row.expand(b, t_out, -1).clone()
        f, ctx = self.factor, 2 * self.factor
        for row, n in enumerate(lengths.tolist()):
            pieces = []
            for s0 in range(0, n, window):
                w0, w1 = max(0, s0 - ctx), min(n, s0 + window + ctx)
                y, y_len = self._masked_convs(x[row : row + 1, w0:w1].unsqueeze(1), torch.tensor([w1 - w0], device=x.device))
                first = (s0 - w0) // f
                last = first + window // f if s0 + window < n else int(y_len[0])
                pieces.append(y[:, :, first:last])
            if pieces:
                y = torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0]  # [1, C, T'_b, F']
                _, c, tb, fb = y.shape
                out[row, :tb] = self.out(y.transpose(1, 2).reshape(tb, c * fb))
        return out, out_len

    def _n_chunks(self, x: torch.Tensor) -> int:
        if self.chunking_factor > 1:
            return self.chunking_factor
        limit = INDEX_LIMIT / self.channels * STRIDE * STRIDE
        if self.chunking_factor == -1 or x.numel() <= limit:
            return 1
        return 2 ** math.ceil(math.log2(x.numel() / limit))

    def _masked_convs(
        self, x: torch.Tensor, lengths: torch.Tensor, split: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # x: [B, 1, T, F]. NeMo's MaskedConvSequential zeroes frames past the length before and after every
        # layer; zeroing them after each ReLU (and the last layer) gives the same values: within a stage the
        # strided conv's padded outputs only reach the 1x1 conv (per frame) and the ReLU, which keep them
        # past the length, where they are zeroed before the next strided conv reads them. The activations
        # are the largest tensors of the model ([B, C, T/2, F/2]), so every pass over them counts: ReLU in
        # place, and only the padded tail of each utterance written.
        lengths = lengths.to(torch.int64)
        x = _mask_time(x, lengths)  # the input is the caller's: not in place
        last = len(self.conv) - 1
        for i, layer in enumerate(self.conv):
            if isinstance(layer, nn.ReLU):
                x = torch.relu_(x)  # x is a fresh conv output
            else:
                x = _apply_split(layer, x, split) if split > 1 else layer(x)
            if isinstance(layer, nn.Conv2d) and layer.stride[0] != 1:
                lengths = (lengths + _time_pads(layer) - KERNEL) // STRIDE + 1
            if isinstance(layer, nn.ReLU) or i == last:
                x = _zero_tail_(x, lengths)
        return x, lengths


def _zero_tail_(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero ``x [B, C, T, F]`` in place at time steps past each utterance's length."""
    t = x.shape[2]
    for b, n in enumerate(lengths.tolist()):
        if n < t:
            x[b, :, max(n, 0) :].zero_()
    return x


def _mask_time(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    valid = torch.arange(x.shape[2], device=x.device)[None, :] < lengths[:, None]  # [B, T]
    return x * valid[:, None, :, None].to(x.dtype)


def _apply_split(layer: nn.Module, x: torch.Tensor, parts: int) -> torch.Tensor:
    """Run ``layer`` on pieces of ``x`` [B, C, T, F] whose results are independent (memory only)."""
    if isinstance(layer, nn.Conv2d) and layer.groups > 1:  # depthwise: channels are independent
        size = max(1, layer.in_channels // parts)
        weights, biases = (
            layer.weight.split(size),
            (layer.bias.split(size) if layer.bias is not None else None),
        )
        outs = []
        for i, xc in enumerate(x.split(size, dim=1)):
            xc = (
                nn.functional.pad(xc, (layer.pad_left, layer.pad_right) * 2)
                if isinstance(layer, CausalConv2d)
                else xc
            )
            outs.append(
                nn.functional.conv2d(
                    xc,
                    weights[i],
                    None if biases is None else biases[i],
                    layer.stride,
                    layer.padding,
                    groups=xc.shape[1],
                )
            )
        return torch.cat(outs, dim=1)
    if isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1):  # pointwise: time steps are independent
        size = max(1, x.shape[2] // parts)
        return torch.cat([layer(xt) for xt in x.split(size, dim=2)], dim=2)
    return layer(x)


class StackingSubsampling(nn.Module):
    """Stack ``factor`` consecutive frames and project (``stacking``; ``stacking_norm``: LayerNorm first).

    Lengths are ``ceil(L / factor)`` per utterance. NeMo derives the padding from the *batch* length, which
    makes its lengths depend on batch-mates; the two agree for an utterance on its own.
    """

    def __init__(self, factor: int, feat_in: int, feat_out: int, norm: bool = False) -> None:
        super().__init__()
        self.factor = factor
        self.proj_out = nn.Linear(factor * feat_in, feat_out)
        self.pre_norm = nn.LayerNorm(feat_in) if norm else None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: [B, T, F]
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        x = x * valid[..., None].to(x.dtype)  # stacked padding frames must look like NeMo's zero padding
        b, t, f = x.shape
        x = nn.functional.pad(x, (0, 0, 0, (-t) % self.factor))
        if self.pre_norm is not None:
            x = self.pre_norm(x)
        x = x.reshape(b, -1, f * self.factor)  # [B, T/factor, factor*F]
        return self.proj_out(x), (lengths.to(torch.int64) + self.factor - 1) // self.factor


class TimeReduction(nn.Module):
    """Extra time reduction inside/after the layer stack (``reduction: pooling | striding``).

    ``pooling``: one ``MaxPool1d(factor)``; lengths follow NeMo's ``calc_length`` with kernel = stride =
    factor applied ``log2(factor)`` times (only consistent with the pooling for factor 2, as in NeMo).
    ``striding``: a ``ConvSubsampling('striding')`` over ``[T, d_model]``. Key prefix ``reduction_enc.``.
    """

    def __init__(self, reduction: str, d_model: int, factor: int) -> None:
        super().__init__()
        if reduction not in ("pooling", "striding"):
            raise UnsupportedOptionError(f"reduction must be pooling or striding, not {reduction!r}")
        self.reduction, self.factor = reduction, factor
        if reduction == "pooling":
            self.reduction_enc: nn.Module = nn.MaxPool1d(kernel_size=factor)
        else:
            self.reduction_enc = ConvSubsampling("striding", factor, d_model, d_model, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: [B, T, D]
        if self.reduction == "striding":
            return self.reduction_enc(x, lengths)
        lengths = conv_out_length(lengths, 0, self.factor, self.factor, int(math.log2(self.factor)))
        return self.reduction_enc(x.transpose(1, 2)).transpose(1, 2), lengths
