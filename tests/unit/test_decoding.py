"""Unit tests of the heads (``models/decoders``) and greedy decoding (``models/decoding``); no NeMo needed.

The batched label-looping decoders are checked against simple per-utterance reference loops written here.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from models.decoders import CTCHead, RNNTJoint, RNNTPredictor, StatelessPredictor, build_predictor
from models.decoders import rnnt as rnnt_decoders
from models.decoding import ctc_greedy, greedy_multiblank, greedy_rnnt, greedy_tdt
from models.decoding import rnnt as rnnt_decoding
from models.errors import CheckpointError, UnsupportedOptionError

torch.set_num_threads(1)

V, D, H, J = 7, 8, 8, 12  # vocabulary (without blank), encoder dim, predictor dim, joint dim


# --- CTC -------------------------------------------------------------------------------------------------------


def onehot_logprobs(labels: list[list[int]], num_classes: int = 4) -> torch.Tensor:
    """``[B, T, C]`` log-probs whose argmax follows ``labels``; the max log-prob at frame t is -0.1 * (t + 1)."""
    out = torch.full((len(labels), len(labels[0]), num_classes), -20.0)
    for b, row in enumerate(labels):
        for t, k in enumerate(row):
            out[b, t, k] = -0.1 * (t + 1)
    return out


def test_ctc_greedy_collapse_frames_score_and_lengths() -> None:
    blank = 3
    lp = onehot_logprobs([[0, 0, 3, 0, 1, 1, 3, 2], [3, 2, 2, 2, 3, 3, 1, 1]])
    res = ctc_greedy(lp, torch.tensor([8, 5]), blank)
    assert res[0].frame_labels == [0, 0, 3, 0, 1, 1, 3, 2]
    assert res[0].tokens == [0, 0, 1, 2]  # a blank separates the repeated 0
    assert res[0].token_frames == [0, 3, 4, 7]
    assert math.isclose(res[0].score, -0.1 * (1 + 2 + 4 + 5 + 6 + 8), rel_tol=1e-6)  # non-blank frames only
    assert res[1].frame_labels == [3, 2, 2, 2, 3]  # frames beyond the length are ignored
    assert res[1].tokens == [2] and res[1].token_frames == [1]
    assert math.isclose(res[1].score, -0.1 * (2 + 3 + 4), rel_tol=1e-6)


def test_ctc_greedy_empty_and_all_blank() -> None:
    lp = onehot_logprobs([[3, 3, 3], [1, 1, 1]])
    res = ctc_greedy(lp, torch.tensor([3, 0]), 3)
    assert res[0].tokens == [] and res[0].score == 0.0
    assert res[1].frame_labels == [] and res[1].tokens == [] and res[1].score == 0.0


def test_ctc_greedy_batch_invariant() -> None:
    torch.manual_seed(0)
    lp = torch.randn(4, 30, 6).log_softmax(-1)
    lens = torch.tensor([30, 17, 1, 25])
    batched = ctc_greedy(lp, lens, 5)
    for b in range(4):
        alone = ctc_greedy(lp[b : b + 1, : lens[b]], lens[b : b + 1], 5)[0]
        assert (alone.tokens, alone.token_frames, alone.frame_labels) == (
            batched[b].tokens,
            batched[b].token_frames,
            batched[b].frame_labels,
        )
        assert math.isclose(alone.score, batched[b].score, abs_tol=1e-5)


def test_ctc_head() -> None:
    head = CTCHead.from_config(
        {"cls": "x.ConvASRDecoder", "params": {"feat_in": 6, "num_classes": -1, "vocabulary": list("abcd")}}
    )
    assert set(head.state_dict()) == {"decoder_layers.0.weight", "decoder_layers.0.bias"}
    assert head.num_classes_with_blank == 5 and head.blank_idx == 4
    x = torch.randn(2, 6, 9)
    lp = head(x)
    assert lp.shape == (2, 9, 5)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2, 9))
    logits = head.decoder_layers(x).transpose(1, 2)
    head.temperature = 2.0
    torch.testing.assert_close(head(x), (logits / 2.0).log_softmax(-1))


# --- predictors and joint --------------------------------------------------------------------------------------


def rnnt_predictor(layers: int = 1, seed: int = 0, **kw: Any) -> RNNTPredictor:
    torch.manual_seed(seed)
    pred = RNNTPredictor(V, H, layers, **kw).eval()
    with torch.no_grad():
        for p in pred.parameters():
            p.normal_(0.0, 0.5)  # includes the blank (SOS) embedding row
    return pred


def joint_net(extra: int = 0, seed: int = 1, dropout: float = 0.2, activation: str = "tanh") -> RNNTJoint:
    torch.manual_seed(seed)
    joint = RNNTJoint(D, H, J, V, activation, num_extra_outputs=extra, dropout=dropout).eval()
    with torch.no_grad():
        for p in joint.parameters():
            p.normal_(0.0, 0.5)
    return joint


def test_rnnt_predictor_keys_and_step_matches_lstm() -> None:
    cfg = {
        "_target_": "nemo.collections.asr.modules.RNNTDecoder",
        "vocab_size": V,
        "blank_as_pad": True,
        "prednet": {"pred_hidden": H, "pred_rnn_layers": 2, "dropout": 0.2},
    }
    pred = build_predictor(cfg)
    assert isinstance(pred, RNNTPredictor) and pred.blank_idx == V
    sd = pred.state_dict()
    assert sd["prediction.embed.weight"].shape == (V + 1, H)
    assert {"prediction.dec_rnn.lstm.weight_ih_l1", "prediction.dec_rnn.lstm.bias_hh_l0"} <= set(sd)
    pred = rnnt_predictor(layers=2)
    y = torch.tensor([[V, 3, 1, 6], [V, 0, 0, 2]])  # SOS = stored blank row
    lstm = pred.prediction["dec_rnn"]["lstm"]
    ref, (h, c) = lstm(pred.prediction["embed"](y).transpose(0, 1))
    state, outs = pred.initial_state(2), []
    for u in range(4):
        g, state = pred.step(y[:, u], state)
        outs.append(g)
    torch.testing.assert_close(torch.stack(outs, 0), ref)
    torch.testing.assert_close(state[0], h)
    torch.testing.assert_close(state[1], c)
    assert [s[0].shape for s in pred.split_state(state)] == [(2, H), (2, H)]


@pytest.mark.filterwarnings("ignore:LSTM with projections")
@pytest.mark.parametrize("table", [True, False], ids=["input_gate_table", "stacked"])
@pytest.mark.parametrize("kwargs", [{"layers": 2}, {"rnn_hidden_size": 2 * H}, {"blank_as_pad": False}],
                         ids=["two_layers", "projection", "blank_not_pad"])
def test_rnnt_predictor_decoding_cell_matches_nn_lstm(kwargs: dict[str, Any], table: bool, monkeypatch) -> None:
    """Without autograd, step() uses its hand-written cell (with or without the per-token input-gate table); it
    must equal nn.LSTM (which runs with autograd on), and follow weight changes (its weights are cached)."""
    if not table:
        monkeypatch.setattr(rnnt_decoders, "INPUT_GATES_MAX_BYTES", 0)
    pred = rnnt_predictor(**kwargs)
    tokens = [torch.tensor([V, 2]), torch.tensor([3, 3]), torch.tensor([0, V])]

    def run(grad: bool) -> list[torch.Tensor]:
        state, outs = None, []
        with torch.set_grad_enabled(grad):
            for t in tokens:
                g, state = pred.step(t, state)
                outs += [g.detach(), state[0].detach(), state[1].detach()]
        return outs

    for fast, ref in zip(run(False), run(True)):
        torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        pred.prediction["dec_rnn"]["lstm"].weight_hh_l0.mul_(-0.5)  # in place: the cache must notice
    for fast, ref in zip(run(False), run(True)):
        torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        pred.prediction["embed"].weight.mul_(2.0)  # the input-gate table depends on the embedding too
    for fast, ref in zip(run(False), run(True)):
        torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-5)
    assert (pred._stacked_cells()[1] is not None) == table
    with torch.inference_mode():
        g, _ = pred.step(tokens[0], None)
    torch.testing.assert_close(g, run(True)[0], atol=1e-6, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_rnnt_predictor_projection_and_no_blank_row() -> None:
    pred = rnnt_predictor(rnn_hidden_size=2 * H)  # LSTM with proj_size = pred_hidden
    assert pred.output_dim == H and "prediction.dec_rnn.lstm.weight_hr_l0" in pred.state_dict()
    g, (h, c) = pred.step(torch.tensor([1, V]), None)
    assert g.shape == (2, H) and h.shape == (1, 2, H) and c.shape == (1, 2, 2 * H)
    nopad = rnnt_predictor(blank_as_pad=False)
    assert nopad.state_dict()["prediction.embed.weight"].shape == (V, H)
    assert torch.all(nopad.embed(torch.tensor([V, 2]))[0] == 0)  # blank input -> zero vector


def test_stateless_predictor_history() -> None:
    torch.manual_seed(0)
    pred = StatelessPredictor(V, 12, context_size=3).eval()
    sizes = [e.weight.shape[1] for e in pred.prediction["embeds"]]
    assert sizes == [8, 2, 2]  # the most recent label gets H - (H // 2 // C) * (C - 1) dims
    with torch.no_grad():
        for e in pred.prediction["embeds"]:
            e.weight.normal_()
    state = pred.initial_state(1)
    for tok in (4, 5, 6):
        g, state = pred.step(torch.tensor([tok]), state)
    e = pred.prediction["embeds"]
    want = torch.cat([e[0].weight[6], e[1].weight[5], e[2].weight[4]])
    torch.testing.assert_close(g[0], want)
    assert state.tolist() == [[5, 6]]
    assert isinstance(
        build_predictor(
            {
                "_target_": "a.StatelessTransducerDecoder",
                "vocab_size": V,
                "prednet": {"pred_hidden": H},
                "context_size": 2,
            }
        ),
        StatelessPredictor,
    )


def test_joint_final_layer_index_and_loading() -> None:
    cfg = {
        "jointnet": {
            "encoder_hidden": D,
            "pred_hidden": H,
            "joint_hidden": J,
            "activation": "tanh",
            "dropout": 0.2,
        },
        "num_classes": V,
        "num_extra_outputs": 5,
    }
    joint = RNNTJoint.from_config(cfg)
    assert joint.num_classes_with_blank == V + 1 + 5
    assert {"enc.weight", "pred.bias", "joint_net.2.weight"} <= set(joint.state_dict())
    no_dropout = RNNTJoint.from_config({**cfg, "jointnet": {**cfg["jointnet"], "dropout": 0.0}})
    assert "joint_net.1.weight" in no_dropout.state_dict()
    no_dropout.load_state_dict(joint.state_dict(), strict=True)  # adapts to the keys present
    assert "joint_net.2.weight" in no_dropout.state_dict()
    f, g = torch.randn(2, 5, D), torch.randn(2, 3, H)
    torch.testing.assert_close(no_dropout.joint(f, g), joint.joint(f, g))
    assert joint.joint(f, g).shape == (2, 5, 3, V + 6)
    assert joint.use_log_softmax(torch.device("cpu")) and not joint.use_log_softmax(torch.device("cuda"))


def test_rnnt_predictor_rejects_normalized_rnn() -> None:
    with pytest.raises(CheckpointError):
        RNNTPredictor.from_config(
            {"vocab_size": V, "normalization_mode": "layer", "prednet": {"pred_hidden": H}}
        )


# --- transducer greedy: reference loops ------------------------------------------------------------------------


def _logits(joint: RNNTJoint, f: torch.Tensor, g: torch.Tensor, log_softmax: bool) -> torch.Tensor:
    z = joint.joint_after_projection(f, g)[0]
    return z.log_softmax(-1) if log_softmax else z


@torch.no_grad()
def ref_rnnt(
    enc: torch.Tensor,
    n: int,
    pred: Any,
    joint: RNNTJoint,
    blank: int,
    max_symbols: int | None,
    log_softmax: bool,
    big: list[int] | None = None,
) -> tuple[list[int], list[int], float, Any]:
    """Per-utterance frame loop (RNNT; multi-blank when ``big`` big-blank durations are given)."""
    f = joint.project_encoder(enc[None])[0]  # [T, J]
    first_blank = blank - len(big or [])
    g, state = pred.step(torch.tensor([first_blank]), pred.initial_state(1))
    g = joint.project_prediction(g)
    tokens, frames, score, t = [], [], torch.zeros(()), 0
    while t < n:
        skip, emitted = 1, 0
        while max_symbols is None or emitted < max_symbols:
            v, k = _logits(joint, f[t : t + 1], g, log_softmax).max(-1)
            if int(k) >= first_blank:
                skip = big[blank - int(k) - 1] if int(k) < blank else 1
                break
            tokens.append(int(k)), frames.append(t)
            score = score + v
            g, state = pred.step(k.view(1), state)
            g = joint.project_prediction(g)
            emitted += 1
        t += skip
    return tokens, frames, float(score), state


@torch.no_grad()
def ref_tdt(
    enc: torch.Tensor,
    n: int,
    pred: Any,
    joint: RNNTJoint,
    blank: int,
    durations: list[int],
    max_symbols: int | None,
    log_softmax: bool,
) -> tuple[list[int], list[int], list[int], float]:
    """Per-utterance TDT loop as in the spec (§6.3)."""
    f = joint.project_encoder(enc[None])[0]
    g, state = pred.step(torch.tensor([blank]), pred.initial_state(1))
    g = joint.project_prediction(g)
    tokens, frames, durs, score, t, last_t, run = [], [], [], torch.zeros(()), 0, -1, 0
    while t < n:
        z = _logits(joint, f[t : t + 1], g, log_softmax)
        v, k = z[: blank + 1].max(-1)
        d = durations[int(z[blank + 1 :].argmax())]
        if int(k) == blank:
            t += max(d, 1)
            continue
        tokens.append(int(k)), frames.append(t), durs.append(d)
        score = score + v
        run = run + 1 if t == last_t else 1
        last_t = t
        g, state = pred.step(k.view(1), state)
        g = joint.project_prediction(g)
        t += d
        if max_symbols is not None and d == 0 and run >= max_symbols:
            t += 1
    return tokens, frames, durs, float(score)


# Purely random transducers tend to emit tokens forever; the "counting" construction makes one LSTM unit count
# emitted tokens, one encoder dim carry the number of tokens due by each frame and one tanh joint unit be +1 while
# tokens are due and -1 otherwise. All other weights stay random (token identities, durations, noise).
GAMMA = 0.04


def make_counting(pred: RNNTPredictor, joint: RNNTJoint, token_gain: float = 20.0) -> None:
    assert isinstance(joint.joint_net[0], torch.nn.Tanh)
    lstm, n = pred.prediction["dec_rnn"]["lstm"], pred.cell_size
    with torch.no_grad():
        pred.prediction["embed"].weight[:V, 0] = GAMMA
        pred.prediction["embed"].weight[V, 0] = 0.0
        for gate in range(4):  # unit 0: gates open, cell input = embedding dim 0 -> counter
            for w in (lstm.weight_ih_l0, lstm.weight_hh_l0):
                w[gate * n].zero_()
            lstm.bias_hh_l0[gate * n] = 0.0
            lstm.bias_ih_l0[gate * n] = 0.0 if gate == 2 else 20.0
        lstm.weight_ih_l0[2 * n, 0] = 1.0
        for lin, sign in ((joint.enc, 1.0), (joint.pred, -1.0)):
            lin.weight[0].zero_()
            lin.weight[0, 0] = sign * 2000.0
            lin.bias[0] = 0.0
        joint.joint_net[-1].weight[:, 0] = 0.0
        joint.joint_net[-1].weight[:V, 0] = token_gain


def counting_batch(B: int, T: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder output ``[B, T, D]`` and lengths (incl. a 1-frame and, for odd seeds, an empty utterance)."""
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(B, T, D, generator=g)
    due = (
        torch.multinomial(torch.tensor([0.45, 0.33, 0.12, 0.06, 0.04]), B * T, replacement=True, generator=g)
        .view(B, T)
        .cumsum(1)
    )
    enc[..., 0] = torch.tanh(math.tanh(GAMMA) * (due.float() - 0.5))
    lens = torch.randint(1, T + 1, (B,), generator=g)
    lens[0], lens[1] = T, seed % 2 == 0
    return enc, lens


