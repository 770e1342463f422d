"""Unit tests of the Conformer / FastConformer encoder (``models/encoders``); no NeMo needed."""

from __future__ import annotations

import math

import pytest
import torch

from models.encoders import attention as attention_mod
from models.encoders import build_encoder, subsampling
from models.encoders.attention import LocalRelPositionMultiHeadAttention, sinusoids
from models.encoders.conformer import ConformerEncoder
from models.encoders.subsampling import conv_out_length
from models.errors import CheckpointError, UnsupportedOptionError

torch.set_num_threads(1)

TARGET = "nemo.collections.asr.modules.ConformerEncoder"
FAST = {
    "_target_": TARGET,
    "feat_in": 20,
    "n_layers": 2,
    "d_model": 16,
    "n_heads": 2,
    "subsampling": "dw_striding",
    "subsampling_factor": 8,
    "subsampling_conv_channels": 8,
    "conv_kernel_size": 5,
    "ff_expansion_factor": 2,
}
CLASSIC = {**FAST, "subsampling": "striding", "subsampling_factor": 4, "conv_kernel_size": 7}
STREAMING = {
    **FAST,
    "causal_downsampling": True,
    "att_context_style": "chunked_limited",
    "att_context_size": [8, 3],
    "conv_context_size": "causal",
    "conv_norm_type": "layer_norm",
}
LOCAL = {**FAST, "self_attention_model": "rel_pos_local_attn", "att_context_size": [3, 3]}


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Noise in every float tensor (BatchNorm statistics and pos_bias_u/v included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                noise = torch.randn(t.shape, generator=gen)
                t.copy_(
                    0.5 + torch.rand(t.shape, generator=gen) if name.endswith("running_var") else 0.3 * noise
                )
    return module.eval()


def encoder(cfg: dict, seed: int = 0) -> ConformerEncoder:
    return randomize_(build_encoder(cfg), seed)


def features(lengths: list[int], feat_in: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), feat_in, max(lengths), generator=gen)
    lens = torch.tensor(lengths)
    return x.masked_fill(torch.arange(max(lengths))[None, None] >= lens[:, None, None], 0.0), lens


def assert_batch_invariant(
    enc: torch.nn.Module, lengths: list[int], feat_in: int = 20, tol: float = 1e-5
) -> None:
    x, lens = features(lengths, feat_in)
    with torch.inference_mode():
        batch, blen = enc(x, lens)
        for i, n in enumerate(lengths):
            alone, alen = enc(x[i : i + 1, :, :n], lens[i : i + 1])
            assert int(alen[0]) == int(blen[i])
            t = int(alen[0])
            assert (alone[0, :, :t] - batch[i, :, :t]).abs().max() <= tol


# -- structure --------------------------------------------------------------------------------------------
def test_state_dict_keys_are_nemos():
    keys = set(build_encoder(FAST).state_dict())
    for key in [
        "pre_encode.conv.0.weight",
        "pre_encode.conv.2.weight",
        "pre_encode.conv.3.bias",
        "pre_encode.conv.5.weight",
        "pre_encode.conv.6.weight",
        "pre_encode.out.weight",
        "layers.1.self_attn.linear_pos.weight",
        "layers.1.self_attn.pos_bias_u",
        "layers.0.self_attn.linear_q.bias",
        "layers.0.conv.batch_norm.running_mean",
        "layers.0.conv.batch_norm.num_batches_tracked",
        "layers.0.conv.depthwise_conv.weight",
        "layers.0.feed_forward2.linear1.weight",
        "layers.0.norm_out.bias",
    ]:
        assert key in keys, key
    assert not any("pos_enc" in k or "linear_pos.bias" in k for k in keys)
    assert (
        len([k for k in keys if k.startswith("layers.0.")]) == 40
    )  # as NeMo (strict loads checked in tools/)
    no_bias = set(build_encoder({**FAST, "use_bias": False, "self_attention_model": "abs_pos"}).state_dict())
    assert (
        "layers.0.self_attn.linear_q.bias" not in no_bias and "layers.0.self_attn.pos_bias_u" not in no_bias
    )
    assert (
        "layers.0.conv.pointwise_conv1.bias" not in no_bias
        and "layers.0.feed_forward1.linear1.bias" not in no_bias
    )
    streaming = build_encoder(STREAMING).state_dict()
    assert streaming["layers.0.conv.batch_norm.weight"].shape == (16,)  # layer_norm, stored under NeMo's name


