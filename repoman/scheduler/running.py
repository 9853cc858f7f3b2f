"""A batch on a worker (what to answer when it returns, or is written off) and the call itself."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from repoman.backends import Backend, Batch, Result
from repoman.errors import BackendError, RepomanError
from repoman.manager.version import ModelVersion
from repoman.scheduler.clock import Cancellable
from repoman.scheduler.pending import Pending
from repoman.scheduler.queue import VersionQueue


@dataclass(eq=False, slots=True)
class Running:
    """One batch on a worker: what to answer when it returns (or is written off)."""

    queue: VersionQueue
    instance: Backend
    taken: list[Pending]
    batch: Batch
    handed: int
    work: Future[tuple[Sequence[Result], int, int]] | None = None
    watchdog: Cancellable | None = None
    written_off: bool = False


def execute(instance: Backend, batch: Batch) -> tuple[Sequence[Result], int, int]:
    """Run on a worker thread: the results, and when execution started and ended."""
    started = time.perf_counter_ns()
    results = instance.execute(batch)
    return results, started, time.perf_counter_ns()


def request_error(version: ModelVersion, error: Exception) -> RepomanError:
    if isinstance(error, RepomanError):
        return error
    return BackendError(
        f"model '{version.model}' version {version.version}: {type(error).__name__}: {error}"
    )
