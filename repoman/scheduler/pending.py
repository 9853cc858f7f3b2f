"""A queued request (Pending) and the states of a version's queue."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from repoman.backends import Result
from repoman.scheduler.clock import Cancellable

log = logging.getLogger("repoman.scheduler.shared")


class QueueState(enum.Enum):
    """OPEN accepts requests; CLOSING finishes what it holds and accepts nothing; CLOSED is done."""

    OPEN = "OPEN"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """How a request asks to be served, beyond its tensors; one object from the edge to the
    queue (the dispatcher, a waiting request and an ensemble's steps hand it on)."""

    priority: int = 0
    """The queue's priority level (1 is the highest; 0: the model's default)."""
    timeout_us: int | None = None
    """The request's own queue timeout, where the queue policy allows one."""
    request_id: str = ""
    parameters: Mapping[str, Any] | None = None
    """Passed to the backend (a Python model sees them)."""
    callers: tuple[Any, ...] = ()
    """A call from inside batches (BLS): the versions whose instances those batches hold."""


PLAIN = RequestOptions()
"""A request that asks nothing beyond its tensors."""


@dataclass(eq=False, slots=True)
class Pending:
    """A request in a queue: its inputs, the outputs it wants, its future and its deadline."""

    inputs: Mapping[str, np.ndarray]
    outputs: tuple[str, ...]
    rows: int
    signature: tuple[object, ...]
    future: asyncio.Future[Mapping[str, np.ndarray]]
    arrived: float
    level: int = 0
    deadline: float | None = None
    timer: Cancellable | None = None
    queued: bool = True
    delayed: bool = False
    result: Result | None = None
    queue: Any = None
    """The VersionQueue holding it (set on admission), for withdrawing it."""
    request_id: str = ""
    parameters: Mapping[str, Any] | None = None
    callers: tuple[Any, ...] = ()
    """A call from inside batches (BLS): the versions whose instances the batches waiting
    for it hold (a version once per instance held)."""
    on_answer: Callable[[], None] | None = None
    """Called at once whenever the scheduler ends it, its future settled: answered after its
    batch ran, failed, timed out, or failed with its closing queue (its future's own callbacks
    run an event-loop iteration later). An ensemble hands the next step on without waiting
    for that iteration, and needs no future callback. A withdrawal by its caller (the one
    ending the scheduler does not make) does not call it."""
    compute: tuple[int, int, int] | None = None
    """Once executed: the compute input, infer and output nanoseconds of its batch (an
    ensemble adds up its steps' as Triton reports an ensemble's compute times)."""
    group: Group | None = None
    """A group (``SharedScheduler.enqueue_group``): the requests it stands for, queued,
    batched, timed and answered as one, executed as the requests they are; its future's
    result is then one Result per request (an exception for a request that failed alone).
    ``inputs`` are the first request's."""
    count: int = 1
    """The requests it stands for (a group's)."""
    on_split: Callable[[Pending], None] | None = None
    """For a group that may be split to fill a batch: told of the new group its leading
    requests were taken into (answered on its own: give it an ``on_answer``); this one keeps
    the rest."""

    def ended(self) -> None:
        """Tell ``on_answer`` that the scheduler ended this request (a failing listener is
        logged, as a failing future callback would be, never fatal)."""
        # NOTE: let go of the listener first: it holds this request (a reference cycle that
        # only the garbage collector would free, for every step of every ensemble request)
        listener, self.on_answer = self.on_answer, None
        if listener is not None:
            try:
                listener()
            except Exception:
                log.exception("a request's answer listener failed")


@dataclass(eq=False, slots=True)
class Group:
    """Requests queued as one (an ensemble's requests that move through a step together):
    each one's inputs, rows, id and parameters."""

    inputs: Sequence[Mapping[str, np.ndarray]]
    rows: list[int]
    request_ids: list[str]
    parameters: list[Mapping[str, Any] | None]

    def part(self, start: int, end: int) -> Group:
        """The requests from ``start`` to ``end`` (this group itself when that is all of it)."""
        if start == 0 and end >= len(self.inputs):
            return self
        return Group(
            self.inputs[start:end],
            self.rows[start:end],
            self.request_ids[start:end],
            self.parameters[start:end],
        )
