"""When a version's executions run on the event loop itself instead of a worker thread."""

from __future__ import annotations

from collections import deque

INLINE_BELOW_NS = 200_000
"""An execution quicker than this may run on the loop: about twice what handing it
to a worker thread and back costs (wake-ups on both sides, and the loop and the worker
taking the GIL from each other at every step)."""

LEAVE_ABOVE_NS = 2 * INLINE_BELOW_NS
"""A version on the loop goes back to the workers once its executions take longer than this:
a band above ``INLINE_BELOW_NS``, so a version measuring about the limit does not swap sides
every few hundred executions. Swapping costs more than either side (on a busy 2-core machine
the iris member of the bundled ensemble measured 200-340 µs both on the loop and on a worker,
swapped about once a second, and the core's CPU per request rose 40-90%), and on a loaded
machine an execution measures slower on both sides alike (cold caches), not only on the loop."""

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
the workers at once (one may be a garbage collection or the OS preempting the thread)."""


class InlineGate:
    """Whether a version's next run goes on the loop, from how long its executions take.

    Only a version whose backend allows it (``Backend.may_run_inline``) ever runs inline. It
    starts on the workers, where an execution is measured by its thread's CPU time (its wall
    time there includes waiting for the GIL while the loop is busy). Once the median of its
    last ``WINDOW`` executions is under ``INLINE_BELOW_NS``, its runs go on the loop, where
    what counts is how long they hold it: their wall time. It goes back to the workers when
    the median of its last ``WINDOW`` executions on the loop reaches ``LEAVE_ABOVE_NS``, or at
    once when a second one passes ``STRAY_NS``. The median, not the mean: a garbage
    collection, or the OS preempting the thread, now and then makes a 15 µs execution measure
    milliseconds, and says nothing about the model. Each time it goes back, it stays on the
    workers for a cool-down (``COOL_DOWN`` executions, doubling each time up to
    ``LONGEST_COOL_DOWN``): a backend whose CPU time understates its wall time (one computing
    on threads of its own) tries the loop ever more rarely. And an execution on the loop never
    carries more than ``OUTSIZED`` times the version's usual input elements (the median of its
    last ``WINDOW``): a run holding one goes to a worker, however quick the version is.
    """

    __slots__ = ("_cool_down", "_hold", "_recent", "_sizes", "allowed", "inline")

    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed
        self.inline = False
        """Whether the next run goes on the loop."""
        self._recent: deque[int] = deque(maxlen=WINDOW)
        self._sizes: deque[int] = deque(maxlen=WINDOW)
        """Input elements of the last executions (their median is the usual size)."""
        self._hold = 0
        self._cool_down = COOL_DOWN

    def run_length(self, most: int) -> int:
        """How many executions (at most ``most``) the next run on the loop may do."""
        return max(1, min(most, INLINE_RUN_NS // max(self._median(), 1)))

    def fits(self, elements: int) -> bool:
        """Whether an execution with ``elements`` input elements may run on the loop: not
        more than ``OUTSIZED`` times the version's usual size."""
        sizes = self._sizes
        return not sizes or elements <= OUTSIZED * max(sorted(sizes)[len(sizes) // 2], 1)

    def observe(self, ns: int, inline: bool, elements: int = 0) -> bool:
        """One execution of ``elements`` input elements took ``ns`` nanoseconds: on the loop
        (``inline``) its wall time, on a worker its CPU time. Whether the version's runs
        switched sides."""
        if not self.allowed:
            return False
        self._sizes.append(elements)
        if inline is not self.inline:
            return False  # NOTE: a run from before the last switch
        recent = self._recent
        recent.append(ns)
        if inline:
            strays = sum(1 for taken in recent if taken > STRAY_NS)
            if strays < 2 and self._median() < LEAVE_ABOVE_NS:
                return False
            self.inline = False
            self._hold = self._cool_down
            self._cool_down = min(2 * self._cool_down, LONGEST_COOL_DOWN)
            recent.clear()
            return True
        if self._hold:
            self._hold -= 1
            return False
        if len(recent) < WINDOW or self._median() >= INLINE_BELOW_NS:
            return False
        self.inline = True
        return True

    def _median(self) -> int:
        return sorted(self._recent)[len(self._recent) // 2]
