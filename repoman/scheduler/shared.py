"""One shared pool of batch workers interleaving the queues of every model version."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from repoman.backends import Backend, Batch, Result
from repoman.errors import BackendError, ModelNotReady, RepomanError
from repoman.manager import ModelVersion
from repoman.scheduler.queue import Pending, QueueState, VersionQueue
from repoman.scheduler.stats import VersionStats

log = logging.getLogger(__name__)


class SharedScheduler:
    """Dynamic batches per model version, executed on one pool of ``num_batch_threads`` workers.

    Every public method runs on the event loop thread; backends run only on the pool.
    Dispatch is event-driven (a request arrives, a batch finishes, a delay expires) and
    round-robin over the queues that have a batch ready, so no version starves another.
    A version never runs more batches at once than it has instances.
    """

    def __init__(self, num_batch_threads: int | None = None) -> None:
        self.num_workers = num_batch_threads or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="repoman-batch")
        self._idle = self.num_workers
        self._queues: dict[ModelVersion, VersionQueue] = {}
        self._order: deque[VersionQueue] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._dispatch_scheduled = False

    # ---- the Serving protocol the manager calls -----------------------------------

    def open(self, version: ModelVersion) -> None:
        queue = VersionQueue(version)
        self._queues[version] = queue
        self._order.append(queue)

    async def drain(self, version: ModelVersion) -> None:
        queue = self._queues.get(version)
        if queue is None:
            return
        queue.close()
        self._kick()
        await queue.drained.wait()
        self._queues.pop(version, None)
        if queue in self._order:
            self._order.remove(queue)

    # ---- requests ------------------------------------------------------------------

    async def submit(
        self, version: ModelVersion, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> Mapping[str, np.ndarray]:
        """Queue one request for ``version``; return its outputs once its batch has run."""
        queue = self._queues.get(version)
        if queue is None or queue.state is not QueueState.OPEN:
            raise ModelNotReady(version.model, version.version, "it is being unloaded")
        loop = asyncio.get_running_loop()
        item = queue.make_pending(inputs, tuple(outputs), loop.time())
        queue.push(item)
        self._kick()
        return await item.future

    def stats(self, version: ModelVersion) -> VersionStats:
        """The version's statistics (empty ones for a version without a queue)."""
        queue = self._queues.get(version)
        return queue.stats if queue is not None else VersionStats()

    def queue_state(self, version: ModelVersion) -> QueueState:
        queue = self._queues.get(version)
        return queue.state if queue is not None else QueueState.CLOSED

    async def close(self) -> None:
        """Stop the workers (after the manager drained every version)."""
        if self._timer is not None:
            self._timer.cancel()
        self._pool.shutdown(wait=True)

    # ---- dispatch ------------------------------------------------------------------

    def _kick(self) -> None:
        # NOTE: coalesce many arrivals in one loop iteration into one dispatch pass, so a
        # burst of requests is seen whole and forms one batch instead of many.
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        loop = asyncio.get_running_loop()
        now = loop.time()
        next_due = float("inf")
        while self._idle > 0 and self._order:
            chosen = None
            for _ in range(len(self._order)):
                queue = self._order[0]
                self._order.rotate(-1)
                due = queue.ready_at()
                if due is None:
                    continue
                if due <= now:
                    chosen = queue
                    break
                next_due = min(next_due, due)
            if chosen is None:
                break
            self._run(chosen)
        if next_due < float("inf"):
            self._arm_timer(next_due)

    def _arm_timer(self, when: float) -> None:
        if self._timer is not None and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = when
        self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self._dispatch()

    def _run(self, queue: VersionQueue) -> None:
        instance, taken, batch = queue.take_batch()
        self._idle -= 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        for item in taken:
            queue.stats.queue.add(int((started - item.arrived) * 1e9))
        handed = time.perf_counter_ns()
        done = loop.run_in_executor(self._pool, _execute, instance, batch)
        done.add_done_callback(
            lambda fut: self._finished(queue, instance, taken, batch, handed, fut)
        )

    def _finished(
        self,
        queue: VersionQueue,
        instance: Backend,
        taken: list[Pending],
        batch: Batch,
        handed: int,
        fut: asyncio.Future[tuple[Sequence[Result], int, int]],
    ) -> None:
        self._idle += 1
        queue.finish(instance)
        version = queue.version
        error = fut.exception()
        results: Sequence[Result] = ()
        if error is None:
            results, started, ended = fut.result()
            queue.stats.record_batch(
                batch.size,
                len(taken),
                input_ns=started - handed,
                infer_ns=ended - started,
                output_ns=time.perf_counter_ns() - ended,
            )
            if len(results) != len(taken):
                error = BackendError(
                    f"backend of model '{version.model}' version {version.version} returned "
                    f"{len(results)} results for a batch of {len(taken)} requests"
                )
        now = asyncio.get_running_loop().time()
        if error is not None:
            if not isinstance(error, RepomanError):
                error = BackendError(
                    f"model '{version.model}' version {version.version} failed: "
                    f"{type(error).__name__}: {error}"
                )
            log.error("%s", error)
            for item in taken:
                queue.stats.fail.add(int((now - item.arrived) * 1e9))
                if not item.future.done():
                    item.future.set_exception(error)
        else:
            for item, result in zip(taken, results, strict=True):
                outcome = queue.stats.fail if isinstance(result, Exception) else queue.stats.success
                outcome.add(int((now - item.arrived) * 1e9))
                if item.future.done():
                    continue
                if isinstance(result, Exception):
                    item.future.set_exception(_request_error(version, result))
                else:
                    item.future.set_result(result)
        self._dispatch()


def _execute(instance: Backend, batch: Batch) -> tuple[Sequence[Result], int, int]:
    """Run on a worker thread: the results, and when execution started and ended."""
    started = time.perf_counter_ns()
    results = instance.execute(batch)
    return results, started, time.perf_counter_ns()


def _request_error(version: ModelVersion, error: Exception) -> RepomanError:
    if isinstance(error, RepomanError):
        return error
    return BackendError(
        f"model '{version.model}' version {version.version}: {type(error).__name__}: {error}"
    )