def test_shapes_and_length_formulas():
    enc = build_encoder({**FAST, "feat_in": 80}).eval()
    assert enc.pre_encode.out.weight.shape == (16, 8 * 10)  # C * ceil(80/8)
    causal = build_encoder({**STREAMING, "feat_in": 80})
    assert causal.pre_encode.out.weight.shape == (16, 8 * 11)  # causal stages: 80 -> 41 -> 21 -> 11
    lens = torch.tensor([100, 70, 9, 1])
    assert conv_out_length(lens, 2, 3, 2, 3).tolist() == [13, 9, 2, 1]
    assert conv_out_length(lens, 3, 3, 2, 3).tolist() == [14, 10, 2, 1]  # causal: L -> L//2 + 1
    x, lens = features([100, 70], 80)
    with torch.inference_mode():
        out, olen = enc(x, lens)
    assert out.shape == (2, 16, 13) and olen.tolist() == [13, 9] and olen.dtype == torch.int64
    assert (enc.subsampling_factor, enc.d_model, enc.output_dim) == (8, 16, 16)
    proj = build_encoder({**FAST, "feat_out": 12})
    assert proj.output_dim == 12 and "out_proj.weight" in proj.state_dict()


def test_config_forms_and_errors():
    legacy = build_encoder({"cls": TARGET, "params": {k: v for k, v in FAST.items() if k != "_target_"}})
    assert isinstance(legacy, ConformerEncoder)
    with pytest.raises(CheckpointError):
        build_encoder({"_target_": "nemo.collections.asr.modules.RNNEncoder"})
    with pytest.raises(UnsupportedOptionError):
        build_encoder({**FAST, "conv_context_size": [1, 1]})
    with pytest.raises(UnsupportedOptionError):
        build_encoder({**FAST, "subsampling": "vggnet"})
    with pytest.raises(UnsupportedOptionError):
        build_encoder({**FAST, "conv_norm_type": "weird_norm"})


# -- batch invariance -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cfg",
    [
        FAST,
        CLASSIC,
        STREAMING,
        LOCAL,
        {**FAST, "self_attention_model": "abs_pos", "use_bias": False},
        {**FAST, "untie_biases": False, "xscaling": False, "att_context_size": [5, 2]},
        {**LOCAL, "att_context_size": [4, 1], "global_tokens": 1, "global_attn_separate": True},
        {**CLASSIC, "causal_downsampling": True, "subsampling_factor": 2, "conv_context_size": [4, 2]},
        {**FAST, "conv_norm_type": "group_norm2"},
        {**FAST, "conv_norm_type": "instance_norm"},
        {**FAST, "subsampling": "stacking_norm", "subsampling_factor": 4},
        {**FAST, "reduction": "pooling", "reduction_position": 0, "reduction_factor": 2},
        {**FAST, "reduction": "striding", "reduction_position": -1, "reduction_factor": 2},
    ],
    ids=[
        "fast",
        "classic",
        "streaming",
        "local",
        "abs_nobias",
        "tied_ctx",
        "global",
        "causal_x2",
        "groupnorm",
        "instancenorm",
        "stacking",
        "pool",
        "reduce_stride",
    ],
)
def test_batch_invariance(cfg):
    assert_batch_invariant(encoder(cfg), [203, 150, 61, 9])


# -- local attention ----------------------------------------------------------------------------------------
def dense_local_reference(
    attn: LocalRelPositionMultiHeadAttention, x: torch.Tensor, lengths: torch.Tensor, left: int, right: int
) -> torch.Tensor:
    """Naive O(T²) rel-pos attention restricted to ``-left <= j - i <= right`` (+ one global token at 0)."""
    b, t, _ = x.shape
    h, dk = attn.h, attn.d_k
    q, k, v = (lin(x).view(b, t, h, dk) for lin in (attn.linear_q, attn.linear_k, attn.linear_v))
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    p = attn.linear_pos(sinusoids((i - j).flatten(), h * dk)).view(t, t, h, dk)  # p(i - j)
    scores = (
        torch.einsum("bihd,bjhd->bhij", q + attn.pos_bias_u, k)
        + torch.einsum("bihd,ijhd->bhij", q + attn.pos_bias_v, p)
    ) / math.sqrt(dk)
    valid = torch.arange(t)[None, :] < lengths[:, None]  # [B, T]
    allowed = ((j - i >= -left) & (j - i <= right))[None] & valid[:, None, :]  # [B, T, T]
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    if attn.global_tokens:  # every query also sees token 0 through plain q·k; token 0 sees everything
        g = torch.einsum("bihd,bhd->bhi", q, k[:, 0]) / math.sqrt(dk)
        probs = torch.cat((g[..., None], scores), dim=-1).softmax(-1)
        out = torch.einsum("bhi,bhd->bihd", probs[..., 0], v[:, 0]) + torch.einsum(
            "bhij,bjhd->bihd", probs[..., 1:], v
        )
        full = torch.einsum("bhd,bjhd->bhj", q[:, 0], k) / math.sqrt(dk)
        full = full.masked_fill(~valid[:, None], float("-inf")).softmax(-1)
        out[:, 0] = torch.einsum("bhj,bjhd->bhd", full, v)
    else:
        out = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v)
    return attn.linear_out(out.reshape(b, t, h * dk))