def check_against_ref(res: list[Any], refs: list[tuple[Any, ...]], tdt: bool = False) -> None:
    for r, ref in zip(res, refs):
        assert r.tokens == ref[0] and r.frames == ref[1]
        if tdt:
            assert r.durations == ref[2]
        else:
            assert r.durations is None
        assert math.isclose(r.score, ref[-1] if tdt else ref[2], rel_tol=1e-6, abs_tol=1e-5)  # float32 sums


# --- transducer greedy: tests ----------------------------------------------------------------------------------

MAX_SYMBOLS = [1, 2, 10, None]


@pytest.fixture(params=["grouped", "batched", "single"])
def strategy(request, monkeypatch) -> str:
    """Every reference test runs with each way of splitting a batch (models.decoding.rnnt.STRATEGY)."""
    monkeypatch.setattr(rnnt_decoding, "STRATEGY", request.param)
    return request.param


@pytest.mark.usefixtures("strategy")
@pytest.mark.parametrize("max_symbols", MAX_SYMBOLS)
@pytest.mark.parametrize("log_softmax", [True, False])
def test_greedy_rnnt_matches_reference(max_symbols: int | None, log_softmax: bool) -> None:
    pred, joint = rnnt_predictor(), joint_net()
    make_counting(pred, joint)
    for seed in range(4):
        enc, lens = counting_batch(5, 14, seed)
        res = greedy_rnnt(enc, lens, pred, joint, V, max_symbols, log_softmax=log_softmax)
        refs = [ref_rnnt(enc[b], int(lens[b]), pred, joint, V, max_symbols, log_softmax) for b in range(5)]
        check_against_ref(res, refs)
        for r, ref in zip(res, refs):  # final predictor state (NeMo's dec_state)
            torch.testing.assert_close(r.dec_state[1], ref[3][1][:, 0])


