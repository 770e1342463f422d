"""Positional encodings and multi-head self-attention of the Conformer (NeMo key names).

* ``abs_pos``: sinusoidal positions added to the input, plain scaled dot-product attention.
* ``rel_pos``: Transformer-XL relative positions. ``score(i, j) = (q_i + u)·k_j + (q_i + v)·p(i - j)``,
  scaled by ``1/sqrt(d_k)``, with learned per-head biases ``u`` (``pos_bias_u``) and ``v`` (``pos_bias_v``).
* ``rel_pos_local_attn``: the same scores restricted to a band ``j - i ∈ [-left, right]`` (Longformer),
  computed block by block so memory is linear in ``T``; optional global tokens see, and are seen by, all.

Masked scores use NeMo's finite ``-10000`` so that padded query rows never produce NaN; those rows are
zeroed before the output projection, as in NeMo.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from models.encoders.packing import Packing

NEG_INF = -10000.0  # NeMo's INF_VAL: finite, so fully masked rows stay NaN-free
MAX_SCORE_ELEMENTS = 1 << 22  # local attention: score elements per block group (bounds peak memory)


def sinusoids(positions: torch.Tensor, d_model: int) -> torch.Tensor:
    """``pe[n, 2i] = sin(pos_n · 10000^(-2i/d))``, ``pe[n, 2i+1] = cos(...)`` → ``[N, d_model]`` float32."""
    positions = positions.to(torch.float32).unsqueeze(1)  # [N, 1]
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    pe = torch.zeros(positions.shape[0], d_model)
    pe[:, 0::2] = torch.sin(positions * inv_freq)
    pe[:, 1::2] = torch.cos(positions * inv_freq)
    return pe


class PositionalEncoding(nn.Module):
    """Scales the input by ``xscale`` and provides positional embeddings for the attention type.

    ``abs_pos``: ``pe[:T]`` is added to ``x``. ``rel_pos``: embeddings of relative positions ``T-1 … -(T-1)``
    (descending); the table covers ``max(pos_emb_max_len, longest input)`` and grows on demand.
    ``rel_pos_local_attn``: positions ``left … -right``. Tables are non-persistent (not in the state dict).
    """

    def __init__(
        self,
        kind: str,
        d_model: int,
        max_len: int = 5000,
        xscale: float | None = None,
        att_context_size: tuple[int, int] = (-1, -1),
    ) -> None:
        super().__init__()
        self.kind, self.d_model, self.xscale = kind, d_model, xscale
        self.left, self.right = att_context_size
        self.register_buffer("pe", torch.zeros(0, d_model), persistent=False)
        self.extend(max_len)

    def extend(self, length: int) -> None:
        """Make sure the table covers ``length`` frames (values never depend on the table size)."""
        if self.kind == "rel_pos_local_attn":
            needed, positions = self.left + self.right + 1, torch.arange(self.left, -self.right - 1, -1)
        elif self.kind == "rel_pos":
            needed, positions = 2 * length - 1, torch.arange(length - 1, -length, -1)
        else:
            needed, positions = length, torch.arange(length)
        if self.pe.shape[0] >= needed:
            return
        with torch.inference_mode(False):  # a table grown during inference must stay usable afterwards
            self.pe = sinusoids(positions, self.d_model).to(device=self.pe.device, dtype=self.pe.dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: [B, T, D] → (x scaled [B, T, D], pos_emb [1, P, D])
        if self.xscale:
            x = x * self.xscale
        pos_emb = self.table(x.shape[1])
        return (x + pos_emb, pos_emb) if self.kind == "abs_pos" else (x, pos_emb)

    def table(self, t: int) -> torch.Tensor:
        """The positional embeddings for a ``t``-frame input: ``[1, P, D]``."""
        self.extend(t)
        if self.kind == "rel_pos_local_attn":
            return self.pe[None]
        if self.kind == "rel_pos":
            center = self.pe.shape[0] // 2  # row of relative position 0
            return self.pe[None, center - t + 1 : center + t]
        return self.pe[None, :t]


def rel_shift(bd_full: torch.Tensor) -> torch.Tensor:
    """``[..., T, 2T-1]`` scores against relative positions ``T-1 … -(T-1)`` → ``[..., T, T]`` with
    ``out[i, j] = bd_full[i, T-1-i+j]`` (the position ``i - j``), as a strided view without copying."""
    bd_full = bd_full.contiguous()
    *lead, t, p = bd_full.shape
    strides = bd_full.stride()[:-2] + (p - 1, 1)
    return bd_full.as_strided((*lead, t, t), strides, bd_full.storage_offset() + t - 1)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product self-attention (``abs_pos``). Keys ``linear_{q,k,v,out}.*``."""

    def __init__(self, n_heads: int, d_model: int, use_bias: bool = True, use_sdpa: bool = False) -> None:
        super().__init__()
        self.h, self.d_k = n_heads, d_model // n_heads
        self.s_d_k = math.sqrt(self.d_k)
        self.use_sdpa = use_sdpa  # NeMo's use_pytorch_sdpa: same math through the fused kernel
        self.linear_q = nn.Linear(d_model, d_model, bias=use_bias)
        self.linear_k = nn.Linear(d_model, d_model, bias=use_bias)
        self.linear_v = nn.Linear(d_model, d_model, bias=use_bias)
        self.linear_out = nn.Linear(d_model, d_model, bias=use_bias)

    def heads(self, x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
        return linear(x).unflatten(-1, (self.h, self.d_k)).transpose(1, 2)  # [B, T, D] → [B, H, T, d_k]

    def forward(
        self, x: torch.Tensor, pos_emb: torch.Tensor, att_mask: torch.Tensor | None, pad_mask: torch.Tensor
    ) -> torch.Tensor:
        q, k, v = (self.heads(x, lin) for lin in (self.linear_q, self.linear_k, self.linear_v))
        return self.attend(q, k, v, None, att_mask, pad_mask)

    def forward_packed(
        self, x: torch.Tensor, pos_emb: torch.Tensor | None, packing: Packing, pos_proj: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x [N, D]``: the valid frames of a batch, concatenated (see :class:`Packing`) → ``[N, D]``.

        The projections run once over all ``N`` frames; scores, softmax and the weighted sum run per group
        of similar lengths (padded within the group, masked as in :meth:`forward`). rel_pos: ``pos_emb`` is
        the table for ``T_max`` (or ``pos_proj``, the same already through ``linear_pos``).
        """
        q, k, v = self.linear_q(x), self.linear_k(x), self.linear_v(x)
        p = pos_proj
        if p is None and pos_emb is not None:
            p = self.linear_pos(pos_emb)  # [1, 2·T_max-1, D], rel_pos only
        out = torch.empty_like(q)
        for g in packing.groups:
            qg, kg, vg = (g.pad(z).unflatten(-1, (self.h, self.d_k)).transpose(1, 2) for z in (q, k, v))
            if p is None:
                heads = self.attend_heads(qg, kg, vg, None, g.att_mask, g.pad_mask)
            else:  # relative positions T_g-1 … -(T_g-1): the middle rows of the T_max table
                pg = p[:, packing.t_max - g.t : packing.t_max + g.t - 1]
                pg = pg.unflatten(-1, (self.h, self.d_k)).transpose(1, 2)  # [1, H, 2T_g-1, d_k]
                bd = rel_shift(torch.matmul(qg + self.pos_bias_v[:, None], pg.transpose(-2, -1)))
                heads = self.attend_heads(qg + self.pos_bias_u[:, None], kg, vg, bd, g.att_mask, g.pad_mask)
            out[g.rows] = g.unpad(heads)
        return self.linear_out(out)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bd: torch.Tensor | None,
        att_mask: torch.Tensor | None,
        pad_mask: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`attend_heads` followed by the output projection → ``[B, T, D]``."""
        return self.linear_out(self.attend_heads(q, k, v, bd, att_mask, pad_mask))

    def attend_heads(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bd: torch.Tensor | None,
        att_mask: torch.Tensor | None,
        pad_mask: torch.Tensor,
    ) -> torch.Tensor:
        """``softmax((q·kᵀ + bd)/√d_k)·v`` with the heads concatenated → ``[B, T, D]`` (no output projection);
        blocked pairs (``att_mask`` True) get ``-10000``, then weight 0.

        Computed in NeMo's operation order (``use_sdpa`` off), which keeps fp32 results within ~1e-6 of
        NeMo; the fused kernel reorders the sums and drifts further on wide models.
        """
        if self.use_sdpa:
            return self._attend_sdpa(q, k, v, bd, att_mask, pad_mask)
        scores = torch.matmul(q, k.transpose(-2, -1))  # [B, H, T, T]
        if bd is not None:
            scores += bd
        scores /= self.s_d_k
        if att_mask is not None:
            attn = scores.masked_fill_(att_mask, NEG_INF).softmax(-1).masked_fill_(att_mask, 0.0)
        else:
            attn = scores.softmax(-1)
        return torch.matmul(attn, v).transpose(1, 2).flatten(2)  # [B, T, D]

    def _attend_sdpa(self, q, k, v, bd, att_mask, pad_mask) -> torch.Tensor:
        # the position term rides along as the additive mask, as in NeMo's use_pytorch_sdpa path
        bias = bd / self.s_d_k if bd is not None else torch.zeros((), dtype=q.dtype, device=q.device)
        if att_mask is not None:
            bias = bias.masked_fill(att_mask, NEG_INF)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias if bias.dim() else None)
        out = out.masked_fill(pad_mask[:, None, :, None], 0.0)  # padded queries attend to nothing
        return out.transpose(1, 2).flatten(2)


class RelPositionMultiHeadAttention(MultiHeadAttention):
    """Transformer-XL attention (``rel_pos``). Adds ``linear_pos.weight``, ``pos_bias_u``, ``pos_bias_v``.

    With ``untie_biases: false`` NeMo shares one ``pos_bias_u/v`` pair across layers: pass the shared
    Parameters in (every layer still lists them under its own key, as in NeMo's state dict).
    """

    def __init__(
        self,
        n_heads: int,
        d_model: int,
        use_bias: bool = True,
        pos_bias_u: nn.Parameter | None = None,
        pos_bias_v: nn.Parameter | None = None,
        use_sdpa: bool = False,
    ) -> None:
        super().__init__(n_heads, d_model, use_bias, use_sdpa)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = (
            pos_bias_u if pos_bias_u is not None else nn.Parameter(torch.zeros(self.h, self.d_k))
        )
        self.pos_bias_v = (
            pos_bias_v if pos_bias_v is not None else nn.Parameter(torch.zeros(self.h, self.d_k))
        )

    def position_heads(self, pos_emb: torch.Tensor) -> torch.Tensor:
        return self.heads(pos_emb, self.linear_pos)  # [1, P, D] → [1, H, P, d_k]

    def forward(
        self,
        x: torch.Tensor,
        pos_emb: torch.Tensor,
        att_mask: torch.Tensor | None,
        pad_mask: torch.Tensor,
        pos_proj: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``pos_proj``: ``linear_pos(pos_emb)`` when the caller already has it (the encoder caches it)."""
        q, k, v = (self.heads(x, lin) for lin in (self.linear_q, self.linear_k, self.linear_v))
        if pos_proj is None:
            p = self.position_heads(pos_emb)  # [1, H, 2T-1, d_k]
        else:
            p = pos_proj.unflatten(-1, (self.h, self.d_k)).transpose(1, 2)
        bd = rel_shift(torch.matmul(q + self.pos_bias_v[:, None], p.transpose(-2, -1)))  # [B, H, T, T]
        return self.attend(q + self.pos_bias_u[:, None], k, v, bd, att_mask, pad_mask)


class LocalRelPositionMultiHeadAttention(RelPositionMultiHeadAttention):
    """Longformer-style ``rel_pos_local_attn``: query ``i`` sees keys ``i-left … i+right`` (+ global tokens).

    Queries are processed in blocks of ``block`` frames; block ``n`` scores against the key window
    ``[n·block - left, (n+1)·block + right)``, so memory grows linearly with ``T`` (and block groups bound
    the peak). Positional term as in NeMo: exact ``(q_i+v)·p(i-j)`` for symmetric contexts; for asymmetric
    ones NeMo's band indexing (band width ``2·max(left, right) + 1``) is reproduced, misalignment included.

    Global tokens (``global_tokens`` positions ``0, s, 2s, …``): every query also scores them with plain
    ``q·k/√d_k`` (no biases, no position term), and their own rows attend to the whole utterance.
    ``global_attn_separate`` gives them their own ``global_{q,k,v}`` projections.
    """

    def __init__(
        self,
        n_heads: int,
        d_model: int,
        att_context_size: tuple[int, int],
        use_bias: bool = True,
        pos_bias_u: nn.Parameter | None = None,
        pos_bias_v: nn.Parameter | None = None,
        global_tokens: int = 0,
        global_tokens_spacing: int = 1,
        global_attn_separate: bool = False,
    ) -> None:
        super().__init__(n_heads, d_model, use_bias, pos_bias_u, pos_bias_v)
        self.left, self.right = (int(c) for c in att_context_size)
        if max(self.left, self.right) <= 0:
            raise ValueError("local attention needs a positive context size")
        self.global_tokens, self.global_spacing = global_tokens, global_tokens_spacing
        self.global_attn_separate = global_attn_separate
        if global_attn_separate:
            self.global_q = nn.Linear(d_model, d_model, bias=use_bias)
            self.global_k = nn.Linear(d_model, d_model, bias=use_bias)
            self.global_v = nn.Linear(d_model, d_model, bias=use_bias)
        self.block = max(16, (self.left + self.right + 1) // 2)
        self.register_buffer("bd_index", self._nemo_band_index(), persistent=False)
        self.identity_band = bool((self.bd_index == torch.arange(len(self.bd_index))).all())

    def _nemo_band_index(self) -> torch.Tensor:
        """For offsets ``j - i = m - left`` (m = 0 … left+right): which positional row NeMo adds (or none)."""
        left, right, w = self.left, self.right, max(self.left, self.right)
        none = left + right + 1  # index of an all-zero column appended to the position scores
        index = []
        for m in range(left + right + 1):
            c = m - left + w  # NeMo's column in its 2w+1 band
            index.append(c if c < left else left + c - (2 * w - right) if c >= 2 * w - right else none)
        return torch.tensor(index)

    def forward(
        self, x: torch.Tensor, pos_emb: torch.Tensor, att_mask: torch.Tensor | None, pad_mask: torch.Tensor
    ) -> torch.Tensor:
        q, k, v = (self.heads(x, lin) for lin in (self.linear_q, self.linear_k, self.linear_v))
        p = self.position_heads(pos_emb)  # [1, H, left+right+1, d_k]
        glob = self._global_inputs(x, q, k, v, pad_mask) if self.global_tokens > 0 else None
        out = self._banded(q, k, v, p, ~pad_mask, glob)  # [B, H, T, d_k]
        out = out.masked_fill(pad_mask[:, None, :, None], 0.0)
        if glob is not None:
            out[:, :, glob["index"]] = self._global_rows(glob, ~pad_mask)
        return self.linear_out(out.transpose(1, 2).flatten(2))  # [B, T, D]

    # -- banded local attention ------------------------------------------------------------------------
    def _banded(self, q, k, v, p, valid, glob) -> torch.Tensor:
        b, h, t, _dk = q.shape
        blk, span = self.block, self.left + self.right
        n_blocks = -(-t // blk)
        pad_q = n_blocks * blk - t
        qu = F.pad(q + self.pos_bias_u[:, None], (0, 0, 0, pad_q))  # [B, H, n·blk, d_k]
        qv = F.pad(q + self.pos_bias_v[:, None], (0, 0, 0, pad_q))
        # keys padded so that block n's window starts at n·blk: `left` in front, the rest behind
        kp, vp = (F.pad(z, (0, 0, self.left, pad_q + self.right)) for z in (k, v))
        okp = F.pad(valid, (self.left, pad_q + self.right), value=False)  # [B, n·blk + span]
        per_block = b * h * blk * (blk + span + self.global_tokens)
        group = max(1, MAX_SCORE_ELEMENTS // per_block)
        outs = [
            self._block_group(qu, qv, kp, vp, okp, p, n0, min(n0 + group, n_blocks), glob)
            for n0 in range(0, n_blocks, group)
        ]
        return torch.cat(outs, dim=2)[:, :, :t]

    def _block_group(self, qu, qv, kp, vp, okp, p, n0, n1, glob) -> torch.Tensor:
        blk, span = self.block, self.left + self.right
        win = blk + span
        rows, keys = slice(n0 * blk, n1 * blk), slice(n0 * blk, n1 * blk + span)
        k_win = kp[:, :, keys].unfold(2, win, blk).transpose(-1, -2)  # [B, H, n, win, d_k]
        v_win = vp[:, :, keys].unfold(2, win, blk).transpose(-1, -2)
        key_ok = okp[:, keys].unfold(1, win, blk)[:, None, :, None, :]  # [B, 1, n, 1, win]
        q_blk = qu[:, :, rows].unflatten(2, (n1 - n0, blk))  # [B, H, n, blk, d_k]
        ac = torch.matmul(q_blk, k_win.transpose(-1, -2))  # [B, H, n, blk, win]
        bd = self._position_scores(qv[:, :, rows].unflatten(2, (n1 - n0, blk)), p, win)
        scores = (ac + bd) / self.s_d_k
        offset = torch.arange(win, device=ac.device)[None, :] - torch.arange(blk, device=ac.device)[:, None]
        in_band = (offset >= 0) & (offset <= span)  # [blk, win]: key kk is query qq's offset kk-qq-left
        scores = scores.masked_fill(~(in_band & key_ok), NEG_INF)
        if glob is None:
            return torch.matmul(scores.softmax(-1), v_win).flatten(2, 3)
        g_scores = glob["q"][:, :, rows].matmul(glob["k"].transpose(-1, -2))  # [B, H, n·blk, G]
        g_scores = g_scores.masked_fill(~glob["ok"][:, None, None, :], NEG_INF).unflatten(2, (n1 - n0, blk))
        attn = torch.cat((g_scores, scores), dim=-1).softmax(-1)
        n_glob = g_scores.shape[-1]
        out = torch.matmul(attn[..., n_glob:], v_win) + torch.matmul(
            attn[..., :n_glob], glob["v_local"][:, :, None]
        )
        return out.flatten(2, 3)  # [B, H, n·blk, d_k]

    def _position_scores(self, q_blk: torch.Tensor, p: torch.Tensor, win: int) -> torch.Tensor:
        """``(q_i+v)·p_m`` for band offsets m, skewed into the key-window layout ``[..., blk, win]``."""
        bd = torch.matmul(q_blk, p[:, :, None].transpose(-1, -2))  # [B, H, n, blk, left+right+1]
        if not self.identity_band:  # NeMo's band mapping for asymmetric contexts (a zero column = no term)
            bd = torch.cat((bd, torch.zeros_like(bd[..., :1])), dim=-1)[..., self.bd_index]
        *_lead, blk, m = bd.shape
        # pad each row to win+1 and re-read the buffer with row length win: row qq shifts right by qq
        bd = F.pad(bd, (0, win + 1 - m)).flatten(-2)[..., : blk * win]
        return bd.unflatten(-1, (blk, win))

    # -- global tokens ------------------------------------------------------------------------------------
    def _global_inputs(self, x, q, k, v, pad_mask) -> dict[str, torch.Tensor]:
        t = x.shape[1]
        index = torch.arange(
            0, min(t, self.global_tokens * self.global_spacing), self.global_spacing, device=x.device
        )
        if self.global_attn_separate:
            gq, gk, gv = (self.heads(x, lin) for lin in (self.global_q, self.global_k, self.global_v))
        else:
            gq, gk, gv = q, k, v
        gq = gq / self.s_d_k  # NeMo scales the global queries before the products
        blk_pad = (-t) % self.block
        return {
            "index": index,
            "q": F.pad(gq, (0, 0, 0, blk_pad)),
            "k": gk[:, :, index],
            "v_local": v[:, :, index],
            "ok": ~pad_mask[:, index],
            "q_all": gq,
            "k_all": gk,
            "v_all": gv,
        }

    def _global_rows(self, glob: dict[str, torch.Tensor], valid: torch.Tensor) -> torch.Tensor:
        """Global tokens attend to every valid frame: ``softmax(q_g·kᵀ/√d_k)·v`` → ``[B, H, G, d_k]``."""
        scores = glob["q_all"][:, :, glob["index"]].matmul(glob["k_all"].transpose(-1, -2))
        scores = scores.masked_fill(~valid[:, None, None, :], NEG_INF)  # [B, H, G, T]
        return scores.softmax(-1).matmul(glob["v_all"])
