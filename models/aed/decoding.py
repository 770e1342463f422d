"""Autoregressive decoding for Canary: greedy and beam search over a batch of prompted utterances.

Both strategies follow NeMo 3.0 step for step (so tokens and scores match it on single utterances) with two
deliberate differences that make results independent of the batch an utterance is decoded in:

* **Per-utterance prompts.** Prompts of different lengths are left-padded; padding is masked out of
  self-attention and positions start at 0 for every utterance. (NeMo right-pads and lets short prompts see
  padding; its batched beam search also tiles the prompt cache so that beams attend to other utterances'
  prompts.)
* **Per-utterance length cap.** ``L_max = min(max_sequence_length, T_b + max_generation_delta)`` uses each
  utterance's own encoder length ``T_b`` (NeMo: the padded batch length); greedy emits at most
  ``L_max - P_b`` tokens and beam search one more, as in NeMo.

NeMo details kept on purpose: greedy takes the argmax of raw logits; beam search ranks with
``lp = ((5 + len) / 6) ** alpha`` where ``len`` counts prompt and non-EOS tokens plus one, multiplies the
kept scores back by the lp of the *row* (not of the parent), lets a beam continue after an EOS chosen at the
first step, and sends finished beams only ``<pad>`` (one copy keeps its score, the others get
``score + 10001 · logp``). Scores are summed log-probabilities (EOS included): the beam's raw score, and
for greedy the same sum along its path, so greedy equals beam search with one beam.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from models.aed.decoder import NEG_INF, DecoderState, TokenClassifier, TransformerDecoderNM
from models.errors import UnsupportedOptionError


@dataclass
class AEDResult:
    tokens: list[int]  # generated ids without prompt and without trailing EOS/pad
    score: float


class PromptedDecoder:
    """The decoder and its head as the search strategies see them."""

    def __init__(self, decoder: TransformerDecoderNM, head: TokenClassifier, eos: int, pad: int) -> None:
        self.decoder, self.head, self.eos, self.pad = decoder, head, eos, pad

    @property
    def max_length(self) -> int:
        return self.decoder.max_sequence_length

    def prefill(self, enc: torch.Tensor, enc_len: torch.Tensor,
                prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """Run the (left-padded) prompts: next-token logits ``[B, V]``, the state, prompt lengths ``[B]``."""
        device = enc.device
        plen = torch.tensor([len(p) for p in prompts], device=device)
        width = int(plen.max())
        ids = torch.full((len(prompts), width), self.pad, dtype=torch.long, device=device)
        for b, prompt in enumerate(prompts):
            ids[b, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long, device=device)
        shift = (width - plen)[:, None]
        index = torch.arange(width, device=device)[None]
        positions = (index - shift).clamp(min=0)  # [B, P]: every prompt starts at position 0
        valid = index >= shift
        enc_valid = torch.arange(enc.shape[1], device=device)[None] < enc_len[:, None]  # [B, T]
        hidden, state = self.decoder.forward_tokens(ids, positions, valid, self.decoder.start(enc, enc_valid))
        return self.head(hidden[:, -1]), state, plen

    def step(self, tokens: torch.Tensor, positions: torch.Tensor,
             state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """Feed one token per row (``[N]``) at ``positions [N]``: logits ``[N, V]`` and the new state."""
        valid = torch.ones_like(tokens, dtype=torch.bool)[:, None]
        hidden, state = self.decoder.forward_tokens(tokens[:, None], positions[:, None], valid, state)
        return self.head(hidden[:, 0]), state

    def limits(self, enc_len: torch.Tensor, plen: torch.Tensor, delta: int) -> torch.Tensor:
        """Tokens each utterance may generate: ``min(max_len, T_b + delta) - P_b`` (``delta < 0``: no T_b)."""
        cap = torch.full_like(enc_len, self.max_length)
        if delta >= 0:
            cap = torch.minimum(cap, enc_len + delta)
        return cap - plen

    def strip(self, ids: Sequence[int]) -> list[int]:
        ids = list(ids)
        while ids and ids[-1] in (self.eos, self.pad):
            ids.pop()
        return ids


class GreedySearch:
    """Argmax decoding; an utterance stops at EOS or at its length cap."""

    def __init__(self, model: PromptedDecoder, max_generation_delta: int = -1) -> None:
        self.model, self.delta = model, int(max_generation_delta)

    @torch.inference_mode()
    def __call__(self, enc: torch.Tensor, enc_len: torch.Tensor,
                 prompts: Sequence[Sequence[int]]) -> list[AEDResult]:
        logits, state, plen = self.model.prefill(enc, enc_len, prompts)
        limit = self.model.limits(enc_len, plen, self.delta).tolist()
        out: list[list[int]] = [[] for _ in prompts]
        scores = [0.0] * len(prompts)
        rows = [b for b in range(len(prompts)) if limit[b] > 0]  # utterances still decoding
        logits, state = logits[rows], state.select(torch.tensor(rows, dtype=torch.long, device=enc.device))
        while rows:
            tokens = logits.argmax(-1)  # [N]
            logp = torch.log_softmax(logits, -1).gather(1, tokens[:, None])[:, 0]
            keep = []
            for i, b in enumerate(rows):
                out[b].append(int(tokens[i]))
                scores[b] += float(logp[i])
                if out[b][-1] != self.model.eos and len(out[b]) < limit[b]:
                    keep.append(i)
            if not keep:
                break
            index = torch.tensor(keep, dtype=torch.long, device=enc.device)
            rows = [rows[i] for i in keep]
            positions = plen[rows] + torch.tensor([len(out[b]) for b in rows], device=enc.device) - 1
            logits, state = self.model.step(tokens[index], positions, state.select(index))
        return [AEDResult(self.model.strip(t), s) for t, s in zip(out, scores)]


class BeamSearch:
    """NeMo's ``BeamSearchSequenceGenerator``, run independently per utterance within a batch."""

    def __init__(self, model: PromptedDecoder, beam_size: int = 1, length_penalty: float = 0.0,
                 max_generation_delta: int = -1) -> None:
        if beam_size < 1:
            raise UnsupportedOptionError(f"beam_size must be at least 1 (got {beam_size})")
        self.model, self.k = model, int(beam_size)
        self.alpha, self.delta = float(length_penalty), int(max_generation_delta)

    def penalty(self, lengths: torch.Tensor) -> torch.Tensor:
        return ((5 + lengths) / 6).pow(self.alpha)

    @torch.inference_mode()
    def __call__(self, enc: torch.Tensor, enc_len: torch.Tensor,
                 prompts: Sequence[Sequence[int]]) -> list[AEDResult]:
        m, k = self.model, self.k
        logits, state, plen = m.prefill(enc, enc_len, prompts)
        n = len(prompts)
        scores, first = torch.log_softmax(logits, -1).topk(k, dim=-1)  # [B, K]
        gen = first[:, :, None]  # [B, K, S] generated tokens
        state = state.expand(k)  # row = b * K + beam
        lengths = (plen[:, None] + 2).to(scores.dtype).expand(n, k)  # NeMo counts the first token blindly
        finished = torch.zeros(n, k, dtype=torch.bool, device=enc.device)
        limit = m.limits(enc_len, plen, self.delta)
        for step in range(int(limit.max()) if n else 0):
            active = (step < limit) & ~finished.all(dim=1)  # [B]; frozen utterances keep their beams
            if not active.any():
                break
            positions = (plen + step).repeat_interleave(k)
            logits, state = m.step(gen[:, :, -1].reshape(-1), positions, state)
            logp = torch.log_softmax(logits, -1).view(n, k, -1)
            scores, gen, parent = self._advance(scores, gen, lengths, finished, logp, active)
            state = state.reorder((torch.arange(n, device=enc.device)[:, None] * k + parent).reshape(-1))
            alive = gen.ne(m.eos) & gen.ne(m.pad)
            lengths = plen[:, None].to(scores.dtype) + 1 + alive.sum(-1).to(scores.dtype)
            finished = ~alive[:, :, -1]
        best = (scores / self.penalty(lengths)).argmax(dim=1)  # [B]
        return [AEDResult(m.strip(gen[b, best[b]].tolist()), float(scores[b, best[b]])) for b in range(n)]

    def _advance(self, scores: torch.Tensor, gen: torch.Tensor, lengths: torch.Tensor, finished: torch.Tensor,
                 logp: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One beam step for every utterance: (scores [B,K], tokens [B,K,S+1], parent beams [B,K])."""
        n, k, _ = logp.shape
        cand_logp, cand_tok = logp.topk(k, dim=-1)  # [B, K(parent), K(child)]
        done = finished[:, :, None].expand(n, k, k)
        cand_tok = torch.where(done, torch.full_like(cand_tok, self.model.pad), cand_tok)
        # a finished beam is continued by <pad> only: its first copy keeps the score, the others sink
        first_copy = torch.arange(k, device=logp.device) == 0
        sink = torch.where(first_copy, 0.0, 1.0 - NEG_INF).to(logp.dtype)  # [K]: 0, 10001, 10001, ...
        weight = torch.where(done, sink, torch.ones_like(cand_logp))
        lp = self.penalty(lengths)[:, :, None]  # per parent
        cand = (scores[:, :, None] + cand_logp * weight) / lp
        top, index = cand.view(n, k * k).topk(k, dim=1)  # [B, K]
        new_scores = top * lp[:, :, 0]  # NeMo multiplies back by the lp of the row, not of the parent
        parent = torch.div(index, k, rounding_mode="floor")
        new_tok = cand_tok.view(n, k * k).gather(1, index)
        new_gen = torch.cat([gen.gather(1, parent[:, :, None].expand_as(gen)), new_tok[:, :, None]], dim=2)
        # frozen utterances: same beams, same scores, a <pad> appended
        keep = active[:, None]
        still = torch.arange(k, device=gen.device)[None].expand(n, k)
        frozen_gen = torch.cat([gen, torch.full_like(gen[:, :, :1], self.model.pad)], dim=2)
        return (torch.where(keep, new_scores, scores), torch.where(keep[:, :, None], new_gen, frozen_gen),
                torch.where(keep, parent, still))


GREEDY = ("greedy", "greedy_batch")
STRATEGIES = (*GREEDY, "beam")


def _unsupported(section: Mapping[str, Any], keys: Sequence[str]) -> None:
    for key in keys:
        if section.get(key) not in (None, False, 0, 0.0, "", {}):
            raise UnsupportedOptionError(f"AED decoding option {key!r} is not supported by aviary")
    # NeMo writes an empty boosting-tree config into every decoding config it saves
    tree = section.get("boosting_tree") or {}
    if any(tree.get(k) for k in ("model_path", "key_phrases_file", "key_phrases_list",
                                 "key_phrase_items_list")):
        raise UnsupportedOptionError("context biasing (beam.boosting_tree) is not supported by aviary")


def build_strategy(decoding: Mapping[str, Any], model: PromptedDecoder) -> GreedySearch | BeamSearch:
    """A search strategy from a NeMo ``decoding`` config (``strategy``, ``greedy.*``, ``beam.*``).

    ``beam.length_penalty`` is NeMo's live key; NeMo never reads ``beam.len_pen`` (the model maps a caller's
    ``len_pen`` onto ``length_penalty`` before it gets here).
    """
    strategy = str(decoding.get("strategy", "beam"))
    if strategy not in STRATEGIES:
        raise UnsupportedOptionError(f"AED decoding strategy {strategy!r} is unknown; use one of "
                                     f"{', '.join(STRATEGIES)}")
    greedy, beam = dict(decoding.get("greedy") or {}), dict(decoding.get("beam") or {})
    if strategy in GREEDY:
        _unsupported(greedy, ("temperature", "ngram_lm_model", "preserve_alignments"))
        if int(greedy.get("n_samples", 1) or 1) > 1:
            raise UnsupportedOptionError("sampling AED hypotheses (greedy.n_samples) is not supported")
        return GreedySearch(model, int(greedy.get("max_generation_delta", -1)))
    _unsupported(beam, ("ngram_lm_model", "preserve_alignments"))
    if beam.get("return_best_hypothesis", True) is False:
        raise UnsupportedOptionError("N-best AED output (return_best_hypothesis: false) is not supported")
    return BeamSearch(model, int(beam.get("beam_size", 1)), float(beam.get("length_penalty") or 0.0),
                      int(beam.get("max_generation_delta", -1)))
