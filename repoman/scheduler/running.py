"""A batch on a worker (what to answer when it returns, or is written off) and the call itself."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from repoman.backends import Backend, Batch, Result
from repoman.calls import Caller, calls_through
from repoman.errors import BackendError, RepomanError
from repoman.manager.version import ModelVersion
from repoman.scheduler.clock import Cancellable
from repoman.scheduler.pending import Pending
from repoman.scheduler.queue import VersionQueue

Part = tuple[list[Pending], Batch]
"""The requests of one execution and the batch they form."""

Outcome = tuple[Sequence[Result] | BaseException | None, int, int]
"""One execution's results (or what it raised; None: skipped, every client of it gone), and
when it started and ended."""


@dataclass(eq=False, slots=True)
class Running:
    """Work handed to a worker in one go: one batch, or (a model without dynamic batching)
    several requests executed one after the other, so that one hand-off to the worker and
    one back serve them all. What to answer when it returns (or is written off)."""

    queue: VersionQueue
    instance: Backend
    parts: list[Part]
    handed: int
    work: Future[list[Outcome]] | None = None
    task: asyncio.Future[Sequence[Result]] | None = None
    """Instead of ``work``: the batch's results to come, on the event loop (``on_loop``)."""
    watchdog: Cancellable | None = None
    written_off: bool = False
    lent: bool = False
    """It made a call to a model and lent its worker's place while it waits (BLS)."""
    on_loop: bool = False
    """It runs on the event loop (``Backend.runs_on_loop``): it holds no worker."""
    finished: bool = False

    @property
    def taken(self) -> list[Pending]:
        return [item for taken, _ in self.parts for item in taken]

    def held(self) -> tuple[ModelVersion, ...]:
        """The instances a call from this work would wait on: its own, and (at least) those
        of the batches waiting for its requests, a version once per instance."""
        counts: Counter[ModelVersion] = Counter()
        for item in self.taken:
            for version, count in Counter(item.callers).items():
                counts[version] = max(counts[version], count)
        counts[self.queue.version] += 1
        return tuple(counts.elements())


def execute(instance: Backend, parts: list[Part], caller: Caller | None = None) -> list[Outcome]:
    """Run on a worker thread: each batch in turn; one that raises fails alone; one whose
    every client went away meanwhile is skipped. ``caller``: the door for the calls its
    model makes to models (``repoman.model_caller()`` within ``instance.execute``)."""
    with calls_through(caller):
        return _execute(instance, parts)


def _execute(instance: Backend, parts: list[Part]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for taken, batch in parts:
        started = time.perf_counter_ns()
        # NOTE: a racy read of another thread's future is fine here: at worst a request
        # cancelled this instant still runs, as it would have without the check.
        if len(parts) > 1 and all(item.future.done() for item in taken):
            outcomes.append((None, started, started))
            continue
        try:
            results: Sequence[Result] | BaseException = instance.execute(batch)
        except Exception as exc:
            results = exc
        outcomes.append((results, started, time.perf_counter_ns()))
    return outcomes


def settled(done: asyncio.Future[Sequence[Result]], started: int) -> Future[list[Outcome]]:
    """A batch that ran on the loop (``Backend.execute_async``), once done, as the outcome
    of :func:`execute` (what the scheduler reads when work returns)."""
    ended = time.perf_counter_ns()
    results: Sequence[Result] | BaseException
    if done.cancelled():
        results = RepomanError("the batch was cancelled")
    else:
        results = done.exception() or done.result()
    outcome: Future[list[Outcome]] = Future()
    outcome.set_result([(results, started, ended)])
    return outcome


def request_error(version: ModelVersion, error: Exception) -> RepomanError:
    if isinstance(error, RepomanError):
        return error
    return BackendError(
        f"model '{version.model}' version {version.version}: {type(error).__name__}: {error}"
    )
