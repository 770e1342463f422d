"""Dev-only parity check of ConvASR encoders, heads and greedy transducer decoding against NeMo.

Run:  PYTHONPATH=/work/main /work/nemo-venv/bin/python tools/check_decoders_vs_nemo.py

Builds NeMo modules with random weights (BatchNorm statistics and the RNNT blank embedding row included),
loads the same state dicts into aviary's modules and compares outputs; then runs NeMo's greedy decoders
(label-looping RNNT, TDT, multi-blank) on random encoder outputs against aviary's. Exits non-zero on failure.
"""

from __future__ import annotations

import copy
import logging
import sys
from typing import Any

import torch

torch.set_num_threads(1)
logging.disable(logging.WARNING)

from nemo.collections.asr.modules import ConvASRDecoder as NeConvASRDecoder
from nemo.collections.asr.modules import ConvASREncoder as NeConvASREncoder
from nemo.collections.asr.modules import RNNTDecoder as NeRNNTDecoder
from nemo.collections.asr.modules import RNNTJoint as NeRNNTJoint
from nemo.collections.asr.modules import StatelessTransducerDecoder as NeStateless
from nemo.collections.asr.parts.submodules import rnnt_greedy_decoding as nemo_greedy

from models.decoders import CTCHead, RNNTJoint, RNNTPredictor, StatelessPredictor
from models.decoding import greedy_multiblank, greedy_rnnt, greedy_tdt
from models.encoders.conv_asr import ConvASREncoder

FAILURES: list[str] = []


def report(name: str, ok: bool, detail: str) -> None:
    print(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}")
    if not ok:
        FAILURES.append(name)


