"""Log-mel front-end: NeMo's ``AudioToMelSpectrogramPreprocessor`` (``FilterbankFeatures``), ≥ 2.5 semantics.

Waveform ``[B, N]`` → pre-emphasis → zero-padded STFT with a *symmetric* window → power spectrum →
Slaney mel filterbank → log → (frame splicing) → normalisation over the valid frames only → padding masked.
Every step only looks at samples/frames inside each utterance's length, so an utterance gives the same
features alone or padded inside a batch (NeMo PR #13827 behaviour). Dither is a training-time augmentation
and is ignored here.

State-dict keys are NeMo's: ``featurizer.window`` (absent for ``window: none``) and ``featurizer.fb``
``[1, n_mels, n_fft//2 + 1]``. When the module is built from a config alone, both buffers are computed
here (no librosa needed); loading a checkpoint overwrites them with the stored ones.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from models.errors import UnsupportedOptionError

STD_EPS = 1e-5  # NeMo adds this to the std (not the variance)
MAX_DURATION_S = 16.7  # NeMo's FilterbankFeatures default, used by ``pad_to: max``

_WINDOWS = {
    "hann": torch.hann_window,
    "hamming": torch.hamming_window,
    "blackman": torch.blackman_window,
    "bartlett": torch.bartlett_window,
}


# ----------------------------------------------------------------------------------------------------------
# Slaney mel scale and filterbank (librosa's defaults: htk=False, norm="slaney")
# ----------------------------------------------------------------------------------------------------------
_F_SP = 200.0 / 3  # Hz per mel in the linear region
_MIN_LOG_HZ = 1000.0  # start of the log region
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = float(np.log(6.4)) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_region = hz >= _MIN_LOG_HZ
    return np.where(log_region, _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-30) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    log_region = mel >= _MIN_LOG_MEL
    return np.where(log_region, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), hz)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    norm: str | float | None = "slaney",
) -> torch.Tensor:
    """Triangular mel filters ``[n_mels, n_fft//2 + 1]`` (float32), numerically ``librosa.filters.mel``."""
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)  # [n_freq]
    # n_mels + 2 edges: filter i rises from edge i to its peak at i+1 and falls to i+2
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges_hz)  # [n_mels + 1]
    ramps = edges_hz[:, None] - fft_hz[None, :]  # [n_mels + 2, n_freq]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    # librosa stores the triangles as float32 before normalising; keep that rounding step
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    if norm == "slaney":  # constant energy per band: divide by the band width in Hz
        weights = (weights * (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]).astype(np.float32)
    elif norm is not None:
        p = float(norm)
        length = np.sum(np.abs(weights.astype(np.float64)) ** p, axis=1, keepdims=True) ** (1.0 / p)
        weights = (weights / np.where(length > 0, length, 1.0)).astype(np.float32)
    return torch.from_numpy(weights)


def make_window(kind: str | None, win_length: int) -> torch.Tensor | None:
    """NeMo's analysis window: *symmetric* (``periodic=False``); ``none`` → no window (rectangular)."""
    if kind is None or str(kind).lower() in ("none", "ones"):
        return None
    if kind not in _WINDOWS:
        raise UnsupportedOptionError(f"unsupported STFT window {kind!r}")
    return _WINDOWS[kind](win_length, periodic=False)


# ----------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------
@dataclass
class MelConfig:
    """``AudioToMelSpectrogramPreprocessor`` arguments (NeMo key names and defaults)."""

    sample_rate: int = 16000
    window_size: float | None = 0.02
    window_stride: float | None = 0.01
    n_window_size: int | None = None
    n_window_stride: int | None = None
    window: str | None = "hann"
    normalize: Any = "per_feature"
    n_fft: int | None = None
    preemph: float | None = 0.97
    features: int = 64
    lowfreq: float = 0.0
    highfreq: float | None = None
    log: bool = True
    log_zero_guard_type: str = "add"
    log_zero_guard_value: float | str = 2**-24
    dither: float = 1e-5  # training only
    pad_to: int | str = 16
    frame_splicing: int = 1
    exact_pad: bool = False
    pad_value: float = 0.0
    mag_power: float = 2.0
    mel_norm: str | float | None = "slaney"

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> MelConfig:
        """Accepts ``{_target_: ..., key: value}`` and the legacy ``{cls: ..., params: {...}}`` form."""
        flat = dict(cfg.get("params") or {}) if "params" in cfg else dict(cfg)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in flat.items() if k in known}
        # NeMo derives samples from seconds unless only the sample counts were given
        if flat.get("n_window_size") and not flat.get("window_size"):
            values["window_size"] = None
        if flat.get("n_window_stride") and not flat.get("window_stride"):
            values["window_stride"] = None
        return cls(**values)

    @property
    def win_length(self) -> int:
        return int(self.window_size * self.sample_rate) if self.window_size else int(self.n_window_size)

    @property
    def hop_length(self) -> int:
        return int(self.window_stride * self.sample_rate) if self.window_stride else int(self.n_window_stride)


