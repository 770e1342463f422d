"""The Canary text decoder: a pre-LN Transformer decoder and its tied output head.

Module and parameter names are NeMo's (``transf_decoder._embedding.*``,
``transf_decoder._decoder.layers.{i}.*``, ``log_softmax.mlp.layer0.*``) so checkpoint state dicts load with
``strict=True``.

Math (NeMo's ``TransformerEmbedding`` / ``TransformerDecoderBlock`` with ``pre_ln: true``):

    E   = LayerNorm(tok_emb[y] + pos_enc[p])            pos_enc: the stored sinusoid table, already / sqrt(d)
    h   = x + SelfAttn(LN1(x), LN1(x_≤i))
    h   = h + CrossAttn(LN2(h), enc)                    encoder states are not normalised
    out = h + FFN(LN3(h)),  FFN = W_out relu(W_in ·)
    logits = W_head · FinalLN(out) + b                  W_head is the token embedding (tied)

Attention scales q and k each by d_head^-1/4 and adds -10000 to masked scores (NeMo's op order, so that
float results match). Decoding is incremental: every layer caches its self-attention keys/values and the
cross-attention keys/values of the encoder states; a full teacher-forced pass gives the same logits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.errors import CheckpointError

NEG_INF = -10000.0  # NeMo's additive mask value (not -inf: fully masked rows stay finite)


class FixedPositionalEncoding(nn.Module):
    """Sinusoid table ``pos_enc [max_len, d]``, stored in checkpoints (pre-divided by sqrt(d))."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        div = torch.exp(-math.log(10000.0) / d_model * torch.arange(0.0, d_model, 2))
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(pos * div)
        table[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pos_enc", table / math.sqrt(d_model))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.pos_enc[positions]


class TransformerEmbedding(nn.Module):
    def __init__(self, vocab: int, d_model: int, max_len: int, learned_positions: bool,
                 token_types: int) -> None:
        super().__init__()
        self.max_sequence_length = max_len
        self.token_embedding = nn.Embedding(vocab, d_model)
        self.position_embedding = (nn.Embedding(max_len, d_model) if learned_positions
                                   else FixedPositionalEncoding(d_model, max_len))
        if token_types > 0:  # BERT-style segment ids; Canary has none, but the weights may exist
            self.token_type_embedding = nn.Embedding(token_types, d_model)
        self.layer_norm = nn.LayerNorm(d_model, eps=1e-5)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """ids, positions ``[N, L]`` → ``[N, L, D]``."""
        return self.layer_norm(self.token_embedding(ids) + self.position_embedding(positions))


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise CheckpointError(f"decoder hidden size {d_model} is not a multiple of {n_heads} heads")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.scale = math.sqrt(math.sqrt(self.d_head))  # applied to q and to k: 1/sqrt(d_head) overall
        self.query_net = nn.Linear(d_model, d_model)
        self.key_net = nn.Linear(d_model, d_model)
        self.value_net = nn.Linear(d_model, d_model)
        self.out_projection = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        return x.view(n, length, self.n_heads, self.d_head).permute(0, 2, 1, 3)  # [N, H, L, dh]

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, L, D]`` → scaled keys and values ``[N, H, L, dh]`` (cacheable)."""
        return self._heads(self.key_net(x)) / self.scale, self._heads(self.value_net(x))

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Queries from ``x [N, Lq, D]`` over ``k, v [U, H, Lk, dh]`` with additive ``mask [U, 1, Lq|1, Lk]``.

        ``U`` is ``N`` or divides it: then consecutive groups of ``N / U`` query rows (the beams of one
        utterance) share one row of keys and values, broadcast instead of copied.
        """
        n, length, _ = x.shape
        q = self._heads(self.query_net(x)) / self.scale  # [N, H, Lq, dh]
        if k.shape[0] != n:
            q = q.view(k.shape[0], n // k.shape[0], *q.shape[1:])  # [U, G, H, Lq, dh]
            k, v, mask = k[:, None], v[:, None], mask[:, None]
        probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) + mask, dim=-1)
        ctx = torch.matmul(probs, v).reshape(n, self.n_heads, length, self.d_head).permute(0, 2, 1, 3)
        return self.out_projection(ctx.reshape(n, length, -1))  # [N, Lq, D]


