"""Unit tests of the log-mel front-end (``models/features.py``); no NeMo needed."""

from __future__ import annotations

import math

import pytest
import torch

from models.errors import UnsupportedOptionError
from models.features import MelFrontend, mel_filterbank

torch.set_num_threads(1)

FASTCONFORMER = {
    "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
    "sample_rate": 16000,
    "normalize": "per_feature",
    "window_size": 0.025,
    "window_stride": 0.01,
    "window": "hann",
    "features": 80,
    "n_fft": 512,
    "log": True,
    "frame_splicing": 1,
    "dither": 1e-5,
    "pad_to": 0,
    "pad_value": 0.0,
}


def frontend(**overrides) -> MelFrontend:
    return MelFrontend.from_config({**FASTCONFORMER, **overrides}).eval()


def audio(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(len(lengths), max(lengths), generator=gen)
    lens = torch.tensor(lengths)
    return x.masked_fill(torch.arange(max(lengths))[None] >= lens[:, None], 0.0), lens


# -- mel filterbank: librosa.filters.mel values (librosa 0.11, obtained once from NeMo's virtualenv) --------
LIBROSA_ROWS = {
    (16000, 512, 80, 0.0, None): {
        0: (1, [0.022534560412168503, 0.008637710474431515]),
        10: (12, [0.0018805701984092593, 0.02441513165831566, 0.006757139693945646]),
        40: (54, [0.007159441243857145, 0.014444176107645035, 0.008761478587985039, 0.0017512018093839288]),
    },
    (16000, 512, 128, 0.0, None): {
        0: (1, [0.02837754227221012]),
        1: (1, [0.014389008283615112, 0.013988534919917583]),
        64: (54, [0.011216705664992332, 0.018818283453583717, 0.0006491445237770677]),
        127: (
            244,
            [
                4.7641340643167496e-05,
                0.0009394199587404728,
                0.001831198576837778,
                0.002722977427765727,
                0.0036147558130323887,
                0.004506534431129694,
                0.005223188549280167,
                0.004352657124400139,
                0.0034821254666894674,
                0.0026115942746400833,
                0.0017410627333447337,
                0.0008705313666723669,
            ],
        ),
    },
    (16000, 512, 64, 100.0, 7000.0): {
        1: (5, [0.007275616284459829, 0.022371806204319, 0.00537232356145978]),
        32: (53, [0.005276404786854982, 0.010924460366368294, 0.01015818864107132, 0.004754428751766682]),
    },
}
# (sum of all weights, sum weighted by FFT bin index, sum of rows 5..8)
LIBROSA_SUMS = {
    (16000, 512, 80, 0.0, None): (2.55826078139944, 196.40476660540662, 0.125629369111266),
    (16000, 512, 128, 0.0, None): (4.090487653877062, 315.1126601764845, 0.12789918045746163),
    (16000, 512, 64, 100.0, 7000.0): (2.047252758331524, 147.24096085853853, 0.1249136608093977),
    (8000, 256, 40, 0.0, None): (1.2792624304493074, 59.07119474768842, 0.12830809739534743),
}


@pytest.mark.parametrize("key", list(LIBROSA_ROWS))
def test_mel_filterbank_rows_match_librosa(key):
    sr, n_fft, n_mels, fmin, fmax = key
    fb = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    assert fb.shape == (n_mels, n_fft // 2 + 1) and fb.dtype == torch.float32
    for row, (first, values) in LIBROSA_ROWS[key].items():
        nonzero = torch.nonzero(fb[row]).flatten().tolist()
        assert nonzero == list(range(first, first + len(values)))
        assert torch.equal(fb[row, first : first + len(values)], torch.tensor(values, dtype=torch.float32))


@pytest.mark.parametrize("key", list(LIBROSA_SUMS))
def test_mel_filterbank_sums_match_librosa(key):
    sr, n_fft, n_mels, fmin, fmax = key
    fb = mel_filterbank(sr, n_fft, n_mels, fmin, fmax).double()
    total, weighted, rows = LIBROSA_SUMS[key]
    assert float(fb.sum()) == pytest.approx(total, abs=1e-9)
    assert float((fb * torch.arange(fb.shape[1])).sum()) == pytest.approx(weighted, abs=1e-7)
    assert float(fb[5:9].sum()) == pytest.approx(rows, abs=1e-9)


# -- structure --------------------------------------------------------------------------------------------
def test_buffers_and_attributes():
    fe = frontend()
    assert set(fe.state_dict()) == {"featurizer.window", "featurizer.fb"}
    assert fe.featurizer.fb.shape == (1, 80, 257)
    assert torch.equal(fe.featurizer.window, torch.hann_window(400, periodic=False))  # symmetric
    assert (fe.sample_rate, fe.hop_length, fe.n_mels, fe.n_fft) == (16000, 160, 80, 512)
    assert fe.window_stride == pytest.approx(0.01)
    fe.load_state_dict(frontend().state_dict(), strict=True)


def test_config_forms_and_defaults():
    legacy = MelFrontend.from_config(
        {"cls": "AudioToMelSpectrogramPreprocessor", "params": {"window_size": 0.02, "features": 64}}
    )
    assert (legacy.win_length, legacy.n_fft, legacy.n_mels) == (320, 512, 64)  # n_fft: next power of 2
    samples = MelFrontend.from_config({"n_window_size": 400, "n_window_stride": 128, "features": 40})
    assert (samples.win_length, samples.hop_length, samples.n_fft) == (400, 128, 512)
    assert set(MelFrontend.from_config({"window": "none"}).state_dict()) == {"featurizer.fb"}
    with pytest.raises(UnsupportedOptionError):
        MelFrontend.from_config({"window": "kaiser"})
    with pytest.raises(UnsupportedOptionError):
        MelFrontend.from_config({"log_zero_guard_type": "max"})


# -- forward ----------------------------------------------------------------------------------------------
def test_lengths_and_shapes():
    fe = frontend()
    x, lens = audio([16000, 16037, 159, 0])
    feats, flen = fe(x, lens)
    assert flen.dtype == torch.int64 and flen.tolist() == [100, 100, 0, 0]  # len // hop (>= 2.5 semantics)
    assert feats.shape == (4, 80, 16037 // 160 + 1)  # STFT frame count; the last frame is padding
    assert torch.all(feats[0, :, 100:] == 0) and torch.all(feats[2:] == 0)
    padded, _ = frontend(pad_to=16)(x, lens)
    assert padded.shape[-1] == 112 and torch.equal(padded[..., :101], feats)
    assert frontend(pad_to="max")(x, lens)[0].shape[-1] == math.floor(16.7 * 16000) // 160
    # exact_pad: floor((len + 2*((n_fft - hop)//2) - n_fft) / hop), never negative
    assert frontend(exact_pad=True)(x, lens)[1].tolist() == [99, 99, 0, 0]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"features": 128},
        {"normalize": "all_features"},
        {"normalize": "NA"},
        {"exact_pad": True},
        {"preemph": None, "window": "hamming", "mag_power": 1.0},
        {"frame_splicing": 2},
        {"log_zero_guard_type": "clamp", "log_zero_guard_value": "tiny"},
    ],
)
def test_batch_invariance(overrides):
    fe = frontend(**overrides)
    x, lens = audio([24000, 16037, 5000])
    with torch.inference_mode():
        batch, blen = fe(x, lens)
        for i, n in enumerate(lens.tolist()):
            alone, alen = fe(x[i : i + 1, :n], lens[i : i + 1])
            assert alen[0] == blen[i]
            t = int(alen[0])
            assert (alone[0, :, :t] - batch[i, :, :t]).abs().max() <= 1e-5


