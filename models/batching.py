"""Grouping utterances of similar length, so that padding stays a small share of the work."""

from __future__ import annotations

PADDING_WASTE = 0.15  # most padding a length group accepts, as a fraction of the real audio


def length_batches(lengths: list[int], batch_size: int, max_waste: float = PADDING_WASTE) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size`` similar lengths.

    Items are sorted by length and a batch is closed early when adding the next (longer) item would make
    padding more than ``max_waste`` of the real audio — padding a 1 s clip to 28 s costs more than a batch
    saves. Results do not depend on the grouping (batch invariance), only the speed does.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in order:
        padded = lengths[i] * (len(current) + 1)  # the new item is the longest so far
        if current and (len(current) == batch_size or padded > (1 + max_waste) * (total + lengths[i])):
            batches.append(current)
            current, total = [], 0
        current.append(i)
        total += lengths[i]
    if current:
        batches.append(current)
    return batches
