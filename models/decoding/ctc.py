"""Batched greedy CTC decoding (NeMo ``greedy_batch``; ``greedy`` gives identical results)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class CTCResult:
    frame_labels: list[int]  # per-frame argmax over the utterance's valid frames, blanks and repeats included
    tokens: list[int]  # collapsed: repeats merged, blanks removed
    token_frames: list[int]  # first frame of each collapsed token
    score: float  # sum of the max log-prob over valid non-blank frames


def ctc_greedy(log_probs: Tensor, lengths: Tensor, blank: int) -> list[CTCResult]:
    """``log_probs [B, T, C]``, ``lengths [B]`` -> one ``CTCResult`` per utterance."""
    batch, max_t, _ = log_probs.shape
    lengths = lengths.to(log_probs.device, torch.long)
    best, labels = log_probs.max(dim=-1)  # [B, T], [B, T]
    valid = torch.arange(max_t, device=log_probs.device)[None, :] < lengths[:, None]  # [B, T]
    non_blank = (labels != blank) & valid
    # padded sum like NeMo; padding contributes exact zeros
    scores = torch.where(non_blank, best, torch.zeros_like(best)).sum(dim=1)  # [B]
    prev = torch.cat([torch.full_like(labels[:, :1], blank), labels[:, :-1]], dim=1)  # [B, T]
    # emit p when p != blank and (p != previous or previous == blank); previous starts as blank
    emit = non_blank & ((labels != prev) | (prev == blank))  # [B, T]

    labels_l, emit_l, scores_l, lens_l = (
        labels.cpu().tolist(),
        emit.cpu().tolist(),
        scores.cpu().tolist(),
        lengths.cpu().tolist(),
    )
    results = []
    for b in range(batch):
        frames = [t for t, e in enumerate(emit_l[b]) if e]
        results.append(
            CTCResult(
                frame_labels=labels_l[b][: lens_l[b]],
                tokens=[labels_l[b][t] for t in frames],
                token_frames=frames,
                score=float(scores_l[b]),
            )
        )
    return results
