"""repoman.collector: a started process's objects frozen, young passes rare."""

from __future__ import annotations

import gc

from repoman import collector


def test_settle_freezes_what_exists_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        started = [object() for _ in range(10)]  # NOTE: plain objects: not tracked
        tracked = [[i] for i in range(1000)]
        collector.settle()
        assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() >= len(tracked)
        # NOTE: frozen objects are no generation's: no pass traverses them
        assert all(gc.is_tracked(t) for t in tracked)
        assert not any(any(t is o for o in gc.get_objects()) for t in tracked[:3])
        del started
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