@pytest.mark.parametrize(
    "context,global_tokens,max_elements",
    [
        ((4, 4), 0, None),
        ((7, 7), 0, 2000),
        ((16, 16), 0, None),
        ((1, 1), 1, 3000),
        ((5, 5), 1, None),
    ],
)
def test_local_attention_equals_dense_reference(monkeypatch, context, global_tokens, max_elements):
    if max_elements:  # force several block groups
        monkeypatch.setattr(attention_mod, "MAX_SCORE_ELEMENTS", max_elements)
    attn = randomize_(LocalRelPositionMultiHeadAttention(2, 16, context, global_tokens=global_tokens), seed=3)
    pos = attention_mod.PositionalEncoding("rel_pos_local_attn", 16, att_context_size=context)
    x = torch.randn(3, 45, 16)
    lengths = torch.tensor([45, 30, 7])
    pad_mask = torch.arange(45)[None, :] >= lengths[:, None]
    with torch.inference_mode():
        out = attn(x, pos(x)[1], None, pad_mask)
        ref = dense_local_reference(attn, x, lengths, *context)
    for i, n in enumerate(lengths.tolist()):
        assert (out[i, :n] - ref[i, :n]).abs().max() < 1e-5


def test_local_attention_matches_dense_rel_pos_with_band_mask():
    """rel_pos with a regular [w, w] mask is the same function as rel_pos_local_attn [w, w]."""
    dense = encoder({**FAST, "att_context_size": [4, 4]}, seed=5)
    local = build_encoder({**FAST, "att_context_size": [4, 4], "self_attention_model": "rel_pos_local_attn"})
    local.load_state_dict(dense.state_dict(), strict=True)
    x, lens = features([250, 131])
    with torch.inference_mode():
        a, la = dense(x, lens)
        b, lb = local.eval()(x, lens)
    assert torch.equal(la, lb)
    for i, n in enumerate(la.tolist()):
        assert (a[i, :, :n] - b[i, :, :n]).abs().max() < 1e-5


def test_local_attention_memory_is_banded():
    """Scores are computed per query block against a window, never as a T×T matrix."""
    attn = LocalRelPositionMultiHeadAttention(2, 16, (8, 8)).eval()
    pos = attention_mod.PositionalEncoding("rel_pos_local_attn", 16, att_context_size=(8, 8))
    x = torch.randn(1, 4000, 16)
    seen: list[torch.Size] = []
    real_softmax = torch.Tensor.softmax
    with torch.inference_mode():
        torch.Tensor.softmax = lambda self, dim: (seen.append(self.shape), real_softmax(self, dim))[1]
        try:
            attn(x, pos(x)[1], None, torch.zeros(1, 4000, dtype=torch.bool))
        finally:
            torch.Tensor.softmax = real_softmax
    assert seen and all(s[-1] == attn.block + 16 for s in seen)
    assert sum(math.prod(s) for s in seen) < 4000 * 2 * 50


# -- switches ---------------------------------------------------------------------------------------------
def test_chunking_factor_does_not_change_results(monkeypatch):
    enc = encoder(FAST, seed=7)
    x, lens = features([203, 150, 61, 33])
    with torch.inference_mode():
        ref, rlen = enc(x, lens)
        single, _ = enc(x[:1], lens[:1])
        for factor in (2, 4, -1):
            enc.change_subsampling_conv_chunking_factor(factor)
            out, olen = enc(x, lens)
            assert torch.equal(olen, rlen) and (out - ref).abs().max() <= 1e-6
            one, _ = enc(x[:1], lens[:1])  # batch of one: split over channels and time instead
            assert (one - single).abs().max() <= 1e-6
        enc.change_subsampling_conv_chunking_factor(1)
        monkeypatch.setattr(subsampling, "INDEX_LIMIT", 1000)  # "auto" now has to split
        out, _ = enc(x, lens)
        assert (out - ref).abs().max() <= 1e-6
    with pytest.raises(UnsupportedOptionError):
        enc.change_subsampling_conv_chunking_factor(3)


