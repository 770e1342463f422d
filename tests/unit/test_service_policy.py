"""``next_batch`` as a pure function: budget, duration sorting, options grouping, cancelled items."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from service.batching.policy import next_batch, padded_seconds


@dataclass(eq=False)
class Item:
    duration: float
    options: str = "a"
    cancelled: bool = False


def durations(items: list[Item]) -> list[float]:
    return [i.duration for i in items]


def test_empty_and_all_cancelled() -> None:
    assert next_batch([], 8, 100) == ([], [])
    assert next_batch([Item(1, cancelled=True), Item(2, cancelled=True)], 8, 100) == ([], [])


def test_takes_everything_within_budget_sorted_by_duration() -> None:
    items = [Item(3), Item(1), Item(2)]
    batch, rest = next_batch(items, 8, 100)
    assert durations(batch) == [1, 2, 3]
    assert rest == []


def test_max_items_caps_the_batch() -> None:
    items = [Item(1.0 + i / 100) for i in range(10)]
    batch, rest = next_batch(items, 4, 1000)
    assert len(batch) == 4 and items[0] in batch
    assert len(rest) == 6
    assert rest == [i for i in items if i not in batch]  # rest keeps arrival order


def test_padded_budget_is_max_duration_times_count() -> None:
    items = [Item(10), Item(10), Item(10), Item(10)]
    batch, rest = next_batch(items, 100, 30)
    assert len(batch) == 3 and padded_seconds(batch) == 30
    assert len(rest) == 1


def test_long_outlier_is_not_batched_with_short_items() -> None:
    # 1 long (60 s) + many short: padding the short ones to 60 s would blow the budget.
    items = [Item(1.0), Item(1.1), Item(60.0), Item(0.9), Item(1.2)]
    batch, rest = next_batch(items, 16, 20)
    assert durations(batch) == [0.9, 1.0, 1.1, 1.2]
    assert durations(rest) == [60.0]


def test_groups_neighbours_in_duration_around_the_oldest() -> None:
    items = [Item(5.0), Item(1.0), Item(5.2), Item(9.0), Item(4.9), Item(1.1)]
    batch, _ = next_batch(items, 3, 1000)
    assert durations(batch) == [4.9, 5.0, 5.2]  # the oldest (5.0) and its nearest neighbours


def test_oldest_item_always_goes_even_over_budget() -> None:
    items = [Item(50.0), Item(1.0)]
    batch, rest = next_batch(items, 8, 10)
    assert durations(batch) == [50.0]
    assert durations(rest) == [1.0]


def test_only_items_with_the_oldest_items_options_share_its_batch() -> None:
    items = [Item(1, "ts"), Item(1, "plain"), Item(2, "ts"), Item(2, "plain")]
    batch, rest = next_batch(items, 8, 100)
    assert [i.options for i in batch] == ["ts", "ts"]
    assert [i.options for i in rest] == ["plain", "plain"]
    batch2, rest2 = next_batch(rest, 8, 100)
    assert len(batch2) == 2 and rest2 == []


def test_cancelled_items_are_skipped_and_dropped() -> None:
    gone = Item(1.0, cancelled=True)
    items = [gone, Item(2.0), Item(3.0, cancelled=True), Item(4.0)]
    batch, rest = next_batch(items, 8, 100)
    assert durations(batch) == [2.0, 4.0]
    assert rest == []


def test_a_cancelled_head_does_not_choose_the_options() -> None:
    items = [Item(1, "x", cancelled=True), Item(1, "y"), Item(1, "x")]
    batch, rest = next_batch(items, 8, 100)
    assert [i.options for i in batch] == ["y"]
    assert [i.options for i in rest] == ["x"]


def test_is_pure() -> None:
    items = [Item(3), Item(1), Item(2)]
    snapshot = list(items)
    first = next_batch(items, 2, 100)
    assert items == snapshot
    assert next_batch(items, 2, 100) == first


@pytest.mark.parametrize("max_items,budget", [(1, 1000), (3, 1000), (100, 7.5), (5, 12)])
def test_every_batch_respects_the_limits(max_items: int, budget: float) -> None:
    import random

    rng = random.Random(0)
    pending = [Item(round(rng.uniform(0.5, 3.0), 2), rng.choice("ab")) for _ in range(60)]
    seen = 0
    while pending:
        batch, pending = next_batch(pending, max_items, budget)
        assert batch and len(batch) <= max_items
        assert len(batch) == 1 or padded_seconds(batch) <= budget
        assert len({i.options for i in batch}) == 1
        seen += len(batch)
    assert seen == 60


def test_padding_waste_bound_keeps_long_items_apart() -> None:
    items = [Item(1.0), Item(28.0), Item(1.2), Item(5.0), Item(4.6), Item(1.1)]
    batch, rest = next_batch(items, 16, 1000, max_waste=0.15)
    assert durations(batch) == [1.0, 1.1, 1.2]  # the oldest item's neighbours, not padded to 28 s
    assert max(durations(batch)) * len(batch) <= 1.15 * sum(durations(batch))
    batch, _ = next_batch(rest, 16, 1000, max_waste=0.15)
    assert durations(batch) == [28.0]  # alone: even its nearest neighbour would waste far more than 15 %
    assert len(next_batch(items, 16, 1000)[0]) == 6  # unbounded by default