class _Featurizer(nn.Module):
    """Holds the two buffers under NeMo's ``featurizer.`` prefix."""

    def __init__(self, window: torch.Tensor | None, fb: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("window", window)  # [win_length] or None
        self.register_buffer("fb", fb)  # [1, n_mels, n_fft//2 + 1]


# ----------------------------------------------------------------------------------------------------------
# The front-end
# ----------------------------------------------------------------------------------------------------------
class MelFrontend(nn.Module):
    """Waveform ``[B, N]`` + lengths (samples) → log-mel features ``[B, F, T]`` + lengths (frames)."""

    def __init__(self, cfg: MelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.sample_rate = int(cfg.sample_rate)
        self.win_length = cfg.win_length
        self.hop_length = cfg.hop_length
        if self.win_length <= 0 or self.hop_length <= 0:
            raise UnsupportedOptionError("window size and stride must be positive")
        if cfg.exact_pad and self.hop_length % 2 == 1:
            raise UnsupportedOptionError("exact_pad needs an even hop length")
        if cfg.log_zero_guard_type not in ("add", "clamp"):
            raise UnsupportedOptionError(
                f"log_zero_guard_type must be add or clamp, not {cfg.log_zero_guard_type!r}"
            )
        self.n_fft = int(cfg.n_fft or 2 ** math.ceil(math.log2(self.win_length)))
        self.n_mels = int(cfg.features)
        self.frame_splicing = int(cfg.frame_splicing or 1)
        self.feat_out = self.n_mels * self.frame_splicing
        self.window_stride = self.hop_length / self.sample_rate  # seconds per feature frame
        # exact_pad: NeMo pads the waveform itself and runs a non-centred STFT
        self.stft_pad = (self.n_fft - self.hop_length) // 2 if cfg.exact_pad else None
        fb = mel_filterbank(
            self.sample_rate, self.n_fft, self.n_mels, cfg.lowfreq, cfg.highfreq or None, cfg.mel_norm
        )
        self.featurizer = _Featurizer(make_window(cfg.window, self.win_length), fb.unsqueeze(0))
        self.max_length = int(self.feature_lengths(torch.tensor(int(MAX_DURATION_S * self.sample_rate))))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> MelFrontend:
        return cls(MelConfig.from_dict(cfg))

    def feature_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames per utterance: ``floor((len + pad - n_fft) / hop)`` (= ``len // hop`` for centred STFT)."""
        pad = 2 * self.stft_pad if self.stft_pad is not None else 2 * (self.n_fft // 2)
        frames = torch.div(lengths.long() + pad - self.n_fft, self.hop_length, rounding_mode="floor")
        return torch.where(lengths > 0, frames, torch.zeros_like(frames)).clamp(min=0)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        audio = audio.to(torch.float32)  # [B, N]
        frames = self.feature_lengths(lengths)  # [B]
        spec = self._power_spectrum(self._preemphasis(audio, lengths))  # [B, n_freq, T]
        feats = self._log_mel(spec)  # [B, n_mels, T]
        if self.frame_splicing > 1:  # NeMo's splice_frames stacks k identical copies
            feats = feats.repeat(1, self.frame_splicing, 1)
        feats = normalize(feats, frames, self.cfg.normalize)
        feats = self._mask_and_pad(feats, frames)
        return feats.to(self.featurizer.fb.dtype), frames

    def _preemphasis(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.stft_pad is not None:
            x = nn.functional.pad(x, (self.stft_pad, self.stft_pad))
        if self.cfg.preemph is None:
            return x
        x = torch.cat((x[:, :1], x[:, 1:] - self.cfg.preemph * x[:, :-1]), dim=1)
        # zero everything past the utterance so that batch padding stays exactly zero
        inside = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]  # [B, N]
        return x.masked_fill(~inside, 0.0)

    def _power_spectrum(self, x: torch.Tensor) -> torch.Tensor:
        window = self.featurizer.window
        window = torch.ones(self.win_length) if window is None else window
        stft = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=window.to(device=x.device, dtype=torch.float32),
            center=self.stft_pad is None,
            pad_mode="constant",
            return_complex=True,
        )  # [B, n_freq, T+1]
        mag = torch.view_as_real(stft).pow(2).sum(-1).sqrt()  # NeMo takes |X| first, then the power
        return mag.pow(self.cfg.mag_power) if self.cfg.mag_power != 1.0 else mag

    def _log_mel(self, spec: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(self.featurizer.fb.to(spec.dtype), spec)  # [1, M, F] @ [B, F, T]
        if not self.cfg.log:
            return mel
        guard = self.cfg.log_zero_guard_value
        if isinstance(guard, str):
            if guard not in ("tiny", "eps"):
                raise UnsupportedOptionError(
                    f"log_zero_guard_value {guard!r} is not a number, 'tiny' or 'eps'"
                )
            guard = getattr(torch.finfo(mel.dtype), guard)
        if self.cfg.log_zero_guard_type == "add":
            return torch.log(mel + guard)
        return torch.log(torch.clamp(mel, min=guard))

    def _mask_and_pad(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        pad_value = float(self.cfg.pad_value)
        outside = torch.arange(feats.shape[-1], device=feats.device)[None, :] >= frames[:, None]  # [B, T]
        feats = feats.masked_fill(outside[:, None, :], pad_value)
        pad_to = self.cfg.pad_to
        if pad_to == "max":
            extra = max(0, self.max_length - feats.shape[-1])
        elif isinstance(pad_to, int) and pad_to > 0:
            extra = (-feats.shape[-1]) % pad_to
        else:
            extra = 0
        return nn.functional.pad(feats, (0, extra), value=pad_value) if extra else feats


def normalize(x: torch.Tensor, frames: torch.Tensor, mode: Any) -> torch.Tensor:
    """NeMo's ``normalize_batch``, statistics over each utterance's valid frames only.

    ``per_feature``: mean/unbiased std per mel bin; ``all_features``: one mean/std per utterance;
    ``{fixed_mean, fixed_std}``: given per-bin statistics; anything else: unchanged.
    """
    if isinstance(mode, Mapping) and "fixed_mean" in mode and "fixed_std" in mode:
        mean = torch.as_tensor(mode["fixed_mean"], dtype=x.dtype, device=x.device).reshape(1, -1, 1)
        std = torch.as_tensor(mode["fixed_std"], dtype=x.dtype, device=x.device).reshape(1, -1, 1)
        return (x - mean) / std
    if mode not in ("per_feature", "all_features"):
        return x
    valid = (torch.arange(x.shape[-1], device=x.device)[None, :] < frames[:, None])[:, None, :]  # [B, 1, T]
    if mode == "per_feature":
        count = valid.sum(dim=2)  # [B, 1]
        mean = torch.where(valid, x, 0.0).sum(dim=2) / count  # [B, F]
        var = torch.where(valid, x - mean.unsqueeze(2), 0.0).pow(2).sum(dim=2) / (count - 1.0)
    else:
        count = valid.sum(dim=(1, 2)) * x.shape[1]  # [B]
        mean = torch.where(valid, x, 0.0).sum(dim=(1, 2)) / count
        var = torch.where(valid, x - mean[:, None, None], 0.0).pow(2).sum(dim=(1, 2)) / (count - 1.0)
        mean, var = mean[:, None], var[:, None]  # [B, 1]: broadcast over bins
    std = torch.sqrt(var)
    std = std.masked_fill(std.isnan(), 0.0) + STD_EPS  # a 1-frame utterance has no spread: std 0
    return (x - mean.unsqueeze(2)) / std.unsqueeze(2)
