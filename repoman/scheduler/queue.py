"""One model version's queue: admission, priorities, deadlines, and cutting dynamic batches."""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repoman.backends import Backend, Batch, Result
from repoman.config.model import QueuePolicy
from repoman.errors import InvalidRequest, RequestTimeout, ServerBusy
from repoman.manager.version import ModelVersion
from repoman.scheduler.inline import INLINE_BELOW_NS, InlineGate
from repoman.scheduler.pending import Group, Pending, QueueState
from repoman.scheduler.stats import VersionStats
from repoman.tensors import Rows, batch_rows, shape_signature

SOLO_RUN = 64
"""Most requests of a model without dynamic batching handed to one worker in one go (their
answers stream back as each is executed: see ``Running``). Bounds how long one run holds a
worker while other versions wait for it."""


@dataclass(eq=False)
class VersionQueue:
    """Requests for one model version, the instances free to run them, and its batch policy.

    Batches follow Triton's dynamic batcher: up to ``max_batch_size`` rows (a request
    carrying 4 rows counts 4), cut as soon as the largest preferred size (or the maximum)
    is queued, else once the oldest request has waited ``max_queue_delay``; only requests
    whose non-batch shapes agree share a batch; higher priority levels (1 is highest) go
    first; ``allowed_batch_sizes`` pads a batch up to the next allowed size. Without
    ``dynamic_batching`` (or with ``max_batch_size: 0``) every request is its own execution.
    """

    version: ModelVersion
    state: QueueState = QueueState.OPEN
    free: list[Backend] = field(default_factory=list)
    in_flight: int = 0
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    stats: VersionStats = field(default_factory=VersionStats)
    used_ns: float = 0.0
    """Worker time this queue consumed (for fair interleaving across queues)."""
    inline_below_ns: int = INLINE_BELOW_NS
    """Executions measured quicker than this may run on the loop (``InlineGate``)."""

    def __post_init__(self) -> None:
        config = self.version.config
        self.free = list(self.version.instances)
        # NOTE: read once, after the load: its batches are awaited on the loop, no worker.
        self.on_loop = bool(self.free) and all(instance.runs_on_loop for instance in self.free)
        self.gate = InlineGate(
            bool(self.free)
            and not self.on_loop
            and all(instance.may_run_inline for instance in self.free),
            self.inline_below_ns,
        )
        self.batching = config.max_batch_size > 0
        dynamic = config.dynamic_batching if self.batching else None
        self.dynamic = dynamic is not None
        self.max_rows = config.max_batch_size if self.dynamic else 0
        self.delay = dynamic.max_queue_delay_microseconds / 1e6 if dynamic else 0.0
        preferred = [
            p for p in (dynamic.preferred_batch_size if dynamic else ()) if p <= self.max_rows
        ]
        self.cut_rows = max(preferred) if preferred else self.max_rows
        self.allowed = sorted(dynamic.allowed_batch_sizes) if dynamic else []
        self.preserve_ordering = bool(dynamic and dynamic.preserve_ordering)
        levels = dynamic.priority_levels if dynamic and dynamic.priority_levels > 0 else 1
        self.default_level = (dynamic.default_priority_level or 1) if dynamic else 1
        default_policy = dynamic.default_queue_policy if dynamic else QueuePolicy()
        overrides = dynamic.priority_queue_policy if dynamic else {}
        self.policies = [overrides.get(level, default_policy) for level in range(1, levels + 1)]
        self.levels: list[deque[Pending]] = [deque() for _ in range(levels)]
        self.level_counts = [0] * levels
        self.delayed: deque[Pending] = deque()
        self.order: deque[Pending] = deque()  # admission order, with preserve_ordering only
        self.input_names = tuple(tensor.name for tensor in config.inputs)
        self.output_order = config.output_names
        self.queued_rows = 0

    # ---- admission -------------------------------------------------------------------

    def admit(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: tuple[str, ...],
        now: float,
        *,
        priority: int = 0,
        timeout_us: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        group: Group | None = None,
    ) -> Pending:
        """Queue a request, or refuse it at once (bad priority: 400; queue full: 503).
        ``loop``: the running loop, when the caller has it at hand; ``group``: requests
        queued as one (``inputs`` the first one's), refused or queued as one."""
        levels = len(self.levels)
        if priority < 0 or priority > levels:
            raise InvalidRequest(
                f"priority {priority} is outside [0, {levels}] for model "
                f"'{self.version.model}' (0 means the default level {self.default_level})"
            )
        level = (priority or self.default_level) - 1
        policy = self.policies[level]
        count = 1 if group is None else len(group.inputs)
        if policy.max_queue_size and self.level_counts[level] + count > policy.max_queue_size:
            raise ServerBusy(
                f"model '{self.version.model}' version {self.version.version}: the queue "
                f"is full ({policy.max_queue_size} requests at priority {level + 1}); retry later"
            )
        timeout = policy.default_timeout_microseconds
        if timeout_us is not None and policy.allow_timeout_override:
            timeout = timeout_us
        rows = 1 if not self.batching else batch_rows(inputs) if group is None else sum(group.rows)
        item = Pending(
            inputs,
            outputs,
            rows,
            shape_signature(inputs) if self.dynamic else (),  # only batches compare it
            (loop or asyncio.get_running_loop()).create_future(),
            now,
            level,
            now + timeout / 1e6 if timeout > 0 else None,
        )
        if group is not None:
            item.group, item.count = group, count
        self.levels[level].append(item)
        self.level_counts[level] += count
        self.queued_rows += rows
        if self.preserve_ordering:
            self.order.append(item)
        return item

    def expire(self, item: Pending) -> None:
        """The item's deadline passed while queued: reject it, or (DELAY) serve it last."""
        if not item.queued:
            return
        if self.policies[item.level].timeout_action == "DELAY":
            if not item.delayed:
                item.delayed = True
                self.delayed.append(item)
            return
        item.future.set_exception(
            RequestTimeout(
                f"model '{self.version.model}' version {self.version.version}: the request "
                f"waited past its {self._timeout_ms(item):g} ms timeout without a free worker"
            )
        )
        self.unqueue(item)
        item.ended()

    # ---- batches ---------------------------------------------------------------------

    def ready_at(self) -> float | None:
        """When the next batch may be cut (a clock time), or None when none can be."""
        if not self.free or not any(self.level_counts):
            return None  # NOTE: the common answer for an idle queue, without the fronts' scan
        oldest = self._oldest()
        if oldest is None:
            return None
        if not self.dynamic or self.delay == 0.0 or self.queued_rows >= self.cut_rows:
            return oldest.arrived
        if self.state is not QueueState.OPEN:
            return oldest.arrived  # NOTE: nothing more will arrive; waiting only adds latency
        return oldest.arrived + self.delay

    def take_run(self, most: int = SOLO_RUN) -> tuple[Backend, list[tuple[list[Pending], Batch]]]:
        """Reserve an instance and what it runs in one go: the next batch; or, without
        dynamic batching, up to ``most`` waiting requests (a fair share of them per free
        instance), each executed alone, so that one hand-off to a worker serves them all
        (one, for a backend that runs on the loop). Call only when ``ready_at`` is due."""
        if self.dynamic:
            instance, taken, batch = self.take_batch()
            return instance, [(taken, batch)]
        share = -(-sum(self.level_counts) // len(self.free))
        # NOTE: on the loop there is no hand-off to save: one request per execution.
        most = 1 if self.on_loop else max(1, min(most, share))
        taken = list(itertools.islice(self._candidates(), most))
        # NOTE: in flight before unqueueing: unqueueing the last request of a closing queue
        # must not look like "drained" (the unload would follow).
        self.in_flight += 1
        for item in taken:
            self.unqueue(item)
        return self.free.pop(), [([item], self._solo_batch(item)) for item in taken]

    def take_batch(self) -> tuple[Backend, list[Pending], Batch]:
        """Cut the next batch and reserve an instance for it. Call only when ``ready_at`` is due."""
        candidates = self._candidates()
        first = next(candidates)
        taken = [first]
        if self.dynamic:
            rows = first.rows
            limit = self.cut_rows if self.queued_rows >= self.cut_rows else self.max_rows
            for item in candidates:
                if rows >= limit:
                    break
                if item.signature != first.signature:
                    continue
                if rows + item.rows <= limit:
                    taken.append(item)
                    rows += item.rows
                elif item.on_split is not None and not self.preserve_ordering:
                    # NOTE: a group fills what is left of the batch; the rest stays queued
                    head = self._split(item, limit - rows)
                    if head is not None:
                        taken.append(head)
                        rows += head.rows
        # NOTE: count the batch as in flight before unqueueing its requests: unqueueing the
        # last one of a closing queue must not look like "drained" (the unload would follow).
        self.in_flight += 1
        for item in taken:
            self.unqueue(item)
        return self.free.pop(), taken, self._batch(taken)

    def _split(self, item: Pending, room: int) -> Pending | None:
        """The leading requests of group ``item`` that fit in ``room`` rows, as a group of
        their own, out of the queue (to be taken now; ``item.on_split`` is told); ``item``
        keeps the rest, queued where it was. None when its first request does not fit."""
        group = item.group
        assert group is not None and item.on_split is not None
        count, rows = 0, 0
        for each in group.rows:
            if rows + each > room:
                break
            rows += each
            count += 1
        if count == 0 or count == item.count:
            return None
        head = Pending(
            group.inputs[0],
            item.outputs,
            rows,
            item.signature,
            item.future.get_loop().create_future(),
            item.arrived,
            item.level,
            queued=False,
            queue=item.queue,
            group=group.part(0, count),
            count=count,
        )
        item.group = group.part(count, item.count)
        item.inputs = item.group.inputs[0]
        item.rows -= rows
        item.count -= count
        self.queued_rows -= rows
        self.level_counts[item.level] -= count
        item.on_split(head)
        return head

    def _solo_batch(self, item: Pending) -> Batch:
        """``_batch([item])`` with less work (a model without dynamic batching makes one
        per request): no padding without dynamic batching."""
        if item.outputs == self.output_order:
            output_names = self.output_order
        else:
            output_names = tuple(name for name in self.output_order if name in item.outputs)
        return Batch(
            [item.inputs],
            output_names,
            self._input_names(item.inputs),
            self.batching,
            0,
            [item.rows],
            [item.request_id],
            [item.parameters or {}],
            [item.outputs],
        )

    def _batch(self, taken: list[Pending]) -> Batch:
        if any(item.group is not None for item in taken):
            return self._batch_of_groups(taken)
        first = taken[0]
        if len(taken) == 1 and first.outputs == self.output_order:
            output_names = self.output_order  # NOTE: the common case, without the sets
        else:
            wanted = set().union(*(item.outputs for item in taken))
            output_names = tuple(name for name in self.output_order if name in wanted)
        return Batch(
            requests=[item.inputs for item in taken],
            output_names=output_names,
            input_names=self._input_names(first.inputs),
            batching=self.batching,
            pad_to=self._padded(sum(item.rows for item in taken)),
            row_counts=[item.rows for item in taken],
            request_ids=[item.request_id for item in taken],
            request_parameters=[item.parameters or {} for item in taken],
            requested_outputs=[item.outputs for item in taken],
        )

    def _batch_of_groups(self, taken: list[Pending]) -> Batch:
        """``_batch`` where some of ``taken`` are groups: every member is a request of the
        batch, in order, with its own rows, id and parameters."""
        requests: list[Mapping[str, np.ndarray]] = []
        rows: list[int] = []
        ids: list[str] = []
        parameters: list[Mapping[str, Any]] = []
        outputs: list[tuple[str, ...]] = []
        # NOTE: groups whose tensors are already end to end (an ensemble's steps) stay so:
        # the batch merges by taking them as they are, not request by request.
        joined = _joined(taken)
        for item in taken:
            group = item.group
            if group is None:
                requests.append(item.inputs)
                rows.append(item.rows)
                ids.append(item.request_id)
                parameters.append(item.parameters or {})
                outputs.append(item.outputs)
                continue
            if joined is None:
                requests.extend(group.inputs)
            rows += group.rows
            ids += group.request_ids
            parameters += [each or {} for each in group.parameters]
            outputs += [item.outputs] * item.count
        wanted = set().union(*(item.outputs for item in taken))
        return Batch(
            requests=requests if joined is None else joined,
            output_names=tuple(name for name in self.output_order if name in wanted),
            input_names=self._input_names(taken[0].inputs),
            batching=self.batching,
            pad_to=self._padded(sum(rows)),
            row_counts=rows,
            request_ids=ids,
            request_parameters=parameters,
            requested_outputs=outputs,
        )

    def _input_names(self, inputs: Mapping[str, np.ndarray]) -> tuple[str, ...]:
        """The config's inputs a request carries, in config order (all of them, usually:
        they were checked against these)."""
        if len(inputs) == len(self.input_names):
            return self.input_names
        return tuple(name for name in self.input_names if name in inputs)

    def deliver(self, item: Pending, result: Result) -> list[tuple[Pending, Result]]:
        """Results that may be answered now: this one, or (preserve_ordering) every one
        whose predecessors have all been answered."""
        if not self.preserve_ordering:
            return [(item, result)]
        item.result = result
        ready = []
        while self.order:
            head = self.order[0]
            if head.result is not None:
                ready.append((self.order.popleft(), head.result))
            elif head.future.done():
                self.order.popleft()  # expired or cancelled: nothing to wait for
            else:
                break
        return ready

    def finish(self, instance: Backend) -> None:
        self.free.append(instance)
        self.in_flight -= 1
        self.check_drained()

    def abandon(self, instance: Backend) -> None:
        """A batch on ``instance`` was written off (it never returned): it no longer counts
        as in flight, and the instance is never used again."""
        del instance  # NOTE: kept out of ``free`` for good: it may still be running
        self.in_flight -= 1
        self.check_drained()

    def fail_queued(self, error: Exception) -> int:
        """Close the queue and fail every request still waiting in it; how many there were."""
        self.close()
        failed = 0
        for item in list(self._candidates()):
            ended = not item.future.done()
            if ended:
                item.future.set_exception(error)
                self.stats.record_failure("unavailable", count=item.count)
                failed += item.count
            self.unqueue(item)
            if ended:
                item.ended()
        self.check_drained()
        return failed

    def close(self) -> None:
        if self.state is QueueState.OPEN:
            self.state = QueueState.CLOSING
        self.check_drained()

    # ---- internals -------------------------------------------------------------------

    def _clean_fronts(self) -> None:
        # NOTE: taken, expired and cancelled requests are dropped lazily from the fronts;
        # a delayed one lives on in ``self.delayed``.
        for queue in self.levels:
            while queue and (not queue[0].queued or queue[0].delayed):
                queue.popleft()
        while self.delayed and not self.delayed[0].queued:
            self.delayed.popleft()

    def _candidates(self) -> Iterator[Pending]:
        """Queued requests in serving order: by priority level, FIFO within one; delayed last."""
        self._clean_fronts()
        for queue in self.levels:
            for item in queue:
                if item.queued and not item.delayed:
                    yield item
        for item in self.delayed:
            if item.queued:
                yield item

    def _oldest(self) -> Pending | None:
        """The request that has waited longest (each level is FIFO: one of the fronts)."""
        self._clean_fronts()
        heads = [queue[0] for queue in self.levels if queue]
        if self.delayed:
            heads.append(self.delayed[0])
        return min(heads, key=lambda item: item.arrived) if heads else None

    def _padded(self, rows: int) -> int:
        if not self.allowed:
            return 0
        index = bisect.bisect_left(self.allowed, rows)
        return self.allowed[index] if index < len(self.allowed) else 0

    def unqueue(self, item: Pending) -> None:
        """Take a request out of the queue (taken into a batch, expired, or abandoned by its
        client); a no-op when it is no longer queued."""
        if not item.queued:
            return
        item.queued = False
        self.queued_rows -= item.rows
        self.level_counts[item.level] -= item.count
        if item.timer is not None:
            item.timer.cancel()
            item.timer = None
        self.check_drained()

    def check_drained(self) -> None:
        if self.state is not QueueState.OPEN and self.queued_rows == 0 and self.in_flight == 0:
            self.state = QueueState.CLOSED
            self.drained.set()

    def _timeout_ms(self, item: Pending) -> float:
        assert item.deadline is not None
        return round((item.deadline - item.arrived) * 1000, 3)


def _joined(taken: list[Pending]) -> Rows | None:
    """The requests of ``taken`` as one ``Rows``, when every item is a group held so (one
    group: its own, as it is); else None."""
    parts: list[Rows] = []
    for item in taken:
        inputs = item.group.inputs if item.group is not None else None
        if not isinstance(inputs, Rows):
            return None
        parts.append(inputs)
    return Rows.join(parts)
