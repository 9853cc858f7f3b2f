"""Which loaded versions give way under the memory budget, and which have been idle too long (pure).

Every figure comes in as a plain number (bytes, seconds on the manager's clock), so the rules
are tested with tables and a made-up ``now``. A version is worth keeping in proportion to what
evicting it would cost: how likely it is to be asked for again soon (recency, with frequency as
a tie-breaker that grows slowly) times how long it takes to load again. With equal load times
this is least-recently-used; a model that takes ten times longer to load is kept as if it had
been used ten times more recently.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from repoman.memory import format_size

LOAD_FLOOR_SECONDS = 0.05
"""Load times are counted as at least this: a version that loads in no time still costs a
request its wait, and a zero would make every such version equally worthless."""
RECENCY_FLOOR_SECONDS = 1.0
"""Idle times are counted from this: two versions used within the same second differ by their
use counts and load times, not by which request came a millisecond later."""


@dataclass(frozen=True)
class Resident:
    """A version holding memory, as the eviction rules see it."""

    key: Hashable
    memory_bytes: int
    load_seconds: float
    last_used: float
    """When it last served a request (or was loaded, if it has served none since)."""
    uses: int = 0
    """Requests it served since it was loaded."""
    pinned: bool = False
    busy: bool = False
    """Loading, mid-swap or already being unloaded: never chosen."""
    idle_unload_seconds: float = 0.0
    label: str = ""
    """How reasons name it (``model version``)."""


class NoRoom(Exception):
    """``need`` bytes cannot be found: ``alone`` when the version is larger than the whole
    budget (no eviction can ever help)."""

    def __init__(self, message: str, *, alone: bool) -> None:
        super().__init__(message)
        self.alone = alone


def keep_value(resident: Resident, now: float) -> float:
    """How much evicting ``resident`` would cost: higher is kept longer."""
    idle = max(now - resident.last_used, 0.0) + RECENCY_FLOOR_SECONDS
    frequency = 1.0 + math.log1p(max(resident.uses, 0))
    return frequency * max(resident.load_seconds, LOAD_FLOOR_SECONDS) / idle


def evictable(resident: Resident) -> bool:
    return not resident.pinned and not resident.busy


def make_room(
    residents: Sequence[Resident], *, need: int, budget: int, now: float, label: str = ""
) -> list[Hashable]:
    """The keys to evict, cheapest to lose first, so that ``need`` more bytes fit in ``budget``
    next to what ``residents`` hold; ``[]`` when it fits already.

    Raises NoRoom when even evicting every candidate (not pinned, not busy) would not do.
    The choice is minimal: a version chosen early that a later, larger one made unneeded is
    kept after all.
    """
    used = sum(r.memory_bytes for r in residents)
    if need > budget:
        raise NoRoom(
            f"{label or 'it'} needs {format_size(need)}, more than the whole memory budget "
            f"({format_size(budget)})",
            alone=True,
        )
    excess = used + need - budget
    if excess <= 0:
        return []
    candidates = sorted(
        (r for r in residents if evictable(r)),
        key=lambda r: (keep_value(r, now), r.last_used, -r.memory_bytes),
    )
    chosen: list[Resident] = []
    freed = 0
    for resident in candidates:
        if freed >= excess:
            break
        chosen.append(resident)
        freed += resident.memory_bytes
    if freed < excess:
        held = [r for r in residents if not evictable(r)]
        what = ", ".join(
            f"{r.label or r.key} {format_size(r.memory_bytes)}"
            + (" pinned" if r.pinned else " busy")
            for r in held
        )
        raise NoRoom(
            f"{label or 'it'} needs {format_size(need)}; the memory budget "
            f"({format_size(budget)}) is held by versions that cannot be unloaded now"
            + (f" ({what})" if what else ""),
            alone=False,
        )
    for resident in list(reversed(chosen)):
        if freed - resident.memory_bytes >= excess:
            chosen.remove(resident)
            freed -= resident.memory_bytes
    return [r.key for r in chosen]


def idle_expired(residents: Sequence[Resident], now: float) -> list[Hashable]:
    """The keys of versions unused for longer than their ``idle_unload_seconds``."""
    return [
        r.key
        for r in residents
        if r.idle_unload_seconds > 0 and evictable(r) and now - r.last_used >= r.idle_unload_seconds
    ]
