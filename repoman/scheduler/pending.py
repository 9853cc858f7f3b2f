"""A queued request (Pending) and the states of a version's queue."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from repoman.backends import Result
from repoman.scheduler.clock import Cancellable


class QueueState(enum.Enum):
    """OPEN accepts requests; CLOSING finishes what it holds and accepts nothing; CLOSED is done."""

    OPEN = "OPEN"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"


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
    """Called at once when the scheduler answers it after its batch ran (its future's own
    callbacks run an event-loop iteration later): an ensemble hands the next step on without
    waiting for that iteration. Any other ending (timeout, withdrawal) reaches the future."""
    compute: tuple[int, int, int] | None = None
    """Once executed: the compute input, infer and output nanoseconds of its batch (an
    ensemble adds up its steps' as Triton reports an ensemble's compute times)."""
