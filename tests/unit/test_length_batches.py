"""transcribe()'s length-bucketed batches (models/asr_model.length_batches)."""

from __future__ import annotations

from models.asr_model import length_batches


def test_length_batches_bound_padding():
    lengths = [3, 1, 28, 5, 5, 4, 1]
    batches = length_batches(lengths, batch_size=16)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        real = sum(lengths[i] for i in b)
        assert max(lengths[i] for i in b) * len(b) <= 1.15 * real or len(b) == 1
    assert [2] in batches  # the long clip is never padded against short ones
    assert all(len(b) <= 2 for b in length_batches(lengths, batch_size=2))
    assert length_batches([7, 7, 7, 7], batch_size=3) == [[0, 1, 2], [3]]
