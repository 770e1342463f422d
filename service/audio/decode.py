"""Turn uploads into model-ready waveforms: decode, downmix, resample, and enforce the limits.

Runs in a thread pool (never on the event loop). Decoding is the runtime's (``models.audio``: soundfile,
then PyAV; soxr resampling); this module adds the service's rules: ``.npy`` payloads, media types, the
duration limit, and errors that name the input.
"""

from __future__ import annotations

import io

import numpy as np

from models.audio import load_audio, prepare_array
from models.errors import AudioError
from service.audio.inputs import AudioInput, DecodedAudio
from service.errors import AudioTooLong, InvalidAudio, UnsupportedMediaType

NPY_MAGIC = b"\x93NUMPY"
_NPY_DTYPES = {"float32", "float64", "int16"}
# Declared types that cannot hold audio; anything else is attempted (clients often say octet-stream).
_NOT_AUDIO = ("text/", "image/", "application/json", "application/pdf", "application/zip")


def decode_input(item: AudioInput, target_sr: int, max_audio_s: float) -> DecodedAudio:
    """Decode one input to mono float32 at ``target_sr``.

    Raises:
        InvalidAudio: empty, undecodable, NaN/inf samples, bad ``.npy`` dtype or shape (400).
        UnsupportedMediaType: the part declares a non-audio media type (415).
        AudioTooLong: longer than ``max_audio_s`` (413).
    """
    check_media_type(item)
    try:
        if item.samples is not None:
            audio = _segment(_from_array(item.samples, item, target_sr, max_audio_s), item, target_sr)
        elif item.data is not None and item.data.startswith(NPY_MAGIC):
            audio = _segment(_from_array(load_npy(item.data, item.label), item, target_sr, max_audio_s), item, target_sr)
        else:
            source = item.path if item.path is not None else item.data or b""
            audio = load_audio(source, target_sr, name=item.label, offset=item.offset, duration=item.duration)
    except AudioError as exc:
        # A server-side file is named as the client named it: the decoder's message must not show where it lives.
        message = str(exc).replace(str(item.path), item.label) if item.path is not None else str(exc)
        raise InvalidAudio(message, param=item.label) from None
    if not np.isfinite(audio).all():
        raise InvalidAudio(f"{item.label}: the samples contain NaN or infinity", param=item.label)
    duration = len(audio) / target_sr
    _check_duration(item, duration, max_audio_s)
    return DecodedAudio(audio, duration, item.label, item.filename)


def check_media_type(item: AudioInput) -> None:
    """Refuse parts whose declared media type cannot be audio (415)."""
    kind = (item.content_type or "").split(";")[0].strip().lower()
    if kind.startswith(_NOT_AUDIO):
        raise UnsupportedMediaType(
            f"{item.label}: media type {kind} is not audio; send an audio file (wav, flac, ogg, mp3, m4a, "
            "webm...) or a .npy waveform",
            param=item.label,
        )


def load_npy(data: bytes, label: str) -> np.ndarray:
    """Read ``.npy`` bytes (no pickles) holding a float32, float64 or int16 waveform.

    Raises:
        InvalidAudio: not a readable ``.npy`` file, or another dtype.
    """
    try:
        array: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy raises ValueError, OSError, EOFError...
        raise InvalidAudio(f"{label}: not a readable .npy array ({exc})", param=label) from None
    if array.dtype.name not in _NPY_DTYPES:
        raise InvalidAudio(
            f"{label}: .npy dtype {array.dtype} is not supported; send float32, float64 or int16 samples",
            param=label,
        )
    return array


def _from_array(array: np.ndarray, item: AudioInput, target_sr: int, max_audio_s: float) -> np.ndarray:
    if array.ndim in (1, 2):
        # Check the length before resampling so an oversized payload costs no work.
        _check_duration(item, max(array.shape) / item.sample_rate, max_audio_s)
    return prepare_array(array, item.sample_rate, target_sr, name=item.label)


def _segment(audio: np.ndarray, item: AudioInput, rate: int) -> np.ndarray:
    """The ``offset`` / ``duration`` segment of a waveform (encoded files are cut while decoding)."""
    if not item.offset and item.duration is None:
        return audio
    start = round(item.offset * rate)
    stop = None if item.duration is None else start + round(item.duration * rate)
    if audio[start:stop].size == 0:
        raise AudioError(f"{item.label}: the audio is empty (0 samples) at offset {item.offset:g} s")
    return audio[start:stop]


def _check_duration(item: AudioInput, duration: float, max_audio_s: float) -> None:
    if duration > max_audio_s:
        raise AudioTooLong(
            f"{item.label}: the audio is {duration:.1f} s long; the limit is {max_audio_s:g} s "
            "(AVIARY_MAX_AUDIO_S) — split it into shorter pieces",
            param=item.label,
        )