class PositionWiseFF(nn.Module):
    def __init__(self, d_model: int, d_inner: int, activation: str) -> None:
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise CheckpointError(f"decoder activation {activation!r} is not supported")
        self.dense_in = nn.Linear(d_model, d_inner)
        self.dense_out = nn.Linear(d_inner, d_model)
        self.act = torch.relu if activation == "relu" else nn.functional.gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_out(self.act(self.dense_in(x)))


@dataclass
class LayerCache:
    self_k: torch.Tensor  # [N, H, L, dh], grows by one position per step
    self_v: torch.Tensor
    cross_k: torch.Tensor  # [U, H, T, dh], fixed; one row per utterance, shared by its beams
    cross_v: torch.Tensor


class DecoderBlock(nn.Module):
    """Pre-LN block: self-attention, cross-attention, feed-forward, each with a residual."""

    def __init__(self, d_model: int, d_inner: int, n_heads: int, activation: str) -> None:
        super().__init__()
        self.layer_norm_1 = nn.LayerNorm(d_model, eps=1e-5)
        self.first_sub_layer = MultiHeadAttention(d_model, n_heads)
        self.layer_norm_2 = nn.LayerNorm(d_model, eps=1e-5)
        self.second_sub_layer = MultiHeadAttention(d_model, n_heads)
        self.layer_norm_3 = nn.LayerNorm(d_model, eps=1e-5)
        self.third_sub_layer = PositionWiseFF(d_model, d_inner, activation)

    def forward(self, x: torch.Tensor, cache: LayerCache, self_mask: torch.Tensor,
                cross_mask: torch.Tensor) -> tuple[torch.Tensor, LayerCache]:
        """x ``[N, L, D]`` are the new positions; their keys/values are appended to the cache."""
        normed = self.layer_norm_1(x)
        k, v = self.first_sub_layer.keys_values(normed)
        cache = LayerCache(torch.cat([cache.self_k, k], 2), torch.cat([cache.self_v, v], 2), cache.cross_k,
                           cache.cross_v)
        h = x + self.first_sub_layer.attend(normed, cache.self_k, cache.self_v, self_mask)
        h = h + self.second_sub_layer.attend(self.layer_norm_2(h), cache.cross_k, cache.cross_v, cross_mask)
        return h + self.third_sub_layer(self.layer_norm_3(h)), cache


class TransformerDecoder(nn.Module):
    def __init__(self, n_layers: int, d_model: int, d_inner: int, n_heads: int, activation: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderBlock(d_model, d_inner, n_heads, activation) for _ in range(n_layers))
        self.final_layer_norm = nn.LayerNorm(d_model, eps=1e-5)


@dataclass
class DecoderState:
    """What incremental decoding carries between steps: ``N = U × beams`` rows for ``U`` utterances."""

    layers: list[LayerCache]
    key_valid: torch.Tensor  # [N, L] bool: False for left-padding of shorter prompts
    cross_mask: torch.Tensor  # [U, 1, 1, T] additive mask of padded encoder frames
    beams: int = 1

    def select(self, rows: torch.Tensor) -> DecoderState:
        """Keep the utterances ``rows`` (one beam each), dropping finished ones."""
        assert self.beams == 1, "select() drops whole utterances; use reorder() within beams"
        layers = [LayerCache(c.self_k[rows], c.self_v[rows], c.cross_k[rows], c.cross_v[rows])
                  for c in self.layers]
        return DecoderState(layers, self.key_valid[rows], self.cross_mask[rows])

    def expand(self, beams: int) -> DecoderState:
        """Give every utterance ``beams`` copies of its decoding history (rows ``u * beams + k``)."""
        layers = [LayerCache(c.self_k.repeat_interleave(beams, 0), c.self_v.repeat_interleave(beams, 0),
                             c.cross_k, c.cross_v) for c in self.layers]
        return DecoderState(layers, self.key_valid.repeat_interleave(beams, 0), self.cross_mask,
                            self.beams * beams)

    def reorder(self, rows: torch.Tensor) -> DecoderState:
        """Rows take the history of ``rows`` (beam re-ranking: parents of the same utterance)."""
        layers = [LayerCache(c.self_k[rows], c.self_v[rows], c.cross_k, c.cross_v) for c in self.layers]
        return DecoderState(layers, self.key_valid[rows], self.cross_mask, self.beams)


