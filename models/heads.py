"""From encoder output to hypotheses: the CTC and transducer (RNNT/TDT) decoding paths.

Each path is a small object built from the model's modules and its decoding config; it takes a padded
encoder batch and returns one :class:`Hypothesis` per utterance, shaped as NeMo shapes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from models import timestamps as ts
from models.decoding.ctc import ctc_greedy
from models.decoding.rnnt import greedy_multiblank, greedy_rnnt, greedy_tdt
from models.errors import UnsupportedOptionError
from models.hypothesis import Hypothesis
from models.tokenizers import Tokenizer

GREEDY_STRATEGIES = ("greedy", "greedy_batch")


@dataclass(frozen=True)
class TimestampOptions:
    frame_stride: float  # preprocessor window_stride, seconds
    subsampling: int  # encoder subsampling factor
    separators: tuple[str, ...] = ts.SEGMENT_SEPARATORS
    gap_threshold: int | None = None

    @classmethod
    def from_decoding(cls, decoding: dict[str, Any], frame_stride: float, subsampling: int) -> TimestampOptions:
        seps = decoding.get("segment_seperators") or ts.SEGMENT_SEPARATORS
        return cls(frame_stride, subsampling, tuple(seps), decoding.get("segment_gap_threshold"))


def _check_strategy(decoding: dict[str, Any], family: str) -> None:
    strategy = decoding.get("strategy", "greedy_batch")
    if strategy not in GREEDY_STRATEGIES:
        raise UnsupportedOptionError(
            f"{family} decoding strategy {strategy!r} is not supported; aviary decodes with "
            f"{' / '.join(GREEDY_STRATEGIES)}"
        )


class CTCPath:
    """Greedy CTC over a ``CTCHead``'s log-probs."""

    name = "ctc"

    def __init__(self, head: torch.nn.Module, tokenizer: Tokenizer, decoding: dict[str, Any], times: TimestampOptions):
        _check_strategy(decoding, "CTC")
        self.head, self.tokenizer, self.times = head, tokenizer, times
        self.head.temperature = float(decoding.get("temperature", 1.0) or 1.0)
        self.blank = tokenizer.vocab_size

    def __call__(self, enc: torch.Tensor, enc_len: torch.Tensor, return_hypotheses: bool,
                 timestamps: bool) -> list[Hypothesis]:
        log_probs = self.head(enc)  # [B, T, V+1]
        results = ctc_greedy(log_probs, enc_len, self.blank)
        hyps = []
        for b, res in enumerate(results):
            length = int(enc_len[b])
            hyp = Hypothesis(score=float(res.score), y_sequence=torch.tensor(res.frame_labels, dtype=torch.long),
                             text=self.tokenizer.decode(res.tokens), tokens=list(res.tokens), length=length)
            if return_hypotheses or timestamps:
                # NeMo's quirk, kept for compatibility: y_sequence becomes the [T, V+1] log-prob matrix.
                hyp.y_sequence = hyp.alignments = log_probs[b, :length].float().cpu()
            if timestamps:
                items = ts.token_times(self.tokenizer, res.tokens, ts.ctc_spans(res.token_frames))
                ts.refine_ctc(items, self.tokenizer.punctuation)
                nonblank = [t for t, lab in enumerate(res.frame_labels) if lab != self.blank]
                hyp.timestamp = ts.build(self.tokenizer, items, self.times.frame_stride, self.times.subsampling,
                                         char_as_list=False, separators=self.times.separators,
                                         gap_threshold=self.times.gap_threshold, timestep=nonblank)
            hyps.append(hyp)
        return hyps


class TransducerPath:
    """Greedy label-looping RNNT, or TDT when ``durations`` is set."""

    def __init__(self, predictor: torch.nn.Module, joint: torch.nn.Module, tokenizer: Tokenizer,
                 decoding: dict[str, Any], times: TimestampOptions, durations: list[int] | None,
                 joint_log_softmax: bool | None, big_blank_durations: list[int] | None = None):
        _check_strategy(decoding, "RNNT")
        self.predictor, self.joint, self.tokenizer, self.times = predictor, joint, tokenizer, times
        self.durations = list(durations) if durations else None
        self.big_blanks = list(big_blank_durations) if big_blank_durations else None
        self.name = "tdt" if self.durations else "rnnt"
        greedy = decoding.get("greedy") or {}
        self.max_symbols = greedy.get("max_symbols", greedy.get("max_symbols_per_step", 10))
        self.joint_log_softmax = joint_log_softmax
        # Multi-blank joints put the big blanks before the standard blank: [tokens | big blanks | blank].
        self.blank = tokenizer.vocab_size + len(self.big_blanks or ())

    def _decode(self, enc: torch.Tensor, enc_len: torch.Tensor) -> list[Any]:
        # NeMo normalises the joint only off-CUDA unless the config says otherwise: scores follow that.
        log_softmax = self.joint_log_softmax
        if log_softmax is None:
            log_softmax = enc.device.type != "cuda"
        frames = enc.transpose(1, 2)  # [B, T, D]
        kwargs = {"blank": self.blank, "max_symbols": self.max_symbols, "log_softmax": log_softmax}
        if self.durations:
            return greedy_tdt(frames, enc_len, self.predictor, self.joint, durations=self.durations, **kwargs)
        if self.big_blanks:
            return greedy_multiblank(frames, enc_len, self.predictor, self.joint,
                                     big_blank_durations=self.big_blanks, **kwargs)
        return greedy_rnnt(frames, enc_len, self.predictor, self.joint, **kwargs)

    def __call__(self, enc: torch.Tensor, enc_len: torch.Tensor, return_hypotheses: bool,
                 timestamps: bool) -> list[Hypothesis]:
        hyps = []
        for b, res in enumerate(self._decode(enc, enc_len)):
            hyp = Hypothesis(score=float(res.score), y_sequence=torch.tensor(res.tokens, dtype=torch.long),
                             text=self.tokenizer.decode(res.tokens), tokens=list(res.tokens),
                             timestamp=torch.tensor(res.frames, dtype=torch.long), length=int(enc_len[b]))
            if self.durations:
                hyp.token_duration = torch.tensor(res.durations or [], dtype=torch.long)
            if timestamps:
                hyp.timestamp = self._timestamps(res)
            hyps.append(hyp)
        return hyps

    def _timestamps(self, res: Any) -> dict[str, Any]:
        if self.durations:
            spans = ts.tdt_spans(res.frames, res.durations)
        else:
            spans = ts.rnnt_spans(res.frames)
        items = ts.token_times(self.tokenizer, res.tokens, spans)
        if self.durations:
            ts.refine_tdt(items, self.tokenizer.punctuation)
        return ts.build(self.tokenizer, items, self.times.frame_stride, self.times.subsampling, char_as_list=True,
                        separators=self.times.separators, gap_threshold=self.times.gap_threshold,
                        timestep=list(res.frames))