def test_change_attention_model_keeps_weights_and_adds_zero_biases():
    enc = encoder({**FAST, "use_bias": False}, seed=9)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    enc.change_attention_model("rel_pos_local_attn", [8, 8])
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    new = set(after) - set(before)
    assert new and all(".self_attn.linear_" in k and k.endswith(".bias") for k in new)
    assert all(torch.count_nonzero(after[k]) == 0 for k in new)
    assert enc.self_attention_model == "rel_pos_local_attn" and enc.att_context_size == [8, 8]
    assert_batch_invariant(enc, [203, 99])
    enc.change_attention_model("rel_pos", [-1, -1])
    assert_batch_invariant(enc, [203, 99])
    with pytest.raises(UnsupportedOptionError):
        enc.change_attention_model("rel_pos_local_attn", [0, 0])


def test_positional_table_grows_on_demand():
    small = encoder({**FAST, "pos_emb_max_len": 4}, seed=11)
    big = build_encoder({**FAST, "pos_emb_max_len": 5000})
    big.load_state_dict(small.state_dict(), strict=True)
    x, lens = features([300])
    with torch.inference_mode():
        a, _ = small(x, lens)
        b, _ = big.eval()(x, lens)
    assert 2 * 38 - 1 <= small.pos_enc.pe.shape[0] < 2 * 5000 - 1 and torch.equal(a, b)
    absolute = encoder({**FAST, "self_attention_model": "abs_pos", "pos_emb_max_len": 4})
    with torch.inference_mode():
        assert absolute(x, lens)[0].shape == (1, 16, 38)


@pytest.mark.parametrize("kind", ["rel_pos", "abs_pos"])
def test_sdpa_path_matches_explicit_attention(kind):
    """``use_pytorch_sdpa`` runs the same math through the fused kernel."""
    explicit = encoder({**FAST, "self_attention_model": kind, "att_context_size": [6, 2]}, seed=13)
    fused = build_encoder(
        {**FAST, "self_attention_model": kind, "att_context_size": [6, 2], "use_pytorch_sdpa": True}
    )
    fused.load_state_dict(explicit.state_dict(), strict=True)
    x, lens = features([203, 120])
    with torch.inference_mode():
        a, la = explicit(x, lens)
        b, _ = fused.eval()(x, lens)
    for i, n in enumerate(la.tolist()):
        assert (a[i, :, :n] - b[i, :, :n]).abs().max() < 1e-5
    assert_batch_invariant(fused, [203, 120, 9])


# -- packed execution -------------------------------------------------------------------------------------
PACKABLE = {
    "fast": FAST,
    "classic": CLASSIC,
    "streaming": STREAMING,
    "abs_nobias": {**FAST, "self_attention_model": "abs_pos", "use_bias": False},
    "tied_ctx": {**FAST, "untie_biases": False, "xscaling": False, "att_context_size": [5, 2]},
    "groupnorm": {**FAST, "conv_norm_type": "group_norm2"},
    "fused_bn_out_proj": {**FAST, "conv_norm_type": "fused_batch_norm", "feat_out": 12},
    "stacking": {**FAST, "subsampling": "stacking_norm", "subsampling_factor": 4},
    "sdpa": {**FAST, "use_pytorch_sdpa": True},
}


@pytest.mark.parametrize("cfg", list(PACKABLE.values()), ids=list(PACKABLE))
@pytest.mark.parametrize("grouping", [[[0, 1, 2, 3, 4]], [[0], [1, 2], [3, 4]], [[3, 1], [4, 0, 2]]],
                         ids=["one-group", "buckets", "mixed"])
def test_packed_groups_equal_each_utterance_alone(cfg, grouping):
    """forward_groups: every utterance's frames equal its batch-1 result, whatever the grouping; zeros after."""
    enc = encoder(cfg)
    assert enc.packable
    lengths = [203, 150, 61, 9, 150]
    x, lens = features(lengths)
    with torch.inference_mode():
        groups = []
        for g in grouping:
            n = max(lengths[i] for i in g)
            groups.append((x[g, :, :n], lens[g]))
        packed, plen = enc.forward_groups(groups)
        order = [i for g in grouping for i in g]
        assert packed.shape[0] == len(order)
        for row, i in enumerate(order):
            alone, alen = enc(x[i : i + 1, :, : lengths[i]], lens[i : i + 1])
            t = int(alen[0])
            assert int(plen[row]) == t
            assert (alone[0, :, :t] - packed[row, :, :t]).abs().max() <= 1e-5
            assert not packed[row, :, t:].any()


