"""NeMo's ``ConformerEncoder``: Conformer (Gulati et al., 2020) and FastConformer (Rekesh et al., 2023).

features ``[B, F, T]`` → subsampling (``pre_encode``) → ×√d (``xscaling``) → N × Conformer block → optional
``out_proj`` → ``[B, D, T']``. Each block is a macaron sandwich::

    x = x + ½·FF(LN(x));  x = x + MHSA(LN(x));  x = x + Conv(LN(x));  x = x + ½·FF(LN(x));  x = LN(x)

Frames past an utterance's length never influence valid frames (attention masks them, the convolution
module zeroes them), so results do not depend on batch padding. Output frames past the length are not
zeroed (as in NeMo). Keys are NeMo's with the ``encoder.`` prefix removed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from models.encoders import config_params
from models.encoders.attention import (
    LocalRelPositionMultiHeadAttention,
    MultiHeadAttention,
    PositionalEncoding,
    RelPositionMultiHeadAttention,
)
from models.encoders.packing import Packing
from models.encoders.subsampling import ConvSubsampling, StackingSubsampling, TimeReduction
from models.errors import UnsupportedOptionError

ATTENTION_MODELS = ("rel_pos", "rel_pos_local_attn", "abs_pos")
POSITION_CACHE_BYTES = 32 << 20  # ConformerEncoder._position_projections: most memory for projected positions


@dataclass
class ConformerConfig:
    """``ConformerEncoder`` arguments that matter at inference (NeMo key names and defaults)."""

    feat_in: int
    n_layers: int
    d_model: int
    feat_out: int = -1
    causal_downsampling: bool = False
    subsampling: str | None = "striding"
    subsampling_factor: int = 4
    subsampling_conv_chunking_factor: int = 1
    subsampling_conv_channels: int = -1
    reduction: str | None = None
    reduction_position: int | None = None
    reduction_factor: int = 1
    ff_expansion_factor: int = 4
    self_attention_model: str = "rel_pos"
    n_heads: int = 4
    att_context_size: Any = None
    att_context_style: str = "regular"
    xscaling: bool = True
    untie_biases: bool = True
    pos_emb_max_len: int = 5000
    conv_kernel_size: int = 31
    conv_norm_type: str = "batch_norm"
    conv_context_size: Any = None
    use_bias: bool = True
    global_tokens: int = 0
    global_tokens_spacing: int = 1
    global_attn_separate: bool = False
    use_pytorch_sdpa: bool = False  # fused attention kernel (not for local attention, as in NeMo)
    att_context_size_all: list = field(default_factory=list)  # derived: every supported [left, right]

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> ConformerConfig:
        params = config_params(cfg)
        known = {f.name for f in dataclasses.fields(cls)} - {"att_context_size_all"}
        config = cls(**{k: v for k, v in params.items() if k in known})
        config.att_context_size_all = _context_sizes(config.att_context_size, config.att_context_style)
        config.att_context_size = list(config.att_context_size_all[0])
        config.conv_context_size = _conv_context(config.conv_context_size, config.conv_kernel_size)
        return config


def _context_sizes(att_context_size: Any, style: str) -> list[list[int]]:
    """NeMo's ``_calc_context_sizes``: a list of ``[left, right]`` options; inference uses the first."""
    if style == "chunked_limited_with_rc":
        return [[-1, -1, -1]]
    if not att_context_size:
        return [[-1, -1]]
    sizes = (
        [list(att_context_size)]
        if isinstance(att_context_size[0], int)
        else [list(c) for c in att_context_size]
    )
    for left, right in sizes:
        if style == "chunked_limited" and left > 0 and left % (right + 1) > 0:
            raise UnsupportedOptionError(
                "chunked_limited needs att_context_size[0] % (att_context_size[1]+1) == 0"
            )
    return sizes


