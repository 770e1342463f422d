"""Batched label-looping greedy decoding for RNNT, TDT and multi-blank RNNT (NeMo ``greedy_batch``).

Every loop iteration runs one joint call for the whole batch (masked); every outer iteration additionally runs
one prediction-network step for the whole batch. Per utterance the result equals this simple loop:

    t = 0; g = pred(SOS = blank row)
    while t < T_b:
        z = joint(f[t], g); k = argmax z[label logits]
        if k is a blank: t += jump(k, z); continue          # RNNT: 1; TDT: max(d, 1); big blank: its duration
        emit k at frame t; g = pred(k); t += jump(k, z)      # RNNT/multi-blank: 0; TDT: d (may be 0)
        if k was the max_symbols-th consecutive token emitted at frame t and t did not move: t += 1

(NeMo's frame-looping / per-utterance variants agree on tokens; see the spec §6.2-6.3.) The variants differ only
in ``_Rule.choose``. Scores are sums of the chosen label values: log-probs when ``log_softmax`` (NeMo: not on
CUDA), raw logits otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from models.batching import length_batches
from models.errors import CheckpointError, UnsupportedOptionError


@dataclass
class TransducerResult:
    tokens: list[int]
    frames: list[int]  # encoder frame index of each token
    durations: list[int] | None  # TDT predicted duration of each token, else None
    score: float
    dec_state: Any = (
        None  # predictor state after the last token (NeMo ``Hypothesis.dec_state`` predictor part)
    )


class Predictor(Protocol):
    blank_idx: int

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> Any: ...
    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]: ...
    def select_state(self, mask: Tensor, new: Any, old: Any) -> Any: ...
    def split_state(self, state: Any) -> list[Any]: ...


class Joint(Protocol):
    def project_encoder(self, enc: Tensor) -> Tensor: ...
    def project_prediction(self, g: Tensor) -> Tensor: ...
    def joint_after_projection(self, f: Tensor, g: Tensor) -> Tensor: ...


class _Rule:
    """Standard RNNT: label = argmax over all logits, a blank advances one frame, a token stays."""

    def __init__(self, blank: int) -> None:
        self.blank = blank  # labels >= blank are blanks (multi-blank puts big blanks below the standard one)
        self.first_blank = blank
        self.sos = blank

    def choose(self, logits: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``logits [B, C]`` -> (score, label, frames to advance, token duration), each ``[B]``."""
        scores, labels = logits.max(dim=-1)
        jump = (labels >= self.first_blank).long()
        return scores, labels, jump, torch.zeros_like(labels)

    def choose_one(self, logits: Tensor) -> tuple[Tensor, int, int, int]:
        """:meth:`choose` for one utterance, ``logits [C]``: (score 0-d tensor, label, jump, duration)."""
        score, label = logits.max(dim=-1)
        k = int(label)
        return score, k, int(k >= self.first_blank), 0


