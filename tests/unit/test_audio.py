"""Audio decoding, downmixing and resampling (models/audio.py, models/inputs.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from models.audio import as_float_array, decode_audio, load_audio, prepare_array
from models.errors import AudioError
from models.inputs import expand, load_item, read_manifest

AUDIO = Path(__file__).parents[1] / "fixtures" / "audio"
REF = sf.read(AUDIO / "s1_en_us.wav", dtype="float32")[0]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


@pytest.mark.parametrize("name", ["fmt_44k_stereo.wav", "fmt_22k.flac", "fmt_16k.ogg", "fmt_16k.mp3", "fmt_16k.m4a"])
def test_every_format_decodes_to_the_same_speech(name):
    audio = load_audio(AUDIO / name, 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - len(REF)) < 0.1 * 16000  # codecs add a little padding
    if name.endswith((".wav", ".flac")):  # lossless: resampled copies of the reference
        assert _corr(audio, REF) > 0.99


def test_pcm16_is_scaled_like_nemo():
    raw, _ = sf.read(AUDIO / "s1_en_us.wav", dtype="int16")
    assert np.array_equal(load_audio(AUDIO / "s1_en_us.wav", 16000), raw.astype(np.float32) / 32768)
    assert np.array_equal(as_float_array(raw), raw.astype(np.float32) / 32768)


def test_bytes_and_file_objects():
    data = (AUDIO / "fmt_16k.m4a").read_bytes()
    a, sr = decode_audio(data)
    b, _ = decode_audio(io.BytesIO(data))
    assert sr == 16000 and np.array_equal(a, b)


@pytest.mark.parametrize("payload", [b"", b"not audio at all" * 10])
def test_bad_audio_names_the_input(payload):
    with pytest.raises(AudioError, match="upload.bin"):
        decode_audio(payload, name="upload.bin")


def test_arrays_channels_and_dtypes():
    stereo = np.stack([REF, REF * 0.5])  # [C, N]
    mono = prepare_array(stereo, 16000, 16000)
    assert np.allclose(mono, REF * 0.75, atol=1e-6)
    assert np.allclose(prepare_array(stereo.T, 16000, 16000), mono)
    assert len(prepare_array(REF, 8000, 16000)) == 2 * len(REF)
    with pytest.raises(AudioError, match="empty"):
        prepare_array(np.zeros(0, np.float32), 16000, 16000)
    with pytest.raises(AudioError, match="NaN"):
        prepare_array(np.array([0.0, np.nan]), 16000, 16000)
    with pytest.raises(AudioError, match="dtype"):
        prepare_array(np.array(["a"]), 16000, 16000)


def test_inputs_mixed_list_and_manifest(tmp_path):
    manifest = tmp_path / "m.jsonl"
    entries = [{"audio_filepath": str(AUDIO / "s1_en_us.wav"), "offset": 0.5, "duration": 1.0},
               {"audio_filepath": "rel.wav"}]
    sf.write(tmp_path / "rel.wav", REF[:1600], 16000)
    manifest.write_text("\n".join(json.dumps(e) for e in entries))
    sources = expand([str(manifest), REF, torch.from_numpy(REF)])
    assert len(sources) == 4
    items = [load_item(s, 16000, i) for i, s in enumerate(sources)]
    assert items[0].num_samples == 16000 and np.array_equal(items[0].audio, REF[8000:24000])
    assert items[1].num_samples == 1600
    assert np.array_equal(items[2].audio, REF) and np.array_equal(items[3].audio, REF)
    assert read_manifest(manifest)[1]["audio_filepath"] == str(tmp_path / "rel.wav")
    with pytest.raises(AudioError, match="no such"):
        load_item(str(tmp_path / "missing.wav"), 16000, 0)
