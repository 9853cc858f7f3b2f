"""When a version's executions run on the event loop itself instead of a worker thread."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Executor

INLINE_BELOW_NS = 200_000
"""The least limit under which an execution may run on the loop. The limit is about twice
what handing an execution to a worker thread and back costs (wake-ups on both sides, and
the loop and the worker taking the GIL from each other at every step), measured on the
machine (:func:`inline_limit`): on the machine this was first tuned on, 200 µs; on a slower
one, more."""

MOST_BELOW_NS = 5 * INLINE_BELOW_NS
"""The highest limit, however slow hand-offs measure (a busy machine at start-up)."""

LEAVE_ABOVE_NS = 2 * INLINE_BELOW_NS
"""A version on the loop goes back to the workers once its executions take longer than this
(for the default limit; twice the limit, whatever it is): a band above the limit, so a version
measuring about the limit does not swap sides every few hundred executions. Swapping costs
more than either side (on a busy 2-core machine the iris member of the bundled ensemble
measured 200-340 µs both on the loop and on a worker, swapped about once a second, and the
core's CPU per request rose 40-90%), and on a loaded machine an execution measures slower on
both sides alike (cold caches), not only on the loop."""

INLINE_RUN_NS = 1_000_000
"""About the longest one run of inline executions holds the loop (a model without dynamic
batching runs the requests waiting for it in one go)."""

WINDOW = 8
"""Executions measured before the decision (and the ones it rests on)."""

COOL_DOWN = 64
"""Executions on workers, after a version left the loop, before it may come back (doubling
each time it leaves, up to ``LONGEST_COOL_DOWN``)."""

LONGEST_COOL_DOWN = 4096

OUTSIZED = 4
"""A run whose largest execution carries more than this many times the input elements of the
version's usual execution goes to a worker however quick the version is (an input that would
hold the loop for much longer than its executions have)."""

STRAY_NS = 20_000_000
"""Two executions on the loop this long among the last ``WINDOW`` send the version back to
the workers at once (one may be a garbage collection): their wall time where the loop thread
blocked during their run, else their CPU time (a run only preempted is no stray)."""


def _nothing() -> None:
    return None


def inline_limit(pool: Executor, calls: int = 8, tries: int = 5) -> int:
    """The limit under which a version's executions run on the loop, for hand-offs to
    ``pool``'s threads on this machine: four times a bare round trip to a worker (a call that
    does nothing, its result awaited), the least CPU time of ``tries`` averages over ``calls``
    (other threads at work inflate it, never deflate it). A hand-off from the event loop costs
    about twice a bare round trip (the worker also wakes the loop through its self-pipe, and
    the loop takes the answer in a callback: 200 against 100-115 µs on a 2-core machine where
    the 200 µs limit left a tiny model swapping sides every second), so the limit stays about
    twice a hand-off. Between ``INLINE_BELOW_NS`` and ``MOST_BELOW_NS``. Blocks for ``calls *
    tries`` round trips (a few ms): call it while the pool is idle."""
    least = None
    for _ in range(tries):
        started = time.process_time_ns()
        for _ in range(calls):
            pool.submit(_nothing).result()
        each = (time.process_time_ns() - started) // calls
        least = each if least is None else min(least, each)
    return max(INLINE_BELOW_NS, min(4 * (least or 0), MOST_BELOW_NS))


class InlineGate:
    """Whether a version's next run goes on the loop, from how long its executions take.

    Only a version whose backend allows it (``Backend.may_run_inline``: it computes on the
    calling thread) ever runs inline. Its executions are measured by their thread's CPU time,
    on a worker and on the loop alike: their wall time includes waiting for the GIL and for a
    CPU (on a busy 2-core machine, executions of 100-400 µs measured 1-10 ms in bursts and
    sent a tiny model back to the workers every second or two), which would hold the loop
    wherever the model ran. It starts on the workers. Once the median of its last ``WINDOW``
    executions is under the limit (``below_ns``: by default ``INLINE_BELOW_NS``; the
    scheduler's is measured, :func:`inline_limit`), its runs go on the loop. It goes back to
    the workers when the median of its last ``WINDOW`` executions on the loop reaches twice
    the limit, or at once when a second one takes ``STRAY_NS`` (its wall time, where its run
    blocked: a backend that blocks after all). The median, not the mean: a garbage
    collection now and then makes a 15 µs execution measure milliseconds, and says nothing
    about the model. Each time it goes back, it stays on the workers for a cool-down
    (``COOL_DOWN`` executions, doubling each time up to ``LONGEST_COOL_DOWN``), so a version
    measuring about the limit tries the loop ever more rarely. And an execution on the loop
    never carries more than ``OUTSIZED`` times the version's usual input elements (the median
    of its last ``WINDOW``): a run holding one goes to a worker, however quick the version is.
    """

    __slots__ = (
        "_below",
        "_cool_down",
        "_hold",
        "_leave",
        "_recent",
        "_sizes",
        "_walls",
        "allowed",
        "inline",
        "judged_ns",
    )

    def __init__(self, allowed: bool, below_ns: int = INLINE_BELOW_NS) -> None:
        self.allowed = allowed
        self._below = below_ns
        self._leave = 2 * below_ns
        self.judged_ns = 0
        """The median the last switch rested on."""
        self.inline = False
        """Whether the next run goes on the loop."""
        self._recent: deque[int] = deque(maxlen=WINDOW)
        self._walls: deque[int] = deque(maxlen=WINDOW)
        """Wall times of the last executions on the loop (for strays)."""
        self._sizes: deque[int] = deque(maxlen=WINDOW)
        """Input elements of the last executions (their median is the usual size)."""
        self._hold = 0
        self._cool_down = COOL_DOWN

    @property
    def below_ns(self) -> int:
        """The limit: executions quicker than this may run on the loop."""
        return self._below

    def run_length(self, most: int) -> int:
        """How many executions (at most ``most``) the next run on the loop may do."""
        return max(1, min(most, INLINE_RUN_NS // max(self._median(), 1)))

    def fits(self, elements: int) -> bool:
        """Whether an execution with ``elements`` input elements may run on the loop: not
        more than ``OUTSIZED`` times the version's usual size."""
        sizes = self._sizes
        return not sizes or elements <= OUTSIZED * max(sorted(sizes)[len(sizes) // 2], 1)

    def observe(self, ns: int, inline: bool, elements: int = 0, wall_ns: int | None = None) -> bool:
        """One execution of ``elements`` input elements took ``ns`` nanoseconds of its
        thread's CPU time (``wall_ns`` of wall time where it blocked; None: it never blocked,
        its CPU time stands for both), on the loop (``inline``) or on a worker. Whether the
        version's runs switched sides."""
        if not self.allowed:
            return False
        self._sizes.append(elements)
        if inline is not self.inline:
            return False  # NOTE: a run from before the last switch
        recent = self._recent
        recent.append(ns)
        if inline:
            walls = self._walls
            walls.append(ns if wall_ns is None else wall_ns)
            strays = sum(1 for taken in walls if taken > STRAY_NS)
            if strays < 2 and self._median() < self._leave:
                return False
            self.judged_ns = self._median()
            self.inline = False
            self._hold = self._cool_down
            self._cool_down = min(2 * self._cool_down, LONGEST_COOL_DOWN)
            recent.clear()
            walls.clear()
            return True
        if self._hold:
            self._hold -= 1
            return False
        if len(recent) < WINDOW or self._median() >= self._below:
            return False
        self.judged_ns = self._median()
        self.inline = True
        return True

    def _median(self) -> int:
        return sorted(self._recent)[len(self._recent) // 2]
