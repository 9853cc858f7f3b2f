"""The eviction rules as tables: residents, a need and a made-up clock -> the versions that go."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from repoman.manager.eviction import NoRoom, Resident, idle_expired, keep_value, make_room

MB = 1 << 20
NOW = 10_000.0  # the fake clock: every time below is NOW minus how long ago


def r(
    key: str,
    mb: int = 10,
    *,
    ago: float = 0.0,
    load: float = 1.0,
    uses: int = 1,
    pinned: bool = False,
    busy: bool = False,
    idle: float = 0.0,
) -> Resident:
    return Resident(key, mb * MB, load, NOW - ago, uses, pinned, busy, idle, key)


@dataclass(frozen=True)
class Row:
    residents: list[Resident]
    need_mb: int
    budget_mb: int
    expected: list[str]


ROWS = {
    "it fits: nothing goes": Row([r("a"), r("b")], 10, 40, []),
    "exactly full: nothing goes": Row([r("a"), r("b")], 10, 30, []),
    "least recently used goes first": Row(
        [r("a", ago=5), r("b", ago=50), r("c", ago=20)], 10, 30, ["b"]
    ),
    "as many as needed, least recent first": Row(
        [r("a", ago=5), r("b", ago=50), r("c", ago=20)], 20, 30, ["b", "c"]
    ),
    "a slow loader is kept over a more recent fast one": Row(
        # a: used 30 s ago, takes 20 s to load; b: used 3 s ago, loads in 0.1 s
        [r("a", ago=30, load=20), r("b", ago=3, load=0.1)],
        10,
        20,
        ["b"],
    ),
    "equal load times: plain LRU, however often each served": Row(
        [r("a", ago=100, uses=1), r("b", ago=10, uses=1)], 10, 20, ["a"]
    ),
    "frequency breaks a near tie": Row(
        [r("a", ago=10, uses=1000), r("b", ago=9, uses=1)], 10, 20, ["b"]
    ),
    "two uses within the same second: the frequent one stays": Row(
        [r("a", ago=0.002, uses=5), r("b", ago=0.001, uses=1)], 10, 20, ["b"]
    ),
    "pinned never goes": Row([r("a", ago=500, pinned=True), r("b", ago=1)], 10, 20, ["b"]),
    "busy (loading, mid-swap) never goes": Row(
        [r("a", ago=500, busy=True), r("b", ago=1)], 10, 20, ["b"]
    ),
    "one large one instead of many small ones once it is needed anyway": Row(
        [r("s1", 1, ago=100), r("s2", 1, ago=90), r("big", 20, ago=80), r("new", 5, ago=1)],
        20,
        30,
        ["big"],
    ),
    "small ones before a large one when they are enough": Row(
        [r("s1", 5, ago=100), r("s2", 5, ago=90), r("big", 20, ago=80)], 10, 30, ["s1", "s2"]
    ),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_make_room(row: Row) -> None:
    found = make_room(row.residents, need=row.need_mb * MB, budget=row.budget_mb * MB, now=NOW)
    assert sorted(found) == sorted(row.expected)


def test_a_version_larger_than_the_budget_never_fits_and_says_so() -> None:
    with pytest.raises(NoRoom, match=r"needs 40.0 MiB, more than the whole memory budget") as info:
        make_room([r("a")], need=40 * MB, budget=30 * MB, now=NOW, label="big version 1")
    assert info.value.alone


def test_pinned_and_busy_versions_can_leave_no_room_and_are_named() -> None:
    with pytest.raises(NoRoom, match=r"held by versions that cannot be unloaded now") as info:
        make_room(
            [r("a", pinned=True), r("b", busy=True), r("c", 5)],
            need=20 * MB,
            budget=30 * MB,
            now=NOW,
        )
    assert not info.value.alone
    assert "a 10.0 MiB pinned" in str(info.value) and "b 10.0 MiB busy" in str(info.value)


def test_the_clock_moving_changes_the_order() -> None:
    """Two versions, one used at t=0 and one at t=60; at t=61 the first is the older."""
    a = Resident("a", 10 * MB, 1.0, 0.0, 1)
    b = Resident("b", 10 * MB, 1.0, 60.0, 1)
    assert make_room([a, b], need=10 * MB, budget=20 * MB, now=61.0) == ["a"]
    b_then_a = Resident("a", 10 * MB, 1.0, 120.0, 1)  # a is used again at t=120
    assert make_room([b_then_a, b], need=10 * MB, budget=20 * MB, now=121.0) == ["b"]


def test_keep_value_grows_with_load_time_and_shrinks_with_idleness() -> None:
    assert keep_value(r("a", load=10), NOW) > keep_value(r("a", load=1), NOW)
    assert keep_value(r("a", ago=100), NOW) < keep_value(r("a", ago=1), NOW)


IDLE_ROWS = {
    "no ttl: never idle": ([r("a", ago=1e6)], []),
    "past its ttl": ([r("a", ago=61, idle=60), r("b", ago=59, idle=60)], ["a"]),
    "exactly at its ttl": ([r("a", ago=60, idle=60)], ["a"]),
    "pinned outlives its ttl": ([r("a", ago=600, idle=60, pinned=True)], []),
    "busy outlives its ttl": ([r("a", ago=600, idle=60, busy=True)], []),
}


@pytest.mark.parametrize("residents, expected", IDLE_ROWS.values(), ids=IDLE_ROWS.keys())
def test_idle_expired(residents: list[Resident], expected: list[str]) -> None:
    assert idle_expired(residents, NOW) == expected