def randomize(module: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    """Random weights everywhere, including BN running stats and embedding padding (blank) rows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)
            elif name.endswith("norm.weight") or (t.dim() == 1 and "weight" in name):
                t.copy_(1.0 + 0.2 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(torch.randn(t.shape, generator=g) * scale)


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
        "dropout": 0.1,
        "residual": residual,
    }
    d.update(extra)
    return d


ENCODERS: dict[str, dict[str, Any]] = {
    "quartznet": {
        "feat_in": 16,
        "activation": "relu",
        "conv_mask": True,
        "jasper": [
            block(32, 1, 11, stride=2, residual=False, separable=True),
            block(24, 3, 7, separable=True),
            block(24, 2, 9, separable=True),
            block(32, 1, 9, dilation=2, residual=False, separable=True),
            block(40, 1, 1, residual=False),
        ],
    },
    "citrinet": {
        "feat_in": 16,
        "activation": "relu",
        "conv_mask": True,
        "jasper": [
            block(32, 1, 5, residual=False, separable=True, se=True, se_context_size=-1),
            block(
                32,
                3,
                11,
                stride=2,
                separable=True,
                se=True,
                stride_last=True,
                residual_mode="stride_add",
                kernel_size_factor=0.5,
                se_reduction_ratio=4,
            ),
            block(32, 2, 13, separable=True, se=True, se_context_size=64, kernel_size_factor=0.5),
            block(40, 2, 15, stride=2, separable=True, se=True, stride_last=True, residual_mode="stride_add"),
            block(48, 1, 41, residual=False, separable=True, se=True, kernel_size_factor=0.25),
        ],
    },
    "jasper_dr_swish": {
        "feat_in": 12,
        "activation": "swish",
        "conv_mask": True,
        "jasper": [
            block(24, 1, 11, stride=2, residual=False),
            block(24, 2, 7, residual_dense=True),
            block(32, 2, 7, residual_dense=True, residual_mode="max"),
            block(32, 2, 9, residual_dense=True),
            block(40, 1, 1, residual=False),
        ],
    },
    "groups_heads_future_ctx": {
        "feat_in": 16,
        "activation": "hardtanh",
        "conv_mask": True,
        "jasper": [
            block(32, 1, 11, stride=2, residual=False, separable=True, heads=4, future_context=2),
            block(32, 2, 7, separable=True, groups=4, heads=8),
            block(32, 2, 8, groups=2, future_context=1),
            block(
                32, 2, 5, dilation=2, future_context=1, separable=True, residual=False
            ),  # grows T by 1 per conv
            block(24, 1, 3, residual=False, separable=True, future_context=9),
        ],
    },
    "no_conv_mask_gelu": {
        "feat_in": 16,
        "activation": "gelu",
        "conv_mask": False,
        "frame_splicing": 2,
        "jasper": [
            block(24, 1, 11, stride=2, residual=False, separable=True),
            block(24, 2, 7, separable=True, se=True),
        ],
    },
}


def check_encoders() -> None:
    for seed, (name, cfg) in enumerate(ENCODERS.items()):
        nemo_enc = NeConvASREncoder(**copy.deepcopy(cfg)).eval()
        randomize(nemo_enc, seed)
        ours = ConvASREncoder.from_config(
            {"_target_": "nemo.collections.asr.modules.ConvASREncoder", **cfg}
        ).eval()
        ours.load_state_dict(nemo_enc.state_dict(), strict=True)
        feat = cfg["feat_in"] * cfg.get("frame_splicing", 1)
        g = torch.Generator().manual_seed(100 + seed)
        x = torch.randn(4, feat, 77, generator=g)
        lens = torch.tensor([77, 50, 13, 64])
        with torch.no_grad():
            ref, ref_len = nemo_enc(audio_signal=x, length=lens)
            out, out_len = ours(x, lens)
        diff = (ref - out).abs().max().item()
        ok = diff <= 1e-5 and torch.equal(ref_len.long(), out_len) and out_len.dtype == torch.int64
        ok = ok and ours.subsampling_factor == nemo_enc.subsampling_factor and ours.output_dim == out.shape[1]
        report(
            f"encoder/{name}", ok, f"max|diff|={diff:.2e} lens={out_len.tolist()} shape={tuple(out.shape)}"
        )


def check_ctc_head() -> None:
    nemo_dec = NeConvASRDecoder(feat_in=24, num_classes=9).eval()
    randomize(nemo_dec, 7)
    ours = CTCHead.from_config({"feat_in": 24, "num_classes": -1, "vocabulary": list("abcdefghi")}).eval()
    ours.load_state_dict(nemo_dec.state_dict(), strict=True)
    x = torch.randn(3, 24, 20)
    with torch.no_grad():
        diff = (nemo_dec(encoder_output=x) - ours(x)).abs().max().item()
        nemo_dec.temperature = ours.temperature = 1.7
        diff_t = (nemo_dec(encoder_output=x) - ours(x)).abs().max().item()
    report("ctc_head", max(diff, diff_t) <= 1e-4, f"max|diff|={diff:.2e} (temperature 1.7: {diff_t:.2e})")


def nemo_rnnt_decoder(V: int, H: int, layers: int, seed: int, rnn_hidden: int = -1) -> NeRNNTDecoder:
    prednet = {"pred_hidden": H, "pred_rnn_layers": layers, "rnn_hidden_size": rnn_hidden, "dropout": 0.2}
    nemo_dec = NeRNNTDecoder(prednet=prednet, vocab_size=V, blank_as_pad=True).eval()
    randomize(nemo_dec, seed, scale=0.5)  # the blank (SOS) embedding row becomes non-zero too
    return nemo_dec


def our_predictor(nemo_dec: NeRNNTDecoder) -> RNNTPredictor:
    prednet = {
        "pred_hidden": nemo_dec.pred_hidden,
        "pred_rnn_layers": nemo_dec.pred_rnn_layers,
        "rnn_hidden_size": nemo_dec.prediction["dec_rnn"].lstm.hidden_size,
    }
    cfg = {
        "_target_": "nemo.collections.asr.modules.RNNTDecoder",
        "prednet": prednet,
        "vocab_size": nemo_dec.blank_idx,
        "blank_as_pad": True,
        "normalization_mode": None,
    }
    ours = RNNTPredictor.from_config(cfg).eval()
    ours.load_state_dict(nemo_dec.state_dict(), strict=True)
    return ours


def nemo_joint(
    V: int, D: int, H: int, J: int, extra: int, seed: int, dropout: float = 0.2, activation: str = "tanh"
) -> NeRNNTJoint:
    jointnet = {
        "encoder_hidden": D,
        "pred_hidden": H,
        "joint_hidden": J,
        "activation": activation,
        "dropout": dropout,
    }
    joint = NeRNNTJoint(jointnet=jointnet, num_classes=V, num_extra_outputs=extra).eval()
    randomize(joint, seed, scale=0.5)
    return joint


def our_joint(joint: NeRNNTJoint) -> RNNTJoint:
    jointnet = {
        "encoder_hidden": joint.encoder_hidden,
        "pred_hidden": joint.pred_hidden,
        "joint_hidden": joint.joint_hidden,
        "activation": joint.activation,
        "dropout": 0.2 if len(joint.joint_net) == 3 else 0.0,
    }
    cfg = {
        "jointnet": jointnet,
        "num_classes": joint._vocab_size,
        "num_extra_outputs": joint.num_extra_outputs,
        "log_softmax": None,
    }
    ours = RNNTJoint.from_config(cfg).eval()
    ours.load_state_dict(joint.state_dict(), strict=True)
    return ours


def check_predictors_and_joint() -> None:
    V, H = 11, 16
    for rnn_hidden, layers in ((-1, 2), (24, 1), (12, 1)):
        nemo_dec = nemo_rnnt_decoder(V, H, layers, seed=3, rnn_hidden=rnn_hidden)
        ours = our_predictor(nemo_dec)
        y = torch.randint(0, V + 1, (3, 6))
        with torch.no_grad():
            ref, _ = nemo_dec.predict(y, state=None, add_sos=False)  # [B, U, H]
            state, outs = None, []
            for u in range(y.shape[1]):
                g, state = ours.step(y[:, u], state)
                outs.append(g)
        diff = (ref - torch.stack(outs, 1)).abs().max().item()
        report(
            f"rnnt_predictor/rnn_hidden={rnn_hidden},layers={layers}", diff <= 1e-5, f"max|diff|={diff:.2e}"
        )

    for ctx, norm in ((1, None), (3, "layer")):
        nemo_sl = NeStateless(
            prednet={"pred_hidden": H, "dropout": 0.0},
            vocab_size=V,
            context_size=ctx,
            normalization_mode=norm,
        ).eval()
        randomize(nemo_sl, 4)
        ours_sl = StatelessPredictor.from_config(
            {
                "_target_": "x.StatelessTransducerDecoder",
                "vocab_size": V,
                "prednet": {"pred_hidden": H},
                "context_size": ctx,
                "normalization_mode": norm,
            }
        ).eval()
        ours_sl.load_state_dict(nemo_sl.state_dict(), strict=True)
        y = torch.randint(0, V, (3, 5))
        with torch.no_grad():
            ref_state, our_state, diff = nemo_sl.initialize_state(torch.zeros(3, 1)), None, 0.0
            for u in range(y.shape[1]):
                ref_g, ref_state = nemo_sl.predict(y[:, u : u + 1], state=ref_state, add_sos=False)
                g, our_state = ours_sl.step(y[:, u], our_state)
                diff = max(diff, (ref_g[:, 0] - g).abs().max().item())
        report(f"stateless_predictor/context={ctx},norm={norm}", diff <= 1e-5, f"max|diff|={diff:.2e}")

    for dropout, extra in ((0.2, 0), (0.0, 5)):
        joint = nemo_joint(V, 20, H, 18, extra, seed=5, dropout=dropout)
        ours = our_joint(joint)
        f, g = torch.randn(2, 7, 20), torch.randn(2, 4, H)
        with torch.no_grad():
            ref = joint.joint(f, g)  # log-softmax applied (CPU, log_softmax=None)
            out = ours.joint(f, g).log_softmax(-1)
        diff = (ref - out).abs().max().item()
        idx = "2" if dropout else "1"
        ok = diff <= 1e-4 and f"joint_net.{idx}.weight" in ours.state_dict()
        report(f"joint/dropout={dropout},extra={extra}", ok, f"max|diff|={diff:.2e} final=joint_net.{idx}")


# --- greedy decoding -------------------------------------------------------------------------------------------
# Purely random transducers emit tokens forever (the predictor falls into a token attractor). To get realistic
# hypotheses the "counting" construction makes one predictor LSTM unit count emitted tokens, one encoder
# dimension carry the number of tokens due by each frame, and one joint hidden unit favour tokens while
# tokens are due; the blank wins otherwise. Every other weight stays random (token identities, durations, noise).

GAMMA = 0.04  # counter increment per emitted token
DUE_PROBS = torch.tensor([0.45, 0.33, 0.12, 0.06, 0.04])  # tokens due per frame: 0..4


def make_counting(
    dec: NeRNNTDecoder,
    joint: NeRNNTJoint,
    blank_bias: float = 0.0,
    sharp: float = 2000.0,
    token_gain: float = 20.0,
) -> None:
    """Needs a tanh joint: unit 0 = tanh(sharp * (due - emitted)) is +1 while tokens are due, else -1."""
    assert joint.activation == "tanh"
    V, lstm = dec.blank_idx, dec.prediction["dec_rnn"].lstm
    n = lstm.hidden_size
    with torch.no_grad():
        dec.prediction["embed"].weight[:V, 0] = GAMMA
        dec.prediction["embed"].weight[V, 0] = 0.0  # SOS does not count
        for gate in range(4):  # unit 0: input/forget/output gates open, cell input = embedding dim 0
            row = gate * n
            lstm.weight_ih_l0[row].zero_()
            lstm.weight_hh_l0[row].zero_()
            lstm.bias_hh_l0[row] = 0.0
            lstm.bias_ih_l0[row] = 0.0 if gate == 2 else 20.0
        lstm.weight_ih_l0[2 * n, 0] = 1.0
        for lin, sign in ((joint.enc, 1.0), (joint.pred, -1.0)):
            lin.weight[0].zero_()
            lin.weight[0, 0] = sign * sharp
            lin.bias[0] = 0.0
        final = joint.joint_net[-1]
        final.weight[:, 0] = 0.0
        final.weight[:V, 0] = token_gain
        final.bias[V] += blank_bias


def counting_batch(B: int, T: int, D: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder output ``[B, D, T]`` (NeMo layout) and lengths, incl. an empty and a 1-frame utterance."""
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(B, D, T, generator=g)
    due = torch.multinomial(DUE_PROBS, B * T, replacement=True, generator=g).view(B, T).cumsum(1)
    enc[:, 0] = torch.tanh(torch.tanh(torch.tensor(GAMMA)) * (due.float() - 0.5))
    lens = torch.randint(1, T + 1, (B,), generator=g)
    lens[0] = T
    lens[1] = 0 if seed % 2 else 1
    return enc, lens


def compare_hyps(ref_hyps: list[Any], ours: list[Any], durations: bool) -> tuple[bool, str]:
    worst, mismatches, n_tok = 0.0, [], 0
    for b, (r, o) in enumerate(zip(ref_hyps, ours)):
        tok, fr = [int(v) for v in r.y_sequence], [int(v) for v in r.timestamp]
        n_tok += len(tok)
        same = tok == o.tokens and fr == o.frames
        if durations:
            same = same and [int(v) for v in r.token_duration] == o.durations
        if not same:
            mismatches.append(b)
        worst = max(worst, abs(float(r.score) - o.score))
    ok = not mismatches and worst <= 1e-4
    return ok, f"tokens/utt={n_tok / len(ours):.1f} score max|diff|={worst:.1e} mismatched={mismatches}"


def run_cases(name: str, cases: list[tuple[str, Any]]) -> None:
    """``cases``: (label, callable returning (ok, detail)) per setting; prints one line per setting."""
    for label, fn in cases:
        results = [fn(seed) for seed in range(4)]
        ok = all(r[0] for r in results)
        tokens = sum(float(r[1].split("tokens/utt=")[1].split()[0]) for r in results) / len(results)
        first_bad = next((r[1] for r in results if not r[0]), results[0][1])
        report(f"{name}/{label}", ok, f"mean tokens/utt={tokens:.1f}; " + first_bad)


def check_rnnt_greedy() -> None:
    V, D, H, J, B, T = 13, 20, 16, 24, 6, 23
    setups = {"counting": (1, 0.0, counting_batch), "random": (2, -1.0, counting_batch)}
    for setup, (layers, bias, batch_fn) in setups.items():
        activation = "tanh" if setup == "counting" else "relu"
        dec, joint = (
            nemo_rnnt_decoder(V, H, layers, seed=11),
            nemo_joint(V, D, H, J, 0, 12, activation=activation),
        )
        if setup == "counting":
            make_counting(dec, joint, bias)
        else:
            with torch.no_grad():
                joint.joint_net[-1].bias[V] += bias
        ours_dec, ours_joint = our_predictor(dec), our_joint(joint)
        cases = []
        for ms in (1, 2, 3, 10, None) if setup == "counting" else (1, 2, 3):
            infer = nemo_greedy.GreedyBatchedRNNTInfer(
                dec,
                joint,
                blank_index=V,
                max_symbols_per_step=ms,
                loop_labels=True,
                use_cuda_graph_decoder=False,
            )

            def case(
                seed: int,
                infer: Any = infer,
                ms: Any = ms,
                batch_fn: Any = batch_fn,
                ours_dec: Any = ours_dec,
                ours_joint: Any = ours_joint,
            ) -> tuple[bool, str]:
                enc, lens = batch_fn(B, T, D, seed)
                (ref,) = infer(encoder_output=enc, encoded_lengths=lens)
                ours = greedy_rnnt(enc.transpose(1, 2), lens, ours_dec, ours_joint, V, ms, log_softmax=True)
                ok, detail = compare_hyps(ref, ours, durations=False)
                st_ok = all(
                    torch.allclose(r.dec_state.predictor_state[i], o.dec_state[i], atol=1e-5)
                    for r, o in zip(ref, ours)
                    for i in (0, 1)
                )
                return ok and st_ok, detail + ("" if st_ok else " dec_state differs")

            cases.append((f"{setup},max_symbols={ms}", case))
        run_cases("greedy_rnnt", cases)


def check_stateless_greedy() -> None:
    V, D, H, J, B, T = 13, 20, 16, 24, 6, 23
    dec = NeStateless(
        prednet={"pred_hidden": H, "dropout": 0.0}, vocab_size=V, context_size=2, normalization_mode="layer"
    ).eval()
    randomize(dec, 41, scale=1.0)
    joint = nemo_joint(V, D, H, J, 0, seed=42, activation="sigmoid")
    with torch.no_grad():
        joint.joint_net[-1].bias[V] += 2.0
    ours_dec = StatelessPredictor.from_config(
        {
            "_target_": "x.StatelessTransducerDecoder",
            "vocab_size": V,
            "prednet": {"pred_hidden": H},
            "context_size": 2,
            "normalization_mode": "layer",
        }
    ).eval()
    ours_dec.load_state_dict(dec.state_dict(), strict=True)
    ours_joint = our_joint(joint)
    cases = []
    for ms in (1, 3):
        infer = nemo_greedy.GreedyBatchedRNNTInfer(
            dec, joint, blank_index=V, max_symbols_per_step=ms, loop_labels=True, use_cuda_graph_decoder=False
        )

        def case(seed: int, infer: Any = infer, ms: Any = ms) -> tuple[bool, str]:
            enc, lens = counting_batch(B, T, D, seed)  # dim 0 is just one more random-ish feature here
            (ref,) = infer(encoder_output=enc, encoded_lengths=lens)
            ours = greedy_rnnt(enc.transpose(1, 2), lens, ours_dec, ours_joint, V, ms, log_softmax=True)
            return compare_hyps(ref, ours, durations=False)

        cases.append((f"context=2,max_symbols={ms}", case))
    run_cases("greedy_rnnt_stateless", cases)


def check_tdt_greedy() -> None:
    V, D, H, J, B, T = 13, 20, 16, 24, 6, 23
    durations = [0, 1, 2, 3, 4]
    for bias, dur_shift in ((0.0, [1.0, 1.0, 0.0, 0.0, 0.0]), (0.0, [3.0, 0.0, -1.0, -1.0, -1.0])):
        dec, joint = nemo_rnnt_decoder(V, H, 1, seed=21), nemo_joint(V, D, H, J, len(durations), seed=22)
        make_counting(dec, joint, bias)
        with torch.no_grad():
            joint.joint_net[-1].bias[V + 1 :] += torch.tensor(dur_shift)
        ours_dec, ours_joint = our_predictor(dec), our_joint(joint)
        cases = []
        for ms in (1, 2, 10, None):
            infer = nemo_greedy.GreedyBatchedTDTInfer(
                dec,
                joint,
                blank_index=V,
                durations=durations,
                max_symbols_per_step=ms,
                include_duration=True,
                use_cuda_graph_decoder=False,
            )

            def case(
                seed: int,
                infer: Any = infer,
                ms: Any = ms,
                ours_dec: Any = ours_dec,
                ours_joint: Any = ours_joint,
            ) -> tuple[bool, str]:
                enc, lens = counting_batch(B, T, D, seed)
                ours = greedy_tdt(
                    enc.transpose(1, 2),
                    lens,
                    ours_dec,
                    ours_joint,
                    V,
                    durations=durations,
                    max_symbols=ms,
                    log_softmax=True,
                )
                # NeMo one utterance at a time for durations: its batched run records some durations wrongly
                ref = [
                    infer(encoder_output=enc[b : b + 1], encoded_lengths=lens[b : b + 1])[0][0]
                    for b in range(B)
                ]
                ok, detail = compare_hyps(ref, ours, durations=True)
                (batched,) = infer(encoder_output=enc, encoded_lengths=lens)
                ok_b, _ = compare_hyps(batched, ours, durations=False)
                quirk = sum(r.token_duration.tolist() != o.durations for r, o in zip(batched, ours))
                return (
                    ok and ok_b,
                    detail + f"; NeMo batch={B}: tokens/frames/scores equal={ok_b}, "
                    f"durations differ in {quirk} utts",
                )

            cases.append((f"dur_shift={dur_shift},max_symbols={ms}", case))
        run_cases("greedy_tdt", cases)


def check_multiblank_greedy() -> None:
    V, D, H, J, B, T = 13, 20, 16, 24, 5, 23
    big = [2, 4]
    dec, joint = nemo_rnnt_decoder(V, H, 1, seed=31), nemo_joint(V, D, H, J, len(big), seed=32)
    make_counting(dec, joint)
    with torch.no_grad():
        dec.prediction["embed"].weight[V].zero_()  # NeMo's multi-blank decoders feed a zero vector as SOS
        # big blank V (4 frames), big blank V+1 (2 frames), standard blank V+2: the noise decides
        joint.joint_net[-1].bias[V:] += torch.tensor([-1.0, -0.5, 0.0])
    ours_dec, ours_joint = our_predictor(dec), our_joint(joint)
    cases = []
    for ms in (1, 3, None):
        infer = nemo_greedy.GreedyMultiblankRNNTInfer(
            dec, joint, blank_index=V + len(big), big_blank_durations=big, max_symbols_per_step=ms
        )

        def case(seed: int, infer: Any = infer, ms: Any = ms) -> tuple[bool, str]:
            enc, lens = counting_batch(B, T, D, seed)
            ours = greedy_multiblank(
                enc.transpose(1, 2),
                lens,
                ours_dec,
                ours_joint,
                V + len(big),
                big_blank_durations=big,
                max_symbols=ms,
                log_softmax=True,
            )
            ref = [
                infer(encoder_output=enc[b : b + 1], encoded_lengths=lens[b : b + 1])[0][0]
                for b in range(B)
                if lens[b] > 0
            ]  # NeMo's per-utterance decoder fails on empty input
            return compare_hyps(ref, [o for o, n in zip(ours, lens) if n > 0], durations=False)

        cases.append((f"max_symbols={ms}", case))
    run_cases("greedy_multiblank", cases)


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def check_real_configs() -> None:
    """Full-size reference configs: identical state-dict keys and shapes (so real .nemo weights load)."""
    from omegaconf import OmegaConf

    root = "/work/shared/reference/nemo_configs"
    for name in ("quartznet_15x5", "citrinet_384"):
        enc_cfg = OmegaConf.to_container(OmegaConf.load(f"{root}/{name}.yaml").model.encoder, resolve=True)
        nemo_enc = NeConvASREncoder(**{k: v for k, v in enc_cfg.items() if k != "_target_"})
        ours = ConvASREncoder.from_config(enc_cfg)
        ok = _shapes(nemo_enc) == _shapes(ours) and ours.subsampling_factor == nemo_enc.subsampling_factor
        report(
            f"real_config/{name}", ok, f"{len(_shapes(ours))} tensors, subsampling {ours.subsampling_factor}"
        )
    model = OmegaConf.load(f"{root}/fastconformer_hybrid_tdt_ctc_bpe.yaml").model
    model.encoder.d_model, vocab = 256, 128  # normally resolved by the model / tokenizer
    dec_cfg = {**OmegaConf.to_container(model.decoder, resolve=True), "vocab_size": vocab}
    joint_cfg = OmegaConf.to_container(model.joint, resolve=True)
    joint_cfg["jointnet"].update(encoder_hidden=256, pred_hidden=dec_cfg["prednet"]["pred_hidden"])
    joint_cfg["num_classes"] = vocab
    nemo_dec = NeRNNTDecoder(**{k: v for k, v in dec_cfg.items() if k != "_target_"})
    keep = ("jointnet", "num_classes", "num_extra_outputs", "log_softmax")
    nemo_j = NeRNNTJoint(**{k: joint_cfg[k] for k in keep})
    ok = _shapes(nemo_dec) == _shapes(RNNTPredictor.from_config(dec_cfg))
    ok = ok and _shapes(nemo_j) == _shapes(RNNTJoint.from_config(joint_cfg))
    report("real_config/fastconformer_hybrid_tdt (decoder, joint)", ok, f"joint outputs {vocab + 1 + 5}")


def main() -> int:
    check_real_configs()
    check_encoders()
    check_ctc_head()
    check_predictors_and_joint()
    check_rnnt_greedy()
    check_stateless_greedy()
    check_tdt_greedy()
    check_multiblank_greedy()
    print("FAILED: " + ", ".join(FAILURES) if FAILURES else "all checks passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