class TransformerDecoderNM(nn.Module):
    """NeMo's ``TransformerDecoderNM`` (``transf_decoder``): embedding + decoder stack + final LayerNorm."""

    def __init__(self, cfg: Mapping[str, Any], vocab_size: int) -> None:
        super().__init__()
        d = int(cfg["hidden_size"])
        if not cfg.get("pre_ln", False):
            raise CheckpointError("post-LN Transformer decoders (pre_ln: false) are not supported")
        self.max_sequence_length = int(cfg.get("max_sequence_length", 512))
        self._embedding = TransformerEmbedding(vocab_size, d, self.max_sequence_length,
                                               bool(cfg.get("learn_positional_encodings", False)),
                                               int(cfg.get("num_token_types", 0) or 0))
        heads, inner = int(cfg.get("num_attention_heads", 1)), int(cfg.get("inner_size") or 4 * d)
        act = str(cfg.get("hidden_act", "relu"))
        self._decoder = TransformerDecoder(int(cfg["num_layers"]), d, inner, heads, act)

    @property
    def hidden_size(self) -> int:
        return self._embedding.layer_norm.normalized_shape[0]

    def start(self, enc: torch.Tensor, enc_valid: torch.Tensor) -> DecoderState:
        """An empty cache over encoder states ``enc [N, T, D]`` (``enc_valid [N, T]`` bool)."""
        n = enc.shape[0]
        layers = []
        for block in self._decoder.layers:
            attn = block.first_sub_layer
            empty = enc.new_zeros(n, attn.n_heads, 0, attn.d_head)
            ck, cv = block.second_sub_layer.keys_values(enc)
            layers.append(LayerCache(empty, empty, ck, cv))
        cross_mask = (~enc_valid).to(enc.dtype)[:, None, None, :] * NEG_INF
        return DecoderState(layers, enc_valid.new_zeros(n, 0), cross_mask)

    def forward_tokens(self, ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor,
                       state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """Feed ``ids [N, L]`` at ``positions [N, L]`` (``valid``: False for padding) after the cached ones.

        Returns the final-LayerNorm states ``[N, L, D]`` and the extended state. A query attends to cached
        and new keys at or before it, except padding keys.
        """
        past = state.key_valid.shape[1]
        length = ids.shape[1]
        key_valid = torch.cat([state.key_valid, valid], 1)  # [N, past + L]
        causal = torch.ones(length, past + length, dtype=torch.bool, device=ids.device).tril(past)
        allowed = causal[None] & key_valid[:, None, :]  # [N, L, past + L]
        self_mask = (~allowed).to(state.cross_mask.dtype)[:, None] * NEG_INF
        x = self._embedding(ids, positions)
        caches = []
        for block, cache in zip(self._decoder.layers, state.layers):
            x, cache = block(x, cache, self_mask, state.cross_mask)
            caches.append(cache)
        return self._decoder.final_layer_norm(x), DecoderState(caches, key_valid, state.cross_mask, state.beams)

    def forward(self, ids: torch.Tensor, enc: torch.Tensor, enc_valid: torch.Tensor,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced pass from position 0: ``ids [N, L]`` → states ``[N, L, D]``."""
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        valid = torch.ones_like(ids, dtype=torch.bool) if valid is None else valid
        return self.forward_tokens(ids, positions, valid, self.start(enc, enc_valid))[0]


class TokenClassifier(nn.Module):
    """NeMo's ``TokenClassifier`` with one layer: ``mlp.layer0`` = Linear(hidden, V_pad)."""

    def __init__(self, hidden: int, num_classes: int, num_layers: int = 1) -> None:
        super().__init__()
        if num_layers != 1:
            raise CheckpointError(f"a {num_layers}-layer output head is not supported (Canary uses 1)")
        self.mlp = nn.Module()
        self.mlp.layer0 = nn.Linear(hidden, num_classes)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """States ``[..., D]`` → logits ``[..., V_pad]`` (no softmax: callers choose)."""
        return self.mlp.layer0(hidden)
