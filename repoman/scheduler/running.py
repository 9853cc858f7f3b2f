"""A batch on a worker (what to answer when it returns, or is written off) and the call itself."""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

try:
    import resource
except ImportError:  # NOTE: not on Windows
    resource = None  # type: ignore[assignment]

from repoman.backends import Backend, Batch, Result
from repoman.calls import Caller, calls_through
from repoman.errors import BackendError, RepomanError
from repoman.manager.version import ModelVersion
from repoman.scheduler.clock import Cancellable
from repoman.scheduler.pending import Pending
from repoman.scheduler.queue import VersionQueue

RUSAGE_THREAD: int | None = getattr(resource, "RUSAGE_THREAD", None) if resource else None
_ticks = itertools.count()


def waits_so_far() -> int:
    """How many times the calling thread has blocked (given up its CPU of its own accord) so
    far. Where the system does not say (no ``RUSAGE_THREAD``), a number that changes at every
    call: every run then counts as having blocked."""
    if RUSAGE_THREAD is None:
        return next(_ticks)
    return resource.getrusage(RUSAGE_THREAD).ru_nvcsw


Part = tuple[list[Pending], Batch]
"""The requests of one execution and the batch they form."""


class Skipped(enum.Enum):
    """An execution not run: every client of it went away before its turn."""

    SKIPPED = "skipped"


SKIPPED = Skipped.SKIPPED

Outcome = tuple[Sequence[Result] | BaseException | Skipped, int, int, int]
"""One execution's results (or what it raised, or SKIPPED), when it started and ended, and
the CPU time its thread spent on it. The results are what the backend returned, unchecked
(``answers.answer_execution`` checks them)."""


@dataclass(eq=False, slots=True)
class Running:
    """Work handed to a worker in one go: one batch, or (a model without dynamic batching)
    every request waiting for the instance, each executed alone, one after the other, so
    that one hand-off to the worker serves them all. What to answer when it returns (or is
    written off).

    A run of several parts streams its outcomes back as they come (``outbox``): the worker
    wakes the loop only when no wake-up is pending (``posted``), so a busy loop collects
    many outcomes per wake-up, and an early request is not held until the run ends.
    """

    queue: VersionQueue
    instance: Backend
    parts: list[Part]
    handed: int
    """When it was handed to the worker; then when its last answered part ended."""
    work: Future[list[Outcome]] | None = None
    task: asyncio.Future[Sequence[Result]] | None = None
    """Instead of ``work``: the batch's results to come, on the event loop (``on_loop``)."""
    watchdog: Cancellable | None = None
    written_off: bool = False
    lent: bool = False
    """It made a call to a model and lent its worker's place while it waits (BLS)."""
    on_loop: bool = False
    """It runs on the event loop (``Backend.runs_on_loop``): it holds no worker."""
    inline: bool = False
    """It was executed on the loop thread itself (``InlineGate``), done before it started."""
    waited: bool = True
    """Inline: the loop thread blocked (gave up its CPU of its own accord) during the run, so
    its executions' wall time is theirs, not the OS's or the hypervisor's (``waits_so_far``)."""
    sizes: list[int] | None = None
    """Each part's input elements, for a version that may run on the loop (``InlineGate``)."""
    finished: bool = False
    answered: int = 0
    """Parts answered so far (in order; streamed ones included)."""
    outbox: deque[Outcome] = field(default_factory=deque)
    posted: bool = False

    @property
    def taken(self) -> list[Pending]:
        return [item for taken, _ in self.parts for item in taken]

    @property
    def unanswered(self) -> list[Pending]:
        return [item for taken, _ in self.parts[self.answered :] for item in taken]

    def held(self) -> tuple[ModelVersion, ...]:
        """The instances a call from this work would wait on: its own, and (at least) those
        of the batches waiting for its requests, a version once per instance."""
        counts: Counter[ModelVersion] = Counter()
        for item in self.taken:
            for version, count in Counter(item.callers).items():
                counts[version] = max(counts[version], count)
        counts[self.queue.version] += 1
        return tuple(counts.elements())


Timer = Callable[[], int]
"""Nanoseconds, monotonic: what a worker times executions with (``time.perf_counter_ns``;
a test's fake clock decides how long each execution took)."""


def execute(
    instance: Backend,
    parts: list[Part],
    caller: Caller | None = None,
    progress: Callable[[Outcome], None] | None = None,
    timer: Timer = time.perf_counter_ns,
    cpu_timer: Timer = time.thread_time_ns,
) -> list[Outcome]:
    """Run on a worker thread: each batch in turn; one that raises fails alone; one whose
    every client went away meanwhile is skipped. ``caller``: the door for the calls its
    model makes to models (``repoman.model_caller()`` within ``instance.execute``);
    ``progress``: told each outcome as soon as it is known (every one but the last);
    ``cpu_timer``: the calling thread's CPU time (what an execution cost, without its waits
    for the GIL or the OS, however busy the event loop is)."""
    with calls_through(caller):
        return run_parts(instance, parts, progress, timer, cpu_timer)


def run_parts(
    instance: Backend,
    parts: list[Part],
    progress: Callable[[Outcome], None] | None,
    timer: Timer,
    cpu_timer: Timer,
) -> list[Outcome]:
    """:func:`execute` without a door for calls (none is open)."""
    outcomes: list[Outcome] = []
    last = len(parts) - 1
    # NOTE: one CPU clock reading per execution (each is a system call): where one ends,
    # the next starts, unless telling the loop of progress came between them.
    cpu = cpu_timer()
    for index, (taken, batch) in enumerate(parts):
        started = timer()
        # NOTE: a racy read of another thread's future is fine here: at worst a request
        # cancelled this instant still runs, as it would have without the check.
        if last and all(item.future.done() for item in taken):
            outcome: Outcome = (SKIPPED, started, started, 0)
        else:
            try:
                results: Sequence[Result] | BaseException = instance.execute(batch)
            except Exception as exc:
                results = exc
            ended = timer()
            began, cpu = cpu, cpu_timer()
            outcome = (results, started, ended, cpu - began)
        outcomes.append(outcome)
        if progress is not None and index < last:
            progress(outcome)
            cpu = cpu_timer()
    return outcomes


def loop_outcome(done: asyncio.Future[Sequence[Result]], started: int) -> Outcome:
    """A batch that ran on the loop (``Backend.execute_async``), once done, as the outcome
    :func:`execute` gives for a batch."""
    ended = time.perf_counter_ns()
    results: Sequence[Result] | BaseException
    if done.cancelled():
        results = RepomanError("the batch was cancelled")
    else:
        results = done.exception() or done.result()
    return (results, started, ended, 0)


def request_error(version: ModelVersion, error: Exception) -> RepomanError:
    if isinstance(error, RepomanError):
        return error
    return BackendError(
        f"model '{version.model}' version {version.version}: {type(error).__name__}: {error}"
    )