@pytest.mark.usefixtures("strategy")
@pytest.mark.parametrize("max_symbols", [1, 2, 3])
def test_greedy_rnnt_random_two_layer_predictor(max_symbols: int) -> None:
    """Random weights (many tokens per frame), so ``max_symbols`` decides a lot."""
    pred, joint = rnnt_predictor(layers=2, seed=5), joint_net(seed=6, activation="relu")
    capped_frames = 0
    for seed in range(4):
        enc, lens = counting_batch(4, 10, seed)
        res = greedy_rnnt(enc, lens, pred, joint, V, max_symbols, log_softmax=True)
        check_against_ref(
            res, [ref_rnnt(enc[b], int(lens[b]), pred, joint, V, max_symbols, True) for b in range(4)]
        )
        capped_frames += sum(r.frames.count(t) == max_symbols for r in res for t in set(r.frames))
    assert capped_frames > 0


@pytest.mark.usefixtures("strategy")
def test_greedy_rnnt_stateless_predictor() -> None:
    torch.manual_seed(3)
    pred = StatelessPredictor(V, H, context_size=2, normalization_mode="layer").eval()
    joint = joint_net(seed=4, activation="sigmoid")
    for seed in range(3):
        enc, lens = counting_batch(4, 10, seed)
        res = greedy_rnnt(enc, lens, pred, joint, V, 2, log_softmax=True)
        check_against_ref(res, [ref_rnnt(enc[b], int(lens[b]), pred, joint, V, 2, True) for b in range(4)])


