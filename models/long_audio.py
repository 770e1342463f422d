"""Long audio without running out of memory: local attention or buffered (chunked) encoding.

Full-context encoding keeps, per Conformer layer, attention scores of ``O(T²)`` memory, and the front-end's
STFT and the conv subsampling hold intermediates several times larger than the features. For long files
``ASRModel.transcribe_items`` asks :func:`plan` how to encode each utterance and :func:`encode` to do it:

* ``full`` — the model's ordinary ``encode()`` (short audio, or when asked).
* ``local_attention`` — Conformer/FastConformer ``rel_pos`` encoders: every layer temporarily attends through
  a ``rel_pos_local_attn`` view that *shares* the layer's weights (nothing is copied per call), as NeMo's
  ``change_attention_model("rel_pos_local_attn", [128, 128])`` would. The subsampling convs run over
  overlapping stretches of time so their ``[C, T/2, F/2]`` activations stay bounded too.
* ``chunked`` — any encoder (ConvASR: QuartzNet/Citrinet, ``abs_pos``, streaming contexts, ...). The
  features of the whole file are computed once (per-utterance normalisation stays global), windows
  ``[left | chunk | right]`` of feature frames (multiples of the subsampling factor) are encoded a few at a
  time, and only the encoder frames of each chunk are kept. The kept frames tile the utterance exactly, so
  the concatenation *is* an encoder sequence: the model's normal CTC / label-looping transducer decoding runs
  on it, the transducer state carries across chunks, nothing is duplicated or dropped at boundaries, and
  timestamps are in absolute time.

Both long strategies compute the STFT stretch by stretch too, so peak memory grows with the file only by
the audio, the features and the encoder outputs themselves. ``auto`` picks ``full`` up to ``threshold_s`` and,
above it, ``local_attention`` where it applies and ``chunked`` otherwise. An explicit strategy applies to
every utterance whatever its length. AED (Canary) models do not use this module.

Not re-entrant: ``local_attention`` swaps modules of the encoder for the duration of one call, so one model
must not encode from two threads at once (the service runs one batch at a time per model).
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from models.encoders.attention import LocalRelPositionMultiHeadAttention, PositionalEncoding
from models.encoders.subsampling import ConvSubsampling
from models.errors import UnsupportedOptionError
from models.features import MelFrontend, normalize

if TYPE_CHECKING:
    from models.asr_model import ASRModel

log = logging.getLogger("aviary.models")

STRATEGIES = ("auto", "full", "local_attention", "chunked")
Progress = Callable[[str, float], None]  # (strategy, fraction of the encoder's work done), from the model's thread
FEATURE_STEP = 30_000  # STFT frames per stretch (5 min at 10 ms): bounds the [B, n_fft/2+1, T] spectrum
SUBSAMPLING_STEP = 1024  # encoder frames per stretch of the conv subsampling (82 s at 80 ms)


@dataclass(frozen=True)
class LongAudioOptions:
    """How ``transcribe()`` treats long audio (``ASRModel.long_audio`` holds the model's defaults).

    ``threshold_s`` only matters for ``auto``. Chunk and context lengths are rounded to whole encoder
    frames. ``local_context`` is ``[left, right]`` in encoder frames (NeMo's ``att_context_size``;
    128 = 10.24 s at 80 ms per frame). ``chunked`` mode encodes ``window_batch`` windows together (0: one on
    CPU, where batching was measured to gain nothing and cost memory; four elsewhere). ``progress``, if set,
    is called after each window batch (``chunked``) or Conformer layer (``local_attention``) of a long
    utterance; decoding, which follows, reports nothing.
    """

    strategy: str = "auto"
    threshold_s: float = 300.0
    chunk_s: float = 30.0
    left_context_s: float = 5.0
    right_context_s: float = 5.0
    local_context: tuple[int, int] = (128, 128)
    window_batch: int = 0
    progress: Progress | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "local_context", tuple(int(c) for c in self.local_context))
        if self.strategy not in STRATEGIES:
            raise UnsupportedOptionError(f"long-audio strategy must be one of {', '.join(STRATEGIES)}, "
                                         f"not {self.strategy!r}")
        if len(self.local_context) != 2 or min(self.local_context) < 0 or max(self.local_context) == 0:
            raise UnsupportedOptionError(f"local_context must be [left, right] > 0, not {self.local_context}")
        if self.chunk_s <= 0 or self.left_context_s < 0 or self.right_context_s < 0 or self.threshold_s < 0:
            raise UnsupportedOptionError("chunk_s must be positive; contexts and threshold_s non-negative")
        if self.window_batch < 0:
            raise UnsupportedOptionError("window_batch must be 0 (auto) or positive")


def resolve_options(value: LongAudioOptions | dict[str, Any] | str | None,
                    default: LongAudioOptions) -> LongAudioOptions:
    """``transcribe(long_audio=...)``: options, a dict of overrides, a strategy name, or None (the default)."""
    if value is None:
        return default
    if isinstance(value, LongAudioOptions):
        return value
    if isinstance(value, str):
        return replace(default, strategy=value)
    if isinstance(value, dict):
        unknown = set(value) - {f.name for f in fields(LongAudioOptions)}
        if unknown:
            raise UnsupportedOptionError(f"unknown long_audio option(s): {', '.join(sorted(unknown))}")
        return replace(default, **value)
    raise UnsupportedOptionError(f"long_audio must be options, a dict or a strategy name, not {type(value).__name__}")


# ----------------------------------------------------------------------------------------------------------
# Choosing a strategy
# ----------------------------------------------------------------------------------------------------------
def _attention_kind(encoder: nn.Module) -> str | None:
    """The Conformer's attention (``rel_pos``/``rel_pos_local_attn``/...), None for other encoders."""
    if not hasattr(encoder, "layers") or not hasattr(encoder, "self_attention_model"):
        return None
    if encoder.self_attention_model == "rel_pos":
        full_context = list(encoder.att_context_size[:2]) == [-1, -1] and encoder.cfg.att_context_style == "regular"
        return "rel_pos" if full_context else "rel_pos_limited"  # streaming contexts: keep their masks
    return str(encoder.self_attention_model)


def local_attention_applies(encoder: nn.Module) -> bool:
    return _attention_kind(encoder) in ("rel_pos", "rel_pos_local_attn")


def choose_strategy(encoder: nn.Module, seconds: float, options: LongAudioOptions) -> str:
    """The ``auto`` rule (explicit strategies are returned as they are, after a check)."""
    strategy = options.strategy
    if strategy == "auto":
        if seconds <= options.threshold_s:
            return "full"
        return "local_attention" if local_attention_applies(encoder) else "chunked"
    if strategy == "local_attention" and not local_attention_applies(encoder):
        raise UnsupportedOptionError(f"local attention needs a Conformer with rel_pos attention, not "
                                     f"{type(encoder).__name__} ({_attention_kind(encoder)}); use 'chunked'")
    return strategy


def plan(model: ASRModel, seconds: Sequence[float], options: LongAudioOptions) -> list[tuple[str, list[int]]]:
    """Groups ``(strategy, item indices)`` to encode together: ``full`` items in one batch, every item over
    the threshold alone (its memory then does not depend on the batch size), the rest by strategy."""
    groups: dict[str, list[int]] = {}
    alone: list[tuple[str, list[int]]] = []
    for i, sec in enumerate(seconds):
        strategy = choose_strategy(model.encoder, sec, options)
        if strategy != "full" and sec > options.threshold_s:
            alone.append((strategy, [i]))
        else:
            groups.setdefault(strategy, []).append(i)
    return list(groups.items()) + alone


def encode(model: ASRModel, audio: torch.Tensor, lengths: torch.Tensor, strategy: str,
           options: LongAudioOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """Waveforms ``[B, N]`` → encoder states ``[B, D, T']`` and lengths, with ``strategy``."""
    if strategy == "full":
        return model.encode(audio, lengths)
    if strategy not in ("local_attention", "chunked"):
        raise UnsupportedOptionError(f"unknown long-audio strategy {strategy!r}")
    log.info("long audio: %s, %d utterance(s), longest %.0f s", strategy, len(lengths),
             float(lengths.max()) / model.sample_rate)
    feats, feat_len = features(model.preprocessor, audio, lengths)  # [B, F, T]
    if strategy == "local_attention":
        with local_attention(model.encoder, options.local_context), windowed_subsampling(model.encoder), \
                _layer_progress(model.encoder, options.progress):
            return model.encoder(feats, feat_len)
    geometry = Geometry.from_options(options, model.preprocessor.window_stride, subsampling_factor(model.encoder))
    batch = options.window_batch or (1 if feats.device.type == "cpu" else 4)
    return chunked_encode(model.encoder, feats, feat_len, geometry, batch, options.progress)


# ----------------------------------------------------------------------------------------------------------
# Features, one stretch of the STFT at a time
# ----------------------------------------------------------------------------------------------------------
def features(pre: MelFrontend, audio: torch.Tensor, lengths: torch.Tensor,
             step: int = FEATURE_STEP) -> tuple[torch.Tensor, torch.Tensor]:
    """``MelFrontend.forward`` with the spectrum computed ``step`` frames at a time (same values).

    The power spectrum is ``n_fft/2+1`` floats per frame (≈ 3× the log-mel of 80 bins … 8× with 64 bins)
    and its temporaries several times that, so one pass over an hour would hold gigabytes.
    """
    audio = audio.to(torch.float32)  # [B, N]
    if audio.shape[1] <= step * pre.hop_length:
        return pre(audio, lengths)
    frames = pre.feature_lengths(lengths)  # [B]
    x = pre._preemphasis(audio, lengths)  # [B, N'] (exact_pad: already padded)
    n_frames = _stft_frames(pre, x.shape[1])
    logmel = x.new_empty(x.shape[0], pre.n_mels, n_frames)  # [B, M, T]
    for t0 in range(0, n_frames, step):
        logmel[:, :, t0:t0 + step] = _log_mel_stretch(pre, x, t0, min(n_frames, t0 + step))
    del x
    if pre.frame_splicing > 1:
        logmel = logmel.repeat(1, pre.frame_splicing, 1)
    feats = pre._mask_and_pad(normalize(logmel, frames, pre.cfg.normalize), frames)
    return feats.to(pre.featurizer.fb.dtype), frames


def _stft_frames(pre: MelFrontend, n: int) -> int:
    if pre.stft_pad is None:  # centred STFT (torch pads n_fft/2 zeros on both sides)
        return n // pre.hop_length + 1
    return (n - pre.n_fft) // pre.hop_length + 1


def _log_mel_stretch(pre: MelFrontend, x: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
    """Log-mel frames ``[t0, t1)`` of the whole signal ``x``, from a slice of it (``[B, M, t1 - t0]``)."""
    hop = pre.hop_length
    if pre.stft_pad is not None:  # not centred: frame t covers x[t·hop, t·hop + n_fft)
        return pre._log_mel(pre._power_spectrum(x[:, t0 * hop:(t1 - 1) * hop + pre.n_fft]))
    # centred: frame t covers x[t·hop ± n_fft/2]; a margin of whole frames keeps the slice's own zero padding
    # away from the frames we keep (at the signal's true ends that padding is the real one)
    margin = -(-(pre.n_fft // 2) // hop) + 1
    a = max(0, t0 - margin) * hop
    b = min(x.shape[1], (t1 - 1 + margin) * hop + 1)
    spec = pre._power_spectrum(x[:, a:b])  # [B, n_freq, frames of the slice]
    first = t0 - a // hop
    return pre._log_mel(spec[:, :, first:first + (t1 - t0)])


# ----------------------------------------------------------------------------------------------------------
# Local attention through a weight-sharing view
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _LocalView:
    context: tuple[int, int]
    sources: list[nn.Module]  # the rel_pos modules whose weights the view shares
    attentions: list[nn.Module]
    pos_enc: nn.Module


_VIEWS: weakref.WeakKeyDictionary[nn.Module, _LocalView] = weakref.WeakKeyDictionary()
_SHARED = ("linear_q", "linear_k", "linear_v", "linear_out", "linear_pos")


def _local_view(encoder: nn.Module, context: tuple[int, int]) -> _LocalView:
    """Built once per encoder and context; rebuilt if the encoder's attention modules changed since."""
    view = _VIEWS.get(encoder)
    current = [layer.self_attn for layer in encoder.layers]
    if view is not None and view.context == context and all(a is b for a, b in zip(view.sources, current)):
        return view
    attentions = []
    for src in current:
        local = LocalRelPositionMultiHeadAttention(src.h, encoder.d_model, context, use_bias=False,
                                                   pos_bias_u=src.pos_bias_u, pos_bias_v=src.pos_bias_v)
        for name in _SHARED:  # the same modules, hence the same weights (like NeMo: no global tokens)
            setattr(local, name, getattr(src, name))
        attentions.append(local)
    pos_enc = PositionalEncoding("rel_pos_local_attn", encoder.d_model, encoder.cfg.pos_emb_max_len,
                                 encoder.xscale, list(context))
    view = _LocalView(context, current, attentions, pos_enc)
    _VIEWS[encoder] = view
    return view


@contextmanager
def local_attention(encoder: nn.Module, context: tuple[int, int]) -> Iterator[None]:
    """Within the block, ``encoder`` attends locally with its own weights; restored afterwards."""
    if encoder.self_attention_model == "rel_pos_local_attn":  # already local: nothing to swap
        yield
        return
    view = _local_view(encoder, tuple(context))
    param = next(encoder.parameters())
    for module in (view.pos_enc, *view.attentions):  # buffers follow the model's device (no-op if there)
        module.to(device=param.device, dtype=param.dtype)
    saved = (encoder.pos_enc, [layer.self_attn for layer in encoder.layers],
             encoder.self_attention_model, encoder.att_context_size)
    try:
        encoder.pos_enc = view.pos_enc
        for layer, attention in zip(encoder.layers, view.attentions):
            layer.self_attn = attention
        encoder.self_attention_model, encoder.att_context_size = "rel_pos_local_attn", list(context)
        yield
    finally:
        encoder.pos_enc = saved[0]
        for layer, attention in zip(encoder.layers, saved[1]):
            layer.self_attn = attention
        encoder.self_attention_model, encoder.att_context_size = saved[2], saved[3]


@contextmanager
def _layer_progress(encoder: nn.Module, progress: Progress | None) -> Iterator[None]:
    """Reports each finished Conformer layer to ``progress`` (temporary forward hooks)."""
    layers = list(getattr(encoder, "layers", []))
    if progress is None or not layers:
        yield
        return
    hooks = [layer.register_forward_hook(lambda *_, i=i: progress("local_attention", (i + 1) / len(layers)))
             for i, layer in enumerate(layers)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


# ----------------------------------------------------------------------------------------------------------
# Conv subsampling over stretches of time
# ----------------------------------------------------------------------------------------------------------
class _WindowedSubsampling(nn.Module):
    """Runs a ``ConvSubsampling`` on stretches of ``step`` encoder frames of one long utterance
    (``ConvSubsampling.windowed``: each stretch's middle, the frames of the whole-utterance pass), so that its
    largest activations stay bounded. On CPU the subsampling already works in (smaller) stretches."""

    def __init__(self, inner: ConvSubsampling, step: int = SUBSAMPLING_STEP) -> None:
        super().__init__()
        self.inner, self.factor, self.step = inner, inner.factor, step

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        step = self.step * self.factor  # x: [B, T, F]
        if x.shape[0] != 1 or int(lengths.max()) <= step + 8 * self.factor or self.inner.cpu_window(x):
            return self.inner(x, lengths)  # batches, short inputs, CPU: as the subsampling does it
        return self.inner.windowed(x, lengths, step)


@contextmanager
def windowed_subsampling(encoder: nn.Module) -> Iterator[None]:
    inner = getattr(encoder, "pre_encode", None)
    if not isinstance(inner, ConvSubsampling):  # stacking / linear: no large intermediates
        yield
        return
    encoder.pre_encode = _WindowedSubsampling(inner)
    try:
        yield
    finally:
        encoder.pre_encode = inner


# ----------------------------------------------------------------------------------------------------------
# Chunked (buffered) encoding
# ----------------------------------------------------------------------------------------------------------
def subsampling_factor(encoder: nn.Module) -> int:
    factor = int(getattr(encoder, "subsampling_factor", 1) or 1)
    if getattr(encoder, "reduction_subsampling", None) is not None:
        factor *= int(encoder.cfg.reduction_factor)
    return factor


@dataclass(frozen=True)
class Geometry:
    """Window sizes in feature frames, all multiples of the encoder's subsampling ``factor``."""

    factor: int
    chunk: int
    left: int
    right: int

    @classmethod
    def from_options(cls, options: LongAudioOptions, frame_stride: float, factor: int) -> Geometry:
        def frames(seconds: float, minimum: int) -> int:
            return max(minimum, round(seconds / frame_stride / factor)) * factor

        return cls(factor, frames(options.chunk_s, 1), frames(options.left_context_s, 0),
                   frames(options.right_context_s, 0))

    def windows(self, n: int) -> list[tuple[int, int, int, int]]:
        """``(start, stop, keep_from, keep_to)`` feature frames of the windows over ``n`` frames."""
        out = []
        for s0 in range(0, n, self.chunk):
            s1 = min(n, s0 + self.chunk)
            out.append((max(0, s0 - self.left), min(n, s1 + self.right), s0, s1))
        return out


def chunked_encode(encoder: nn.Module, feats: torch.Tensor, feat_len: torch.Tensor, geometry: Geometry,
                   window_batch: int, progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode ``feats [B, F, T]`` window by window; returns the kept frames ``[B, D, T']`` and lengths."""
    windows = [(row, *w) for row in range(feats.shape[0]) for w in geometry.windows(int(feat_len[row]))]
    pieces: list[list[torch.Tensor]] = [[] for _ in range(feats.shape[0])]
    for i in range(0, len(windows), window_batch):
        group = windows[i:i + window_batch]
        width = max(stop - start for _, start, stop, _, _ in group)
        x = feats.new_zeros(len(group), feats.shape[1], width)  # [W, F, width]
        for j, (row, start, stop, _, _) in enumerate(group):
            x[j, :, :stop - start] = feats[row, :, start:stop]
        lens = torch.tensor([stop - start for _, start, stop, _, _ in group], device=feats.device)
        y, y_len = encoder(x, lens)  # [W, D, T'w]
        for j, (row, start, stop, keep_from, keep_to) in enumerate(group):
            pieces[row].append(_kept(y[j], int(y_len[j]), geometry.factor, start, keep_from, keep_to,
                                     last=keep_to == int(feat_len[row])))
        if progress is not None:
            progress("chunked", min(1.0, (i + window_batch) / len(windows)))
    enc_len = torch.tensor([sum(p.shape[-1] for p in row) for row in pieces], dtype=torch.int64)
    enc = feats.new_zeros(feats.shape[0], encoder.output_dim, int(enc_len.max()))  # [B, D, T']
    for row, row_pieces in enumerate(pieces):
        if row_pieces:  # empty audio has no windows
            enc[row, :, :int(enc_len[row])] = torch.cat(row_pieces, dim=-1)
    return enc, enc_len.to(feats.device)


def _kept(y: torch.Tensor, y_len: int, factor: int, start: int, keep_from: int, keep_to: int,
          last: bool) -> torch.Tensor:
    """The chunk's encoder frames ``[D, n]`` of one window's output ``y [D, T'w]`` (a copy).

    Window starts are multiples of ``factor``, so window frame ``k`` is utterance frame ``k + start/factor``.
    The last window keeps everything up to its own output length, which is how the whole utterance ends.
    """
    first = (keep_from - start) // factor
    stop = y_len if last else first + math.ceil((keep_to - keep_from) / factor)
    if stop > y_len or first > stop:
        raise UnsupportedOptionError(f"the encoder returned {y_len} frames for a window that needs {stop}; "
                                     "chunked inference does not fit this encoder's subsampling")
    return y[:, first:stop].clone()
