"""The garbage collector of a serving process: started objects set aside, collections rare.

Serving a request makes no reference cycle (tests/pipeline/test_cycles.py keeps it so): what a
request allocates is freed by reference counting once it is answered. The cyclic collector
then only ever finds the odd cycle (a closed connection's transport), yet by default it runs
a young-generation pass every 700 net allocations and now and then a full pass over every
object the process holds, imported modules and loaded models included. Measured in the core
under c64 load (a three-step ensemble, bench/pipeline.py), those passes took ~10% of its
time, the full ones 50-120 ms each.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Net allocations between two young-generation passes (Python's default: 700)."""


def settle() -> None:
    """Call once the process has started (its models loaded): what exists now lives about as
    long as the process, so it is collected once more and then frozen (no pass traverses it
    again), and the young generation is collected every ``YOUNG_THRESHOLD`` net allocations."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
