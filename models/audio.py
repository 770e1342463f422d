"""Audio in: decode files and bytes, downmix, resample — everything before the mel front-end.

soundfile (libsndfile) reads wav/flac/ogg/mp3 fast and exactly (integer PCM scaled by 1/2^(bits-1), as
NeMo does); anything else (m4a, aac, webm, opus, ...) goes through PyAV (ffmpeg). Resampling uses soxr's
high-quality mode, the same algorithm NeMo's classic loader gets from librosa >= 0.10.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from models.errors import AudioError

AudioSource = str | os.PathLike | bytes | BinaryIO
FloatAudio = npt.NDArray[np.float32]


def _describe(source: AudioSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return "<audio bytes>"


def _read_soundfile(buf: BinaryIO | str) -> tuple[FloatAudio, int]:
    data, sr = sf.read(buf, dtype="float32", always_2d=True)  # [N, C]
    return data, int(sr)


def _read_pyav(buf: BinaryIO | str) -> tuple[FloatAudio, int]:
    import av  # imported lazily: only needed for formats libsndfile cannot read

    with av.open(buf) as container:
        if not container.streams.audio:
            raise AudioError("no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())  # [C, n]
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
        rate = stream.rate
    if not chunks:
        return np.zeros((0, 1), dtype=np.float32), int(rate)
    return np.concatenate(chunks, axis=1).T.astype(np.float32, copy=False), int(rate)


def decode_audio(source: AudioSource, name: str | None = None) -> tuple[FloatAudio, int]:
    """Decode a file path, bytes or binary file object into ``([N, C] float32, sample_rate)``.

    Raises:
        AudioError: if the input is missing or cannot be decoded by soundfile or PyAV.
    """
    label = _describe(source, name)
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).is_file():
            raise AudioError(f"{label}: no such audio file")
        opener = lambda: str(source)
    else:
        raw = source if isinstance(source, bytes) else source.read()
        if not raw:
            raise AudioError(f"{label}: the audio is empty (0 bytes)")
        opener = lambda: io.BytesIO(raw)
    errors = []
    for reader in (_read_soundfile, _read_pyav):
        try:
            return reader(opener())
        except Exception as exc:  # noqa: BLE001 - each backend raises its own types
            errors.append(f"{reader.__name__[6:]}: {exc}")
    raise AudioError(
        f"{label}: could not decode the audio ({'; '.join(errors)}). "
        "Send wav, flac, ogg, mp3, m4a, webm or another format ffmpeg reads."
    )


def to_mono(audio: np.ndarray, channel_selector: int | str | None = "average") -> FloatAudio:
    """``[N, C]`` → ``[N]``: average the channels (default) or pick one by index."""
    if audio.ndim == 1:
        return audio
    if isinstance(channel_selector, int):
        if not -audio.shape[1] <= channel_selector < audio.shape[1]:
            raise AudioError(f"channel {channel_selector} requested but the audio has {audio.shape[1]}")
        return np.ascontiguousarray(audio[:, channel_selector])
    return audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]


def resample(audio: FloatAudio, orig_sr: int, target_sr: int) -> FloatAudio:
    if orig_sr == target_sr or audio.size == 0:
        return audio
    return soxr.resample(audio, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def as_float_array(array: np.ndarray, name: str = "array") -> np.ndarray:
    """Integer PCM → float32 in [-1, 1); float arrays are cast to float32."""
    array = np.asarray(array)
    if array.dtype.kind == "f":
        out = array.astype(np.float32, copy=False)
    elif array.dtype.kind in "iu":
        info = np.iinfo(array.dtype)
        offset = 0 if array.dtype.kind == "i" else (info.max + 1) // 2
        out = (array.astype(np.float32) - offset) / float(-info.min if info.min else offset)
    else:
        raise AudioError(f"{name}: unsupported sample dtype {array.dtype}; use float32, float64 or int16")
    if not np.isfinite(out).all():
        raise AudioError(f"{name}: the samples contain NaN or infinity")
    return out


def prepare_array(array: np.ndarray, sample_rate: int, target_sr: int, name: str = "array") -> FloatAudio:
    """A numpy waveform (1-D, or 2-D with a channel axis on either side) → mono float32 at ``target_sr``."""
    out = as_float_array(array, name)
    if out.ndim == 2:
        # [C, N] with few channels is the usual torch layout; [N, C] the soundfile one.
        out = out.T if out.shape[0] < out.shape[1] else out
        out = to_mono(out)
    elif out.ndim != 1:
        raise AudioError(f"{name}: expected a 1-D waveform (or 2-D with channels), got shape {out.shape}")
    if out.size == 0:
        raise AudioError(f"{name}: the audio is empty (0 samples)")
    return resample(np.ascontiguousarray(out), sample_rate, target_sr)


def load_audio(
    source: AudioSource,
    target_sr: int,
    *,
    name: str | None = None,
    channel_selector: int | str | None = "average",
    offset: float = 0.0,
    duration: float | None = None,
) -> FloatAudio:
    """Decode, downmix and resample one input to a mono float32 waveform at ``target_sr``.

    ``offset``/``duration`` (seconds) cut a segment, as NeMo manifests allow.
    """
    label = _describe(source, name)
    audio, sr = decode_audio(source, name)
    audio = to_mono(audio, channel_selector)
    if offset or duration is not None:
        start = round(offset * sr)
        stop = None if duration is None else start + round(duration * sr)
        audio = audio[start:stop]
    if audio.size == 0:
        raise AudioError(f"{label}: the audio is empty (0 samples)")
    return resample(np.ascontiguousarray(audio), sr, target_sr)
