"""The garbage collector of a serving process: young-generation passes rare.

Serving a request makes no reference cycle (tests/pipeline/test_cycles.py keeps it so): what a
request allocates is freed by reference counting once it is answered. The cyclic collector
then only ever finds the odd cycle (a closed connection's transport), yet by default it runs
a young-generation pass every 700 net allocations, each walking every container object in
flight, and with them now and then a full pass over every object the process holds. Measured
in the core under c64 load (a three-step ensemble, bench/pipeline.py), those passes took ~10%
of its time, the full ones 50-120 ms each.

Nothing is frozen (``gc.freeze``): a model loaded at start-up and unloaded later (a reload, an
eviction under the memory budget) must remain collectable, and frozen objects never are. The
core and the front-ends run repoman's code and the backends' (onnxruntime's and TensorFlow's
calls leave no cycles either); a python model's stub runs the user's code, which may make a
cycle per request holding its tensors, so it keeps Python's default.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Net allocations between two young-generation passes (Python's default: 700)."""


def settle() -> None:
    """Call once the process has started (its models loaded): what start-up left for the
    collector is collected now, and from then on the young generation is collected every
    ``YOUNG_THRESHOLD`` net allocations (the older generations' thresholds, counted in
    younger passes, are left as they are)."""
    gc.collect()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
