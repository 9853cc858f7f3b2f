"""One model version's queue and the policy that cuts dynamic batches from it."""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from repoman.backends import Backend, Batch
from repoman.manager import ModelVersion
from repoman.scheduler.stats import VersionStats
from repoman.tensors import batch_rows, shape_signature


class QueueState(enum.Enum):
    """OPEN accepts requests; CLOSING finishes what it holds and accepts nothing; CLOSED is done."""

    OPEN = "OPEN"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"


@dataclass(eq=False)
class Pending:
    """A request waiting in a queue: its inputs, the outputs it wants, and its future."""

    inputs: Mapping[str, np.ndarray]
    outputs: tuple[str, ...]
    rows: int
    signature: tuple[object, ...]
    future: asyncio.Future[Mapping[str, np.ndarray]]
    arrived: float


@dataclass(eq=False)
class VersionQueue:
    """Requests for one model version, the instances free to run them, and its batch policy.

    Batches follow Triton's dynamic batcher: up to ``max_batch_size`` rows (a request
    carrying 4 rows counts 4), cut as soon as the largest preferred size (or the maximum)
    is reached, else once the oldest request has waited ``max_queue_delay``; only requests
    whose non-batch shapes agree share a batch. Without ``dynamic_batching`` (or with
    ``max_batch_size: 0``) every request is its own execution.
    """

    version: ModelVersion
    state: QueueState = QueueState.OPEN
    pending: deque[Pending] = field(default_factory=deque)
    free: list[Backend] = field(default_factory=list)
    in_flight: int = 0
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    stats: VersionStats = field(default_factory=VersionStats)

    def __post_init__(self) -> None:
        config = self.version.config
        self.free = list(self.version.instances)
        self.batching = config.max_batch_size > 0
        dynamic = config.dynamic_batching if self.batching else None
        self.dynamic = dynamic is not None
        self.max_rows = config.max_batch_size if self.dynamic else 0
        self.delay = (dynamic.max_queue_delay_microseconds / 1e6) if dynamic else 0.0
        preferred = [
            p for p in (dynamic.preferred_batch_size if dynamic else ()) if p <= self.max_rows
        ]
        self.cut_rows = max(preferred) if preferred else self.max_rows
        self.input_names = tuple(tensor.name for tensor in config.inputs)
        self.output_order = tuple(tensor.name for tensor in config.outputs)
        self.queued_rows = 0

    def make_pending(
        self, inputs: Mapping[str, np.ndarray], outputs: tuple[str, ...], now: float
    ) -> Pending:
        loop = asyncio.get_running_loop()
        rows = batch_rows(inputs) if self.batching else 1
        return Pending(inputs, outputs, rows, shape_signature(inputs), loop.create_future(), now)

    def push(self, item: Pending) -> None:
        self.pending.append(item)
        self.queued_rows += item.rows

    def ready_at(self) -> float | None:
        """When the next batch may be cut (a loop time), or None if none can be (empty, or busy)."""
        self._drop_cancelled()
        if not self.pending or not self.free:
            return None
        head = self.pending[0]
        if not self.dynamic or self.delay == 0.0 or self.queued_rows >= self.cut_rows:
            return head.arrived
        if self.state is not QueueState.OPEN:
            return head.arrived  # NOTE: nothing more will arrive; waiting would only add latency
        return head.arrived + self.delay

    def take_batch(self) -> tuple[Backend, list[Pending], Batch]:
        """Cut the next batch and reserve an instance for it. Call only when ``ready_at`` is due."""
        instance = self.free.pop()
        taken = [self.pending.popleft()]
        if self.dynamic:
            rows = taken[0].rows
            limit = self.cut_rows if self.queued_rows >= self.cut_rows else self.max_rows
            skipped: list[Pending] = []
            while self.pending and rows < limit:
                item = self.pending[0]
                if item.future.done():
                    self.pending.popleft()
                    self.queued_rows -= item.rows
                elif rows + item.rows > limit:
                    break
                elif item.signature != taken[0].signature:
                    skipped.append(self.pending.popleft())
                else:
                    taken.append(self.pending.popleft())
                    rows += item.rows
            # NOTE: requests of another shape keep their place at the front of the queue.
            self.pending.extendleft(reversed(skipped))
        self.queued_rows -= sum(item.rows for item in taken)
        self.in_flight += 1
        wanted = set().union(*(item.outputs for item in taken))
        batch = Batch(
            requests=[item.inputs for item in taken],
            output_names=tuple(name for name in self.output_order if name in wanted),
            input_names=tuple(name for name in self.input_names if name in taken[0].inputs),
            batching=self.batching,
        )
        return instance, taken, batch

    def finish(self, instance: Backend) -> None:
        self.free.append(instance)
        self.in_flight -= 1
        self._check_drained()

    def close(self) -> None:
        if self.state is QueueState.OPEN:
            self.state = QueueState.CLOSING
        self._check_drained()

    def _check_drained(self) -> None:
        if self.state is not QueueState.OPEN and not self.pending and self.in_flight == 0:
            self.state = QueueState.CLOSED
            self.drained.set()

    def _drop_cancelled(self) -> None:
        while self.pending and self.pending[0].future.done():
            self.queued_rows -= self.pending.popleft().rows
        self._check_drained()
