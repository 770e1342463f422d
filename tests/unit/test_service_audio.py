"""Decoding inputs for the service: .npy payloads, raw samples, encoded files, limits and media types."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from service.audio import AudioInput, decode_input
from service.errors import AudioTooLong, InvalidAudio, UnsupportedMediaType


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def wav(samples: np.ndarray, rate: int, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("dtype", ["float32", "float64", "int16"])
def test_npy_dtypes(dtype: str) -> None:
    array = (np.sin(np.arange(16000) / 10) * (0.5 if dtype != "int16" else 16000)).astype(dtype)
    out = decode_input(AudioInput("a.npy", data=npy(array)), 16000, 60)
    assert out.audio.dtype == np.float32 and out.duration == 1.0 and np.abs(out.audio).max() <= 1.0


@pytest.mark.parametrize("shape", [(2, 8000), (8000, 2)])
def test_npy_with_a_channel_axis_is_downmixed_and_resampled(shape: tuple[int, int]) -> None:
    array = np.zeros(shape, np.float32)
    out = decode_input(AudioInput("a.npy", data=npy(array), sample_rate=8000), 16000, 60)
    assert out.audio.ndim == 1 and out.duration == pytest.approx(1.0, abs=1e-3)


def test_npy_refuses_other_dtypes_and_pickles() -> None:
    with pytest.raises(InvalidAudio, match="dtype complex64"):
        decode_input(AudioInput("c.npy", data=npy(np.zeros(10, np.complex64))), 16000, 60)
    with pytest.raises(InvalidAudio, match="not a readable .npy"):
        decode_input(AudioInput("p.npy", data=npy(np.array([{"a": 1}], dtype=object))), 16000, 60)


def test_samples_with_nan_or_empty_are_400() -> None:
    with pytest.raises(InvalidAudio, match=r"audio\[0\].*NaN"):
        decode_input(AudioInput("audio[0]", samples=np.array([0.0, np.nan], np.float32)), 16000, 60)
    with pytest.raises(InvalidAudio, match=r"audio\[1\].*empty"):
        decode_input(AudioInput("audio[1]", samples=np.zeros(0, np.float32)), 16000, 60)


def test_encoded_audio_is_downmixed_and_resampled() -> None:
    stereo = np.stack([np.zeros(44100), np.ones(44100) * 0.5], axis=1).astype(np.float32)
    out = decode_input(AudioInput("s.wav", data=wav(stereo, 44100)), 16000, 60)
    assert out.duration == pytest.approx(1.0, abs=1e-3)
    assert float(np.median(out.audio)) == pytest.approx(0.25, abs=1e-3)
    flac = decode_input(AudioInput("f.flac", data=wav(np.zeros(22050, np.float32), 22050, "FLAC")), 16000, 60)
    assert flac.duration == pytest.approx(1.0, abs=1e-3)


def test_undecodable_and_empty_files_name_the_file() -> None:
    with pytest.raises(InvalidAudio, match="notes.wav: could not decode"):
        decode_input(AudioInput("notes.wav", data=b"this is not audio"), 16000, 60)
    with pytest.raises(InvalidAudio, match="empty.wav: the audio is empty"):
        decode_input(AudioInput("empty.wav", data=b""), 16000, 60)
    with pytest.raises(InvalidAudio, match="silent.wav: the audio is empty"):
        decode_input(AudioInput("silent.wav", data=wav(np.zeros(0, np.float32), 16000)), 16000, 60)


def test_too_long_is_413_before_resampling() -> None:
    with pytest.raises(AudioTooLong, match="long.npy: the audio is 3.0 s long; the limit is 2 s"):
        decode_input(AudioInput("long.npy", samples=np.zeros(3 * 48000, np.float32), sample_rate=48000), 16000, 2)
    with pytest.raises(AudioTooLong):
        decode_input(AudioInput("long.wav", data=wav(np.zeros(48000, np.float32), 16000)), 16000, 2)


@pytest.mark.parametrize("ctype", ["text/plain", "image/png", "application/json; charset=utf-8"])
def test_non_audio_media_types_are_415(ctype: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="is not audio"):
        decode_input(AudioInput("x", data=b"abc", content_type=ctype), 16000, 60)