def test_packing_is_refused_where_it_does_not_apply():
    for cfg in (LOCAL, {**FAST, "reduction": "pooling", "reduction_position": 0, "reduction_factor": 2}):
        enc = encoder(cfg)
        assert not enc.packable
        with pytest.raises(UnsupportedOptionError):
            enc.forward_groups([features([20, 10])])
    enc = encoder(FAST)
    enc.change_attention_model("rel_pos_local_attn", [4, 4])
    assert not enc.packable


@pytest.mark.parametrize("cfg", [FAST, CLASSIC, STREAMING, {**CLASSIC, "causal_downsampling": True}],
                         ids=["dw_striding", "striding", "causal_dw", "causal_striding"])
def testcpu_windowed_subsampling_equals_one_pass(cfg, monkeypatch):
    """On CPU the conv subsampling runs per utterance in short stretches (cache-sized); same frames as one
    pass over the padded batch, for every utterance length and stretch boundary."""
    enc = encoder(cfg)
    lengths = [203, 150, 61, 9, 1]
    x, lens = features(lengths)
    with torch.inference_mode():
        monkeypatch.setattr(subsampling, "CPU_WINDOW_BYTES", 0)
        ref, ref_len = enc.pre_encode(x.transpose(1, 2), lens)
        for window_bytes in (1, 20_000, 40_000):  # stretches of 8 x factor frames (the minimum) and up
            monkeypatch.setattr(subsampling, "CPU_WINDOW_BYTES", window_bytes)
            assert enc.pre_encode.cpu_window(x.transpose(1, 2)) > 0
            got, got_len = enc.pre_encode(x.transpose(1, 2), lens)
            assert torch.equal(got_len, ref_len) and got.shape == ref.shape
            for i, n in enumerate(ref_len.tolist()):
                assert (got[i, :n] - ref[i, :n]).abs().max() <= 1e-5


def test_projected_positions_are_cached_and_exact(monkeypatch):
    """rel_pos: linear_pos over the relative positions is computed once per layer for the longest input so far
    and sliced; outputs equal the uncached ones, and weight edits or the byte cap are honoured."""
    from models.encoders import conformer as conformer_mod

    enc = encoder(FAST)
    plain = encoder(FAST)
    monkeypatch.setattr(conformer_mod, "POSITION_CACHE_BYTES", 1 << 20)
    with torch.inference_mode():
        for lengths in ([300], [40, 9], [1000], [70]):
            x, lens = features(lengths)
            got, _ = enc(x, lens)
            monkeypatch.setattr(conformer_mod, "POSITION_CACHE_BYTES", 0)
            assert plain._position_projections(x.shape[2] // 8) is None
            ref, _ = plain(x, lens)
            monkeypatch.setattr(conformer_mod, "POSITION_CACHE_BYTES", 1 << 20)
            assert torch.allclose(got, ref, atol=1e-5, rtol=0)
        tables = enc._pos_cache[2]
        assert enc._pos_cache[1] >= 125  # grown for the 1000-frame input (125 encoder frames)
        enc(*features([50]))
        assert enc._pos_cache[2] is tables  # shorter inputs slice the same tables
        with torch.no_grad():
            enc.layers[1].self_attn.linear_pos.weight.mul_(2.0)  # in place: the cache must notice
        x, lens = features([50])
        with torch.inference_mode(False), torch.no_grad():
            plain.layers[1].self_attn.linear_pos.weight.mul_(2.0)
        monkeypatch.setattr(conformer_mod, "POSITION_CACHE_BYTES", 0)
        ref, _ = plain(x, lens)
        monkeypatch.setattr(conformer_mod, "POSITION_CACHE_BYTES", 1 << 20)
        assert torch.allclose(enc(x, lens)[0], ref, atol=1e-5, rtol=0)
    # too long for the cap: computed per call
    monkeypatch.setattr(conformer_mod, "POSITION_CACHE_BYTES", 2 * 16 * 4 * 100)
    with torch.inference_mode():
        assert enc._position_projections(50) is not None and enc._position_projections(51) is None
    with torch.no_grad():
        assert enc._position_projections(10) is not None
    assert enc._position_projections(10) is None  # autograd on: plain module calls
