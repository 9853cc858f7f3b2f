"""repoman.collector: young-generation passes rare, nothing frozen."""

from __future__ import annotations

import gc
import weakref

from repoman import collector


class Node:
    """An object in a reference cycle: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_settle_collects_start_up_garbage_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        left = Node()
        gone = weakref.ref(left)
        del left  # NOTE: a cycle start-up left behind
        collector.settle()
        assert gone() is None
        assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() == 0
    finally:
        gc.set_threshold(*before)


def test_a_cycle_made_after_settling_is_still_collected() -> None:
    # NOTE: a model loaded at start-up and unloaded later must not be kept forever
    before = gc.get_threshold()
    try:
        kept = Node()
        collector.settle()
        gone = weakref.ref(kept)
        del kept
        gc.collect()
        assert gone() is None
    finally:
        gc.set_threshold(*before)