class _TDTRule(_Rule):
    """TDT: labels from ``[:V+1]``, durations from ``[V+1:]``; a blank never stays on its frame."""

    def __init__(self, blank: int, durations: list[int], device: torch.device) -> None:
        super().__init__(blank)
        self.durations = torch.tensor(durations, dtype=torch.long, device=device)
        self.duration_list = list(durations)

    def choose(self, logits: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        scores, labels = logits[:, : self.blank + 1].max(dim=-1)
        duration = self.durations[logits[:, self.blank + 1 :].argmax(dim=-1)]
        jump = torch.where((labels == self.blank) & (duration == 0), torch.ones_like(duration), duration)
        return scores, labels, jump, duration

    def choose_one(self, logits: Tensor) -> tuple[Tensor, int, int, int]:
        score, label = logits[: self.blank + 1].max(dim=-1)
        k, d = int(label), self.duration_list[int(logits[self.blank + 1 :].argmax())]
        return score, k, 1 if (k == self.blank and d == 0) else d, d


class _MultiBlankRule(_Rule):
    """Multi-blank: ``[tokens | big blanks | blank]``; big blank ``V + j`` skips ``big[E - 1 - j]`` frames."""

    def __init__(self, blank: int, big_blank_durations: list[int], device: torch.device) -> None:
        super().__init__(blank)
        n_big = len(big_blank_durations)
        self.first_blank = blank - n_big
        self.sos = blank - n_big  # the predictor's own blank id (V)
        jumps = [0] * self.first_blank + [
            big_blank_durations[blank - k - 1] for k in range(self.first_blank, blank)
        ]
        self.jumps = torch.tensor(jumps + [1], dtype=torch.long, device=device)  # [V + E + 1]
        self.jump_list = jumps + [1]

    def choose(self, logits: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        scores, labels = logits.max(dim=-1)
        return scores, labels, self.jumps[labels], torch.zeros_like(labels)

    def choose_one(self, logits: Tensor) -> tuple[Tensor, int, int, int]:
        score, label = logits.max(dim=-1)
        k = int(label)
        return score, k, self.jump_list[k], 0


@dataclass
class _Step:
    """Outcome of one search for the next label, per utterance (all ``[B]``)."""

    labels: Tensor
    scores: Tensor
    frames: Tensor
    durations: Tensor
    found: Tensor  # a token was found (utterance was active and did not run out of frames)


class _LabelLooper:
    """Batched state of one greedy decoding run."""

    def __init__(
        self,
        enc: Tensor,
        lengths: Tensor,
        predictor: Predictor,
        joint: Joint,
        rule: _Rule,
        log_softmax: bool,
        temperature: float,
    ) -> None:
        batch, device = enc.shape[0], enc.device
        self.predictor, self.joint, self.rule = predictor, joint, rule
        self.temperature = temperature  # resolved by _greedy (the joint's own unless given)
        self.log_softmax = log_softmax
        self.lengths = lengths.to(device=device, dtype=torch.long)  # [B]
        self.f = joint.project_encoder(enc)  # [B, T, J], projected once per batch
        self.rows = torch.arange(batch, device=device)
        self.last_frame = (self.lengths - 1).clamp(min=0)  # keeps gathers in range for finished utterances
        self.t = torch.zeros(batch, dtype=torch.long, device=device)  # [B] current frame
        sos = torch.full((batch,), rule.sos, dtype=torch.long, device=device)
        g, self.state = predictor.step(sos, predictor.initial_state(batch, device))
        self.g = joint.project_prediction(g)  # [B, J]

    def logits(self) -> Tensor:
        f = self.f[self.rows, torch.minimum(self.t, self.last_frame)]  # [B, J]
        z = self.joint.joint_after_projection(f, self.g)  # [B, C]
        if self.log_softmax:  # NeMo: temperature only takes effect together with the log-softmax
            z = (z / self.temperature if self.temperature != 1.0 else z).log_softmax(dim=-1)
        return z

    def find_next_label(self, active: Tensor) -> _Step:
        """Call the joint, advancing over blanks, until each active utterance has a token or runs out."""
        blank = torch.full_like(self.t, self.rule.first_blank)
        step = _Step(blank, self.f.new_zeros(self.t.shape), self.t.clone(), torch.zeros_like(self.t), active)
        search = active.clone()
        while bool(search.any()):
            scores, labels, jump, duration = self.rule.choose(self.logits())
            step.labels = torch.where(search, labels, step.labels)
            step.scores = torch.where(search, scores, step.scores)
            step.frames = torch.where(search, self.t, step.frames)
            step.durations = torch.where(search, duration, step.durations)
            self.t = torch.where(search, self.t + jump, self.t)
            search = search & (step.labels >= self.rule.first_blank) & (self.t < self.lengths)
        step.found = active & (step.labels < self.rule.first_blank)
        return step

    def update_predictor(self, step: _Step) -> None:
        """One batched predictor step; only utterances with a new token take the new state/output."""
        tokens = torch.where(step.found, step.labels, torch.full_like(step.labels, self.rule.sos))
        g, state = self.predictor.step(tokens, self.state)
        self.state = self.predictor.select_state(step.found, state, self.state)
        self.g = torch.where(step.found.unsqueeze(1), self.joint.project_prediction(g), self.g)


def _decode(looper: _LabelLooper, max_symbols: int | None, with_durations: bool) -> list[TransducerResult]:
    batch = looper.t.shape[0]
    last_frame = torch.full_like(looper.t, -1)  # frame of the last emitted token
    run = torch.zeros_like(looper.t)  # tokens emitted in a row on that frame
    score = looper.f.new_zeros(batch)  # [B]
    history: list[_Step] = []
    active = looper.t < looper.lengths
    while bool(active.any()):
        step = looper.find_next_label(active)
        history.append(step)
        score = torch.where(step.found, score + step.scores, score)
        looper.update_predictor(step)
        same = step.found & (last_frame == step.frames)
        run = torch.where(same, run + 1, torch.where(step.found, torch.ones_like(run), run))
        last_frame = torch.where(step.found, step.frames, last_frame)
        if max_symbols is not None:
            # the max_symbols-th token on a frame that did not move time on (RNNT token, TDT duration 0)
            force = step.found & (run >= max_symbols) & (last_frame == looper.t)
            looper.t = looper.t + force.long()
        active = looper.t < looper.lengths
    return _collect(history, score, looper.predictor.split_state(looper.state), batch, with_durations)


def _decode_one(
    f: Tensor,
    length: int,
    predictor: Predictor,
    joint: Joint,
    rule: _Rule,
    log_softmax: bool,
    temperature: float,
    max_symbols: int | None,
    with_durations: bool,
) -> TransducerResult:
    """The same decoding for one utterance (``f [T, J]``: its projected encoder frames) with Python control
    flow: no masks, no batch bookkeeping — about half the tensor operations per joint call of the batched
    loop, whose cost per step hardly depends on the batch size on CPU."""
    g, state = predictor.step(torch.full((1,), rule.sos, dtype=torch.long, device=f.device),
                              predictor.initial_state(1, f.device))
    g = joint.project_prediction(g)  # [1, J]
    score = f.new_zeros(())
    tokens: list[int] = []
    frames: list[int] = []
    durations: list[int] = []
    t, last_frame, run = 0, -1, 0
    while t < length:
        z = joint.joint_after_projection(f[t : t + 1], g)  # [1, C]
        if log_softmax:
            z = (z / temperature if temperature != 1.0 else z).log_softmax(dim=-1)
        s, k, jump, duration = rule.choose_one(z[0])
        frame, t = t, t + jump
        if k >= rule.first_blank:
            continue
        tokens.append(k)
        frames.append(frame)
        durations.append(duration)
        score += s
        g, state = predictor.step(torch.full((1,), k, dtype=torch.long, device=f.device), state)
        g = joint.project_prediction(g)
        run = run + 1 if last_frame == frame else 1
        last_frame = frame
        if max_symbols is not None and run >= max_symbols and last_frame == t:
            t += 1
    return TransducerResult(tokens, frames, durations if with_durations else None, float(score),
                            predictor.split_state(state)[0])


def _collect(
    history: list[_Step], score: Tensor, states: list[Any], batch: int, with_durations: bool
) -> list[TransducerResult]:
    if not history:
        return [
            TransducerResult([], [], [] if with_durations else None, float(s), st)
            for s, st in zip(score.tolist(), states)
        ]
    found = torch.stack([s.found for s in history], dim=1).tolist()  # [B, N]
    labels = torch.stack([s.labels for s in history], dim=1).tolist()
    frames = torch.stack([s.frames for s in history], dim=1).tolist()
    durs = torch.stack([s.durations for s in history], dim=1).tolist()
    out = []
    for b in range(batch):
        idx = [i for i, f in enumerate(found[b]) if f]
        out.append(
            TransducerResult(
                tokens=[labels[b][i] for i in idx],
                frames=[frames[b][i] for i in idx],
                durations=[durs[b][i] for i in idx] if with_durations else None,
                score=float(score[b]),
                dec_state=states[b],
            )
        )
    return out


def _check_max_symbols(max_symbols: int | None) -> None:
    if max_symbols is not None and max_symbols <= 0:
        raise UnsupportedOptionError(f"max_symbols must be > 0 or None, got {max_symbols}")


@torch.inference_mode()
def greedy_rnnt(
    enc: Tensor,
    lengths: Tensor,
    predictor: Predictor,
    joint: Joint,
    blank: int,
    max_symbols: int | None = 10,
    *,
    log_softmax: bool,
    temperature: float | None = None,
) -> list[TransducerResult]:
    """``enc [B, T, D]`` (encoder output, time-major per utterance), ``lengths [B]``; blank = V."""
    _check_max_symbols(max_symbols)
    return _greedy(enc, lengths, predictor, joint, _Rule(blank), log_softmax, temperature, max_symbols, False)


@torch.inference_mode()
def greedy_tdt(
    enc: Tensor,
    lengths: Tensor,
    predictor: Predictor,
    joint: Joint,
    blank: int,
    *,
    durations: list[int],
    max_symbols: int | None = 10,
    log_softmax: bool,
    temperature: float | None = None,
) -> list[TransducerResult]:
    """TDT: the joint emits ``V + 1`` label logits then ``len(durations)`` duration logits."""
    _check_max_symbols(max_symbols)
    n_out = getattr(joint, "num_classes_with_blank", blank + 1 + len(durations))
    if n_out != blank + 1 + len(durations):
        raise CheckpointError(f"joint has {n_out} outputs, expected blank + 1 + {len(durations)} durations")
    rule = _TDTRule(blank, list(durations), enc.device)
    return _greedy(enc, lengths, predictor, joint, rule, log_softmax, temperature, max_symbols, True)


@torch.inference_mode()
def greedy_multiblank(
    enc: Tensor,
    lengths: Tensor,
    predictor: Predictor,
    joint: Joint,
    blank: int,
    *,
    big_blank_durations: list[int],
    max_symbols: int | None = 10,
    log_softmax: bool,
    temperature: float | None = None,
) -> list[TransducerResult]:
    """Multi-blank RNNT; ``blank`` is the standard blank ``V + E`` (NeMo's decoding blank id).

    Per-utterance semantics of NeMo's ``GreedyMultiblankRNNTInfer``; NeMo's batched variant skips only the
    frames that *all* utterances of the batch agree to skip, so its output depends on the batch.
    """
    _check_max_symbols(max_symbols)
    rule = _MultiBlankRule(blank, list(big_blank_durations), enc.device)
    return _greedy(enc, lengths, predictor, joint, rule, log_softmax, temperature, max_symbols, False)


# how _greedy splits a batch: "auto" (CPU: "grouped", else "batched"), "grouped", "batched" or "single"
STRATEGY = "auto"


def _greedy(
    enc: Tensor,
    lengths: Tensor,
    predictor: Predictor,
    joint: Joint,
    rule: _Rule,
    log_softmax: bool,
    temperature: float | None,
    max_symbols: int | None,
    with_durations: bool,
) -> list[TransducerResult]:
    """Decode a batch: on CUDA/MPS as one batched loop; on CPU per group of similar lengths.

    The batched loop runs until its longest utterance is done and each of its steps waits for the slowest
    row, while on CPU a step costs about the same for 1 or 16 rows (reading the weights dominates). So a CPU
    batch is split into length groups (``models.batching``): groups of several utterances run the batched
    loop, an utterance on its own the leaner :func:`_decode_one`. Same results either way.
    """
    strategy = STRATEGY if STRATEGY != "auto" else ("grouped" if enc.device.type == "cpu" else "batched")
    if strategy == "batched":
        groups = [list(range(enc.shape[0]))]
    elif strategy == "single":
        groups = [[b] for b in range(enc.shape[0])]
    else:
        groups = length_batches(lengths.tolist(), batch_size=enc.shape[0])
    # NeMo's joint.temperature (set from the decoding config) unless given explicitly
    temperature = float(getattr(joint, "temperature", 1.0) if temperature is None else temperature)
    results: list[TransducerResult] = [None] * enc.shape[0]  # type: ignore[list-item]
    for group in groups:
        if len(group) == 1:
            b = group[0]
            n = int(lengths[b])
            f = joint.project_encoder(enc[b, :n])  # [T, J]
            results[b] = _decode_one(f, n, predictor, joint, rule, log_softmax, temperature, max_symbols,
                                     with_durations)
            continue
        if len(group) == enc.shape[0]:  # the whole batch, in its own order
            group, sub_enc, sub_len = list(range(enc.shape[0])), enc, lengths
        else:
            rows = torch.tensor(group, device=enc.device)
            sub_enc, sub_len = enc[rows, : int(lengths[rows].max())], lengths[rows]
        looper = _LabelLooper(sub_enc, sub_len, predictor, joint, rule, log_softmax, temperature)
        for b, res in zip(group, _decode(looper, max_symbols, with_durations)):
            results[b] = res
    return results