DURATION_SETS = [[0, 1, 2, 3, 4], [1, 2, 4], [0, 1], [0, 2, 5]]


@pytest.mark.usefixtures("strategy")
@pytest.mark.parametrize("durations", DURATION_SETS)
@pytest.mark.parametrize("max_symbols", MAX_SYMBOLS)
def test_greedy_tdt_matches_reference(durations: list[int], max_symbols: int | None) -> None:
    pred, joint = rnnt_predictor(seed=7), joint_net(extra=len(durations), seed=8)
    make_counting(pred, joint)
    with torch.no_grad():
        joint.joint_net[-1].bias[V + 1] += 2.0  # favour the first duration (0 where present)
    n_zero_dur_tokens = 0
    for seed in range(4):
        enc, lens = counting_batch(5, 14, seed)
        res = greedy_tdt(
            enc, lens, pred, joint, V, durations=durations, max_symbols=max_symbols, log_softmax=True
        )
        refs = [ref_tdt(enc[b], int(lens[b]), pred, joint, V, durations, max_symbols, True) for b in range(5)]
        check_against_ref(res, refs, tdt=True)
        n_zero_dur_tokens += sum(r.durations.count(0) for r in res)
    assert (n_zero_dur_tokens > 0) == (0 in durations)


@pytest.mark.usefixtures("strategy")
@pytest.mark.parametrize("max_symbols", [1, 3, None])
def test_greedy_multiblank_matches_reference(max_symbols: int | None) -> None:
    big = [2, 4]
    pred, joint = rnnt_predictor(seed=9), joint_net(extra=len(big), seed=10)
    make_counting(pred, joint)
    with torch.no_grad():
        joint.joint_net[-1].bias[V:] += torch.tensor([-1.0, -0.5, 0.0])
    blank = V + len(big)
    for seed in range(4):
        enc, lens = counting_batch(5, 14, seed)
        res = greedy_multiblank(
            enc, lens, pred, joint, blank, big_blank_durations=big, max_symbols=max_symbols, log_softmax=True
        )
        refs = [ref_rnnt(enc[b], int(lens[b]), pred, joint, blank, max_symbols, True, big) for b in range(5)]
        check_against_ref(res, refs)