def test_per_feature_normalisation_statistics():
    feats, flen = frontend()(*audio([20000, 9000]))
    for i, t in enumerate(flen.tolist()):
        valid = feats[i, :, :t].double()
        assert valid.mean(dim=1).abs().max() < 1e-5
        assert (valid.std(dim=1) - 1).abs().max() < 1e-3  # unbiased std, +1e-5 on the std
        assert torch.all(feats[i, :, t:] == 0)


def test_all_features_and_fixed_normalisation():
    x, lens = audio([12000])
    raw, _ = frontend(normalize="NA")(x, lens)
    flat, _ = frontend(normalize="all_features")(x, lens)
    t = raw.shape[-1] - 1
    expected = (raw[..., :t] - raw[..., :t].mean()) / (raw[..., :t].std() + 1e-5)
    assert (flat[..., :t] - expected).abs().max() < 1e-4
    fixed, _ = frontend(normalize={"fixed_mean": [1.0] * 80, "fixed_std": [2.0] * 80})(x, lens)
    assert torch.allclose(fixed[..., :t], (raw[..., :t] - 1.0) / 2.0)


def test_log_guards_and_splicing():
    x = torch.zeros(1, 8000)  # silence: the mel energies are exactly zero
    lens = torch.tensor([8000])
    add, _ = frontend(normalize="NA")(x, lens)
    assert torch.allclose(add[..., :50], torch.full_like(add[..., :50], math.log(2**-24)))
    tiny, _ = frontend(normalize="NA", log_zero_guard_type="clamp", log_zero_guard_value="tiny")(x, lens)
    assert torch.allclose(
        tiny[..., :50], torch.full_like(tiny[..., :50], math.log(torch.finfo(torch.float32).tiny))
    )
    spliced, _ = frontend(frame_splicing=3)(*audio([8000]))
    assert spliced.shape[1] == 240 and torch.equal(spliced[:, :80], spliced[:, 160:])