def _conv_context(conv_context_size: Any, kernel: int) -> list[int]:
    """Depthwise-conv padding ``[left, right]``: centred by default, ``causal`` = all on the left."""
    if conv_context_size is None:
        return [(kernel - 1) // 2, (kernel - 1) // 2]
    if conv_context_size == "causal":
        return [kernel - 1, 0]
    left, right = (int(c) for c in conv_context_size)
    if left + right + 1 != kernel:
        raise UnsupportedOptionError(f"conv_context_size {conv_context_size} does not fit kernel {kernel}")
    return [left, right]


def context_mask(t: int, style: str, context: list[int], device: torch.device) -> torch.Tensor | None:
    """``[T, T]`` True where query ``i`` may attend to key ``j`` (None = everywhere)."""
    i = torch.arange(t, device=device)[:, None]
    j = torch.arange(t, device=device)[None, :]
    if style == "chunked_limited" and context[1] >= 0:  # whole chunks of right+1 frames, left chunks limited
        chunk = context[1] + 1
        n_left = context[0] // chunk if context[0] >= 0 else 10000
        diff = i // chunk - j // chunk
        return (diff >= 0) & (diff <= n_left)
    if style == "chunked_limited_with_rc" and len(context) == 3 and sum(context) != -3:
        left, chunk, right = context
        start = (i // chunk * chunk - left).clamp(min=0)
        end = (i // chunk * chunk + chunk - 1 + right).clamp(max=t - 1)
        return (j >= start) & (j <= end)
    if style not in ("regular", "chunked_limited", "chunked_limited_with_rc"):
        raise UnsupportedOptionError(f"unsupported att_context_style {style!r}")
    allowed = None
    if context[0] >= 0:
        allowed = j - i >= -context[0]
    if context[1] >= 0 and style == "regular":
        allowed = (j - i <= context[1]) if allowed is None else allowed & (j - i <= context[1])
    return allowed


# ----------------------------------------------------------------------------------------------------------
# Conformer block
# ----------------------------------------------------------------------------------------------------------
class FeedForward(nn.Module):
    """``linear2(SiLU(linear1(x)))`` with ``d_ff = ff_expansion_factor · d``."""

    def __init__(self, d_model: int, d_ff: int, use_bias: bool = True) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff, bias=use_bias)
        self.linear2 = nn.Linear(d_ff, d_model, bias=use_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.silu(self.linear1(x)))


class FusedBatchNorm1d(nn.Module):
    """BatchNorm folded into a per-channel affine map (NeMo's ``fused_batch_norm``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None] + self.bias[:, None]  # x: [B, C, T]


class MaskedGroupNorm(nn.Module):
    """GroupNorm / InstanceNorm over the *valid* frames only (``group_normN`` / ``instance_norm``).

    NeMo's ``nn.GroupNorm``/``nn.InstanceNorm1d`` also average over batch padding (its outputs then depend
    on batch-mates); both agree for an utterance on its own. ``instance_norm`` has no parameters.
    """

    def __init__(self, groups: int, channels: int, affine: bool, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape  # x: [B, C, T], valid: [B, T]
        xg = x.reshape(b, self.groups, c // self.groups, t)
        m = valid[:, None, None, :].to(x.dtype)
        count = m.sum(dim=(2, 3), keepdim=True) * (c // self.groups)
        mean = (xg * m).sum(dim=(2, 3), keepdim=True) / count
        var = ((xg - mean) ** 2 * m).sum(dim=(2, 3), keepdim=True) / count  # biased, like torch's norms
        x = ((xg - mean) / torch.sqrt(var + self.eps)).reshape(b, c, t)
        return x if self.weight is None else x * self.weight[:, None] + self.bias[:, None]


class ConvModule(nn.Module):
    """Pointwise conv → GLU → (zero padding) → depthwise conv → norm → SiLU → pointwise conv."""

    def __init__(self, d_model: int, kernel: int, norm_type: str, context: list[int], use_bias: bool) -> None:
        super().__init__()
        self.context, self.norm_type = context, norm_type
        self.pointwise_conv1 = nn.Conv1d(d_model, 2 * d_model, 1, bias=use_bias)
        self.depthwise_conv = nn.Conv1d(d_model, d_model, kernel, groups=d_model, bias=use_bias)
        self.batch_norm = self._norm(norm_type, d_model)  # NeMo's key name, whatever the norm type
        self.pointwise_conv2 = nn.Conv1d(d_model, d_model, 1, bias=use_bias)

    @staticmethod
    def _norm(norm_type: str, d: int) -> nn.Module:
        if norm_type == "batch_norm":
            return nn.BatchNorm1d(d)
        if norm_type == "layer_norm":
            return nn.LayerNorm(d)
        if norm_type == "fused_batch_norm":
            return FusedBatchNorm1d(d)
        if norm_type == "instance_norm":
            return MaskedGroupNorm(d, d, affine=False)
        if norm_type.startswith("group_norm"):
            return MaskedGroupNorm(int(norm_type[len("group_norm") :]), d, affine=True)
        raise UnsupportedOptionError(f"unsupported conv_norm_type {norm_type!r}")

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        # The pointwise (k=1) convolutions run as F.linear on [B, T, C] with the same weights (a view): one
        # GEMM with no layout changes, measurably faster than oneDNN's 1x1 Conv1d on CPU (bench/README.md).
        x = F.glu(_pointwise(self.pointwise_conv1, x), dim=-1)  # [B, T, D]
        x = x.masked_fill(pad_mask[:, :, None], 0.0)  # padding must look like the conv's zero padding
        return _pointwise(self.pointwise_conv2, self._depthwise(x, pad_mask))  # [B, T, D]

    def forward_packed(self, x: torch.Tensor, packing: Packing) -> torch.Tensor:
        """``x [N, D]`` packed frames → ``[N, D]``; the depthwise convolution runs group by group."""
        x = F.glu(_pointwise(self.pointwise_conv1, x), dim=-1)  # [N, D]
        out = torch.empty_like(x)
        for g in packing.groups:  # g.pad leaves zeros in the padding, as the conv's zero padding needs
            out[g.rows] = g.unpad(self._depthwise(g.pad(x), g.pad_mask))
        return _pointwise(self.pointwise_conv2, out)

    def _depthwise(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]`` (zero padding) → depthwise conv → norm → SiLU → ``[B, T, D]``."""
        x = self.depthwise_conv(F.pad(x.transpose(1, 2), self.context))  # [B, D, T]
        if isinstance(self.batch_norm, MaskedGroupNorm):
            x = self.batch_norm(x, ~pad_mask)
        elif self.norm_type == "layer_norm":
            x = self.batch_norm(x.transpose(1, 2)).transpose(1, 2)
        else:
            x = self.batch_norm(x)
        return F.silu(x).transpose(1, 2)


def _pointwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A kernel-size-1 ``Conv1d`` applied to channels-last ``x [B, T, C_in]`` -> ``[B, T, C_out]``."""
    return F.linear(x, conv.weight.squeeze(-1), conv.bias)


def make_attention(
    kind: str,
    cfg: ConformerConfig,
    context: list[int],
    use_bias: bool,
    shared_bias: tuple[nn.Parameter, nn.Parameter] | None = None,
    global_tokens: int = 0,
) -> nn.Module:
    """The attention module for ``kind`` (the key layout differs: abs_pos has no positional weights)."""
    u, v = shared_bias if shared_bias is not None else (None, None)
    if kind == "rel_pos":
        return RelPositionMultiHeadAttention(cfg.n_heads, cfg.d_model, use_bias, u, v, cfg.use_pytorch_sdpa)
    if kind == "rel_pos_local_attn":
        return LocalRelPositionMultiHeadAttention(
            cfg.n_heads,
            cfg.d_model,
            context,
            use_bias,
            u,
            v,
            global_tokens,
            cfg.global_tokens_spacing,
            cfg.global_attn_separate and global_tokens > 0,
        )
    if kind == "abs_pos":
        return MultiHeadAttention(cfg.n_heads, cfg.d_model, use_bias, cfg.use_pytorch_sdpa)
    raise UnsupportedOptionError(f"unsupported self_attention_model {kind!r}")


class ConformerLayer(nn.Module):
    def __init__(self, cfg: ConformerConfig, shared_bias: tuple[nn.Parameter, nn.Parameter] | None) -> None:
        super().__init__()
        d, d_ff = cfg.d_model, cfg.d_model * cfg.ff_expansion_factor
        self.norm_feed_forward1 = nn.LayerNorm(d)
        self.feed_forward1 = FeedForward(d, d_ff, cfg.use_bias)
        self.norm_self_att = nn.LayerNorm(d)
        self.self_attn = make_attention(
            cfg.self_attention_model, cfg, cfg.att_context_size, cfg.use_bias, shared_bias, cfg.global_tokens
        )
        self.norm_conv = nn.LayerNorm(d)
        self.conv = ConvModule(
            d, cfg.conv_kernel_size, cfg.conv_norm_type, cfg.conv_context_size, cfg.use_bias
        )
        self.norm_feed_forward2 = nn.LayerNorm(d)
        self.feed_forward2 = FeedForward(d, d_ff, cfg.use_bias)
        self.norm_out = nn.LayerNorm(d)

    def forward(
        self,
        x: torch.Tensor,
        pos_emb: torch.Tensor,
        att_mask: torch.Tensor | None,
        pad_mask: torch.Tensor,
        pos_proj: torch.Tensor | None = None,
    ) -> torch.Tensor:
        extra = {} if pos_proj is None else {"pos_proj": pos_proj}  # rel_pos: linear_pos(pos_emb), cached
        x = x + 0.5 * self.feed_forward1(self.norm_feed_forward1(x))
        x = x + self.self_attn(self.norm_self_att(x), pos_emb, att_mask, pad_mask, **extra)
        x = x + self.conv(self.norm_conv(x), pad_mask)
        x = x + 0.5 * self.feed_forward2(self.norm_feed_forward2(x))
        return self.norm_out(x)

    def forward_packed(
        self, x: torch.Tensor, pos_emb: torch.Tensor | None, packing: Packing, pos_proj: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The same block on packed frames ``[N, D]`` (``pos_emb``: the rel_pos table for ``t_max``)."""
        x = x + 0.5 * self.feed_forward1(self.norm_feed_forward1(x))
        x = x + self.self_attn.forward_packed(self.norm_self_att(x), pos_emb, packing, pos_proj)
        x = x + self.conv.forward_packed(self.norm_conv(x), packing)
        x = x + 0.5 * self.feed_forward2(self.norm_feed_forward2(x))
        return self.norm_out(x)


# ----------------------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------------------
class ConformerEncoder(nn.Module):
    """``forward(feats [B, F, T], lengths [B]) -> (enc [B, D, T'], lengths [B] int64)``."""

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.d_model, self.subsampling_factor = cfg.d_model, cfg.subsampling_factor
        self.self_attention_model, self.att_context_size = (
            cfg.self_attention_model,
            list(cfg.att_context_size),
        )
        self.xscale = cfg.d_model**0.5 if cfg.xscaling else None
        self.pre_encode = self._pre_encode(cfg)
        self.pos_enc = PositionalEncoding(
            cfg.self_attention_model, cfg.d_model, cfg.pos_emb_max_len, self.xscale, self.att_context_size[:2]
        )
        shared = None
        if not cfg.untie_biases and cfg.self_attention_model == "rel_pos":  # one u/v pair for all layers
            d_k = cfg.d_model // cfg.n_heads
            shared = (
                nn.Parameter(torch.zeros(cfg.n_heads, d_k)),
                nn.Parameter(torch.zeros(cfg.n_heads, d_k)),
            )
        self.layers = nn.ModuleList(ConformerLayer(cfg, shared) for _ in range(cfg.n_layers))
        self._pos_cache: tuple[Any, int, list[torch.Tensor]] | None = None  # see _position_projections
        self.out_proj = nn.Linear(cfg.d_model, cfg.feat_out) if 0 < cfg.feat_out != cfg.d_model else None
        self.output_dim = cfg.feat_out if self.out_proj is not None else cfg.d_model
        self.reduction_subsampling, self.reduction_position = None, None
        if cfg.reduction and cfg.reduction_factor > 1:
            self.reduction_subsampling = TimeReduction(cfg.reduction, cfg.d_model, cfg.reduction_factor)
            self.reduction_position = cfg.reduction_position

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ConformerEncoder:
        return cls(ConformerConfig.from_dict(cfg))

    @staticmethod
    def _pre_encode(cfg: ConformerConfig) -> nn.Module:
        if not cfg.subsampling or cfg.subsampling_factor <= 1:
            return nn.Linear(cfg.feat_in, cfg.d_model)
        if cfg.subsampling in ("stacking", "stacking_norm"):
            return StackingSubsampling(
                cfg.subsampling_factor, cfg.feat_in, cfg.d_model, norm=cfg.subsampling == "stacking_norm"
            )
        channels = cfg.subsampling_conv_channels if cfg.subsampling_conv_channels != -1 else cfg.d_model
        return ConvSubsampling(
            cfg.subsampling,
            cfg.subsampling_factor,
            cfg.feat_in,
            cfg.d_model,
            channels,
            cfg.subsampling_conv_chunking_factor,
            cfg.causal_downsampling,
        )

    def forward(
        self, feats: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths = self._subsample(feats, lengths)
        x, pos_emb = self.pos_enc(x)
        pos_proj = self._position_projections(x.shape[1])
        att_mask, pad_mask = self._masks(lengths, x.shape[1])
        for i, layer in enumerate(self.layers):
            x = layer(x, pos_emb, att_mask, pad_mask, None if pos_proj is None else pos_proj[i])
            if self.reduction_position == i:
                x, lengths = self.reduction_subsampling(x, lengths)
                _, pos_emb = self.pos_enc(x)  # new positions for the shorter sequence; x is not rescaled
                pos_proj = self._position_projections(x.shape[1])
                att_mask, pad_mask = self._masks(lengths, x.shape[1])
        if self.out_proj is not None:
            x = self.out_proj(x)
        if self.reduction_position == -1:
            x, lengths = self.reduction_subsampling(x, lengths)
        return x.transpose(1, 2), lengths.to(torch.int64)  # [B, D, T']

    def _subsample(self, feats: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[B, F, T]`` → ``pre_encode`` → ``[B, T', D]`` and lengths (int64)."""
        if feats.shape[1] != self.cfg.feat_in:
            raise ValueError(f"expected features [B, {self.cfg.feat_in}, T], got {tuple(feats.shape)}")
        x = feats.transpose(1, 2)  # [B, T, F]
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64, device=x.device)
        if isinstance(self.pre_encode, nn.Linear):
            return self.pre_encode(x), lengths.to(torch.int64)
        return self.pre_encode(x, lengths.to(torch.int64))  # [B, T', D]

    # -- packed execution (models/encoders/packing.py) ---------------------------------------------------
    @property
    def packable(self) -> bool:
        """Whether :meth:`forward_groups` can run packed: full or limited-context ``rel_pos``/``abs_pos``
        attention and no time reduction (local attention and reduction keep the padded path)."""
        return (
            self.self_attention_model in ("rel_pos", "abs_pos")
            and self.reduction_subsampling is None
            and all(type(layer.self_attn) in (RelPositionMultiHeadAttention, MultiHeadAttention)
                    for layer in self.layers)
        )

    def forward_groups(
        self, groups: Sequence[tuple[torch.Tensor, torch.Tensor | None]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Several padded feature batches ``(feats [Bᵢ, F, Tᵢ], lengths [Bᵢ])`` → one ``([ΣBᵢ, D, T'_max],
        lengths)``, utterances in group order, the same values as :meth:`forward` on each utterance.

        Each group is subsampled on its own; then the Conformer blocks run packed (feed-forward, projections
        and pointwise convolutions over the valid frames of all groups at once; attention and the depthwise
        convolution per group). Group utterances of similar length together: padding within a group still
        costs attention and subsampling work. Output frames past an utterance's length are zeros.
        """
        if not self.packable:
            raise UnsupportedOptionError("packed execution needs rel_pos or abs_pos attention and no reduction")
        xs, lengths = [], []
        for feats, feat_len in groups:
            x, n = self._subsample(feats, feat_len)
            xs.append(self.pos_enc(x)[0])  # scaled (abs_pos: positions added, per group)
            lengths.append(n)
        packing = Packing(lengths, [x.shape[1] for x in xs], self._masks)
        x = packing.pack(xs)  # [N, D]
        del xs
        pos_emb = None
        if self.self_attention_model == "rel_pos":  # the positional table for the longest group
            pos_emb = self.pos_enc.table(packing.t_max)
        pos_proj = self._position_projections(packing.t_max)
        for i, layer in enumerate(self.layers):
            x = layer.forward_packed(x, pos_emb, packing, None if pos_proj is None else pos_proj[i])
        if self.out_proj is not None:
            x = self.out_proj(x)
        return packing.unpack(x).transpose(1, 2), torch.cat(lengths)  # [B, D, T'_max]

    def _position_projections(self, t: int) -> list[torch.Tensor] | None:
        """rel_pos, without autograd: each layer's ``linear_pos`` over the relative positions ``t-1 … -(t-1)``
        (``[1, 2t-1, D]``), sliced from tables projected once for the longest input so far — the same rows
        for any ``t``, so recomputing them per call (2t-1 rows per layer: as many as two of the block's own
        projections) is wasted work. None where the tables would exceed ``POSITION_CACHE_BYTES``."""
        if self.self_attention_model != "rel_pos" or torch.is_grad_enabled() or t < 1:
            return None
        attns = [layer.self_attn for layer in self.layers]
        if not all(type(a) is RelPositionMultiHeadAttention and type(a.linear_pos) is nn.Linear for a in attns):
            return None  # (a quantised linear_pos, for one, has no weight tensor to key the tables on)
        w = attns[0].linear_pos.weight
        row_bytes = len(attns) * self.d_model * w.element_size()
        max_t = (POSITION_CACHE_BYTES // row_bytes + 1) // 2
        if t > max_t:
            return None
        cached = self._pos_cache
        t_table = cached[1] if cached is not None else 0
        if t > t_table:
            t_table = min(max(t, 2 * t_table, 64), max_t)
            self.pos_enc.extend(t_table)
        key = (self.pos_enc.pe.data_ptr(), self.pos_enc.pe.shape,
               tuple((a.linear_pos.weight.data_ptr(), a.linear_pos.weight._version) for a in attns))
        if cached is None or cached[0] != key or cached[1] != t_table:
            table = self.pos_enc.table(t_table)  # [1, 2·t_table-1, D]
            with torch.inference_mode(False), torch.no_grad():  # usable inside and outside inference mode
                cached = (key, t_table, [a.linear_pos(table.clone()) for a in attns])
            self._pos_cache = cached
        return [p[:, t_table - t : t_table + t - 1] for p in cached[2]]

    def _masks(self, lengths: torch.Tensor, t: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``att_mask`` [B,1,T,T] True = blocked (None: local attention), ``pad_mask`` [B, T] True = pad."""
        valid = torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]  # [B, T]
        if self.self_attention_model == "rel_pos_local_attn":
            return None, ~valid
        allowed = valid[:, None, :] & valid[:, :, None]  # [B, T, T]
        context = context_mask(t, self.cfg.att_context_style, self.att_context_size, lengths.device)
        if context is not None:
            allowed = allowed & context
        return ~allowed[:, None], ~valid

    # -- NeMo's runtime switches ----------------------------------------------------------------------
    def change_attention_model(
        self, self_attention_model: str | None = None, att_context_size: list[int] | None = None
    ) -> None:
        """Switch attention type/context, keeping the weights (e.g. ``rel_pos_local_attn``, ``[128, 128]``).

        Like NeMo, the new attention modules always have q/k/v/out biases and no global tokens. Where the
        old ones had no such weights (``use_bias: false``; ``linear_pos`` when coming from ``abs_pos``),
        NeMo leaves them *randomly initialised* so its output depends on the RNG; here they are zeros,
        which is the deterministic equivalent of "no bias".
        """
        context = list(att_context_size) if att_context_size else list(self.att_context_size)
        kind = self_attention_model or self.self_attention_model
        if kind not in ATTENTION_MODELS:
            raise UnsupportedOptionError(f"unsupported self_attention_model {kind!r}")
        if kind == "rel_pos_local_attn" and max(context) <= 0:
            raise UnsupportedOptionError("local attention needs a positive att_context_size")
        device, dtype = next(self.parameters()).device, next(self.parameters()).dtype
        self.pos_enc = PositionalEncoding(
            kind, self.d_model, self.cfg.pos_emb_max_len, self.xscale, context[:2]
        )
        for layer in self.layers:
            new = make_attention(kind, self.cfg, context, use_bias=True)
            with torch.no_grad():
                for p in new.parameters():
                    p.zero_()
            new.load_state_dict(layer.self_attn.state_dict(), strict=False)
            layer.self_attn = new.to(device=device, dtype=dtype)
        self.pos_enc.to(device=device, dtype=dtype)
        self.self_attention_model, self.att_context_size = kind, context
        self.cfg.self_attention_model, self.cfg.att_context_size = kind, context

    def set_default_att_context_size(self, att_context_size: list[int]) -> None:
        """Pick one of a multi-lookahead streaming model's ``att_context_size`` options."""
        self.att_context_size = list(att_context_size)

    def change_subsampling_conv_chunking_factor(self, subsampling_conv_chunking_factor: int) -> None:
        """Memory only: split the conv subsampling's work (1 = when needed, k = k ways, -1 = never)."""
        if hasattr(self.pre_encode, "change_subsampling_conv_chunking_factor"):
            self.pre_encode.change_subsampling_conv_chunking_factor(subsampling_conv_chunking_factor)
        self.cfg.subsampling_conv_chunking_factor = subsampling_conv_chunking_factor