@pytest.mark.usefixtures("strategy")
def test_greedy_batch_invariant() -> None:
    pred, joint = rnnt_predictor(seed=11), joint_net(extra=5, seed=12)
    make_counting(pred, joint)
    enc, lens = counting_batch(6, 16, 1)
    durations = [0, 1, 2, 3, 4]
    batched = greedy_tdt(enc, lens, pred, joint, V, durations=durations, log_softmax=True)
    for b in range(6):
        n = max(int(lens[b]), 1)
        alone = greedy_tdt(
            enc[b : b + 1, :n], lens[b : b + 1], pred, joint, V, durations=durations, log_softmax=True
        )[0]
        assert (alone.tokens, alone.frames, alone.durations) == (
            batched[b].tokens,
            batched[b].frames,
            batched[b].durations,
        )
        assert math.isclose(alone.score, batched[b].score, abs_tol=1e-5)


class CountingCalls:
    """Wraps predictor/joint to record the batch size of every call."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def step(self, tokens: torch.Tensor, state: Any) -> Any:
        self.calls.append(tokens.shape[0])
        return self.inner.step(tokens, state)

    def joint_after_projection(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        self.calls.append(f.shape[0])
        return self.inner.joint_after_projection(f, g)


@pytest.mark.usefixtures("strategy")
def test_temperature_only_scales_log_softmax_scores() -> None:
    pred, joint = rnnt_predictor(seed=15), joint_net(seed=16)
    make_counting(pred, joint)
    enc, lens = counting_batch(3, 10, 0)
    plain = greedy_rnnt(enc, lens, pred, joint, V, log_softmax=True)
    joint.temperature = 2.0  # picked up from the joint, as NeMo does
    hot = greedy_rnnt(enc, lens, pred, joint, V, log_softmax=True)
    raw = greedy_rnnt(enc, lens, pred, joint, V, log_softmax=False)
    raw_hot = greedy_rnnt(enc, lens, pred, joint, V, log_softmax=False)
    assert [r.tokens for r in hot] == [r.tokens for r in plain] == [r.tokens for r in raw]
    assert any(abs(a.score - b.score) > 1e-3 for a, b in zip(hot, plain) if a.tokens)
    assert [r.score for r in raw_hot] == [r.score for r in raw]  # ignored without the log-softmax
    explicit = greedy_rnnt(enc, lens, pred, joint, V, log_softmax=True, temperature=1.0)
    assert [r.score for r in explicit] == [r.score for r in plain]


def test_label_looping_runs_whole_batch_per_call(monkeypatch) -> None:
    monkeypatch.setattr(rnnt_decoding, "STRATEGY", "batched")
    pred, joint = rnnt_predictor(seed=13), joint_net(seed=14)
    make_counting(pred, joint)
    enc, lens = counting_batch(5, 14, 2)
    wp, wj = CountingCalls(pred), CountingCalls(joint)
    res = greedy_rnnt(enc, lens, wp, wj, V, 10, log_softmax=True)
    assert set(wp.calls) == {5} and set(wj.calls) == {5}
    # one predictor step for SOS plus one per outer iteration (= per token of the longest hypothesis, +1)
    assert len(wp.calls) <= 2 + max(len(r.tokens) for r in res)


def test_cpu_batches_are_decoded_by_length_group() -> None:
    """On CPU: rows of similar length share the batched loop; a row of its own length runs alone."""
    pred, joint = rnnt_predictor(seed=13), joint_net(seed=14)
    make_counting(pred, joint)
    enc = torch.randn(4, 40, D)
    lens = torch.tensor([40, 10, 11, 10])
    wp = CountingCalls(pred)
    greedy_rnnt(enc, lens, wp, joint, V, 10, log_softmax=True)
    assert set(wp.calls) == {1, 3}


@pytest.mark.usefixtures("strategy")
def test_empty_batch_rows_and_option_errors() -> None:
    pred, joint = rnnt_predictor(), joint_net(extra=2)
    enc = torch.randn(2, 5, D)
    res = greedy_tdt(enc, torch.tensor([0, 0]), pred, joint, V, durations=[0, 1], log_softmax=True)
    assert [(r.tokens, r.frames, r.durations, r.score) for r in res] == [([], [], [], 0.0)] * 2
    no_frames = greedy_rnnt(
        torch.zeros(2, 0, D), torch.tensor([0, 0]), pred, joint_net(), V, log_softmax=True
    )
    assert [(r.tokens, r.score) for r in no_frames] == [([], 0.0)] * 2
    with pytest.raises(UnsupportedOptionError):
        greedy_rnnt(enc, torch.tensor([5, 5]), pred, joint_net(), V, 0, log_softmax=True)
    with pytest.raises(CheckpointError):
        greedy_tdt(enc, torch.tensor([5, 5]), pred, joint, V, durations=[0, 1, 2], log_softmax=True)
