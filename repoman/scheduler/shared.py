"""One shared pool of batch workers interleaving the queues of every model version."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from repoman.backends import Backend, Batch, Result
from repoman.calls import Caller, ModelCall, calls_through
from repoman.errors import ExecutionTimeout, ModelNotReady, RepomanError, ServerBusy
from repoman.manager.version import ModelVersion
from repoman.scheduler.answers import answer_execution, answer_item, count_execution
from repoman.scheduler.clock import Cancellable, Clock, LoopClock, RunningLoop
from repoman.scheduler.inline import WINDOW, inline_limit
from repoman.scheduler.pending import PLAIN, Group, Pending, QueueState, RequestOptions
from repoman.scheduler.queue import SOLO_RUN, VersionQueue
from repoman.scheduler.running import (
    SKIPPED,
    Outcome,
    Part,
    Running,
    Skipped,
    Timer,
    execute,
    loop_outcome,
    run_parts,
    waits_so_far,
)
from repoman.scheduler.stats import VersionStats
from repoman.scheduler.workers import WorkerPool
from repoman.tensors import Rows

log = logging.getLogger(__name__)

HungListener = Callable[[ModelVersion, str], None]
"""Told when a version's batch was written off as hung (the version, why)."""

CallHandler = Callable[[ModelCall, tuple[ModelVersion, ...]], Awaitable[Mapping[str, np.ndarray]]]
"""Runs a call a model makes from inside a batch (on the event loop), given the instances
that batch and those waiting for it hold (the data plane's; bound by the composition root)."""


class SharedScheduler:
    """Dynamic batches per model version, executed on one pool of ``num_batch_threads`` workers.

    Every public method runs on the event loop thread; backends run only on the pool.
    Dispatch is event-driven (a request arrives, a batch finishes, a delay expires). When
    several queues have a batch ready, the one that has used the least worker time goes
    first, so versions share the workers fairly by time, not by batch count (a queue that
    was idle does not bank credit: it starts level with the busiest). A version never runs
    more batches at once than it has instances. The batches of a backend that
    ``runs_on_loop`` (one waiting on another process) are awaited on the loop and take no
    worker: they start whenever an instance is free.
    """

    def __init__(
        self,
        num_batch_threads: int | None = None,
        *,
        clock: Clock | None = None,
        execution_timeout: float | None = None,
        on_hung: HungListener | None = None,
        timer: Timer = time.perf_counter_ns,
        cpu_timer: Timer = time.thread_time_ns,
        inline_below_ns: int | None = None,
    ) -> None:
        """``clock``: the loop's time and timers (queue delays, deadlines); ``timer``: the
        nanoseconds executions are timed with, on the workers (fair shares are by them);
        ``cpu_timer``: a thread's CPU nanoseconds (what decides that a version's executions
        are quick enough for the loop, ``InlineGate``); ``inline_below_ns``: how quick, or
        None to measure it here, on the new workers (:func:`inline_limit`, a few ms)."""
        self.num_workers = num_batch_threads or os.cpu_count() or 1
        self._pool = WorkerPool(self.num_workers)
        if inline_below_ns is None:
            inline_below_ns = inline_limit(self._pool)
            log.debug(
                "executions quicker than %d µs may run on the event loop (measured)",
                inline_below_ns // 1000,
            )
        self.inline_below_ns = inline_below_ns
        """Executions measured quicker than this run on the loop (for hand-offs that cost
        what they measured here)."""
        self._clock = clock or LoopClock()
        self._ns = timer
        self._cpu_ns = cpu_timer
        self._execution_timeout = execution_timeout or None
        self._on_hung = on_hung
        self.written_off = 0
        """Batches given up on because they ran past the execution timeout."""
        self._idle = self.num_workers
        self._queues: dict[ModelVersion, VersionQueue] = {}
        self._timer: Cancellable | None = None
        self._timer_at = float("inf")
        self._dispatch_scheduled = False
        self._running_loop = RunningLoop()
        self._calls: CallHandler | None = None
        self._call_tasks: set[asyncio.Task[Any]] = set()
        self._loop_batches: set[asyncio.Future[Sequence[Result]]] = set()
        self._before: list[Callable[[], None]] = []

    def bind_calls(self, handler: CallHandler) -> None:
        """Let models call models from inside their batches through ``handler``."""
        self._calls = handler

    # ---- the Serving protocol the manager calls -----------------------------------

    def open(self, version: ModelVersion) -> None:
        queue = VersionQueue(version, inline_below_ns=self.inline_below_ns)
        queue.used_ns = min((q.used_ns for q in self._queues.values()), default=0.0)
        self._queues[version] = queue

    async def drain(self, version: ModelVersion) -> None:
        queue = self._queues.get(version)
        if queue is None:
            return
        queue.close()
        self._kick()
        await queue.drained.wait()
        self._queues.pop(version, None)

    # ---- requests ------------------------------------------------------------------

    async def submit(
        self,
        version: ModelVersion,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        *,
        priority: int = 0,
        timeout_us: int | None = None,
        request_id: str = "",
        parameters: Mapping[str, Any] | None = None,
    ) -> Mapping[str, np.ndarray]:
        """Queue one request for ``version``; return its outputs once its batch has run.

        Raises at once when the queue refuses it (closing, full, bad priority); raises
        RequestTimeout when its queue deadline passes before a worker takes it. The request's
        id and parameters travel with it to the backend (a Python model sees them).
        """
        item = self.enqueue(
            version,
            inputs,
            outputs,
            RequestOptions(priority, timeout_us, request_id, parameters),
        )
        try:
            return await item.future
        finally:
            # NOTE: a client that went away cancels this await while its request is still
            # queued; unqueueing here (not in a done-callback on every future) saves a loop
            # callback per request on the hot path.
            self.withdraw(item)

    def enqueue(
        self,
        version: ModelVersion,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        options: RequestOptions = PLAIN,
    ) -> Pending:
        """:meth:`submit` without the waiting: the queued request, whose ``future`` gets the
        outputs (or the error). A caller that gives up calls :meth:`withdraw`."""
        item = self._admit(version, inputs, tuple(outputs), options, None)
        item.request_id, item.parameters = options.request_id, options.parameters
        item.callers = options.callers
        return item

    def group_rows(self, version: ModelVersion) -> int:
        """The most rows a group for ``version`` may hold (:meth:`enqueue_group`): what its
        dynamic batcher cuts a batch at; 0 when it takes no groups (no dynamic batching,
        or not open)."""
        queue = self._queues.get(version)
        if queue is None or queue.state is not QueueState.OPEN or not queue.dynamic:
            return 0
        return queue.cut_rows

    def enqueue_group(
        self,
        version: ModelVersion,
        group: Group,
        outputs: tuple[str, ...],
        options: RequestOptions = PLAIN,
    ) -> Pending:
        """Queue several requests as one (an ensemble's requests moving through a step
        together): one admission, one place in the queue, one answer, while each still
        executes as its own request of the batch it joins (its inputs, rows, id and
        parameters) and gets its own result: the future's result is one Result per request.
        At most :meth:`group_rows` rows, of one shape signature. Raises at once what
        :meth:`enqueue` raises, for the whole group."""
        return self._admit(version, group.inputs[0], outputs, options, group)

    def _admit(
        self,
        version: ModelVersion,
        inputs: Mapping[str, np.ndarray],
        outputs: tuple[str, ...],
        options: RequestOptions,
        group: Group | None,
    ) -> Pending:
        """Queue a request (or a group) for ``version``, its deadline armed, a dispatch pass
        on its way; or raise what its queue refuses."""
        queue = self._queues.get(version)
        if queue is None or queue.state is not QueueState.OPEN:
            raise ModelNotReady(version.model, version.version, "it is being unloaded")
        if queue.queued_rows == 0 and queue.in_flight == 0:
            # NOTE: a queue coming back from idle starts level with the busy ones, so time
            # it spent idle is not credit it can spend starving them.
            busy = [q.used_ns for q in self._queues.values() if q.queued_rows or q.in_flight]
            queue.used_ns = max(queue.used_ns, min(busy, default=queue.used_ns))
        now = self._clock.time()
        try:
            item = queue.admit(
                inputs,
                outputs,
                now,
                priority=options.priority,
                timeout_us=options.timeout_us,
                loop=self._running_loop(),
                group=group,
            )
        except ServerBusy:
            count = 1 if group is None else len(group.inputs)
            queue.stats.record_rejection("queue_full", count=count)
            raise
        item.queue = queue
        if item.deadline is not None:
            item.timer = self._clock.call_at(item.deadline, self._expire, queue, item)
        self._kick()
        return item

    def before_dispatch(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once, at the start of the next dispatch pass (this loop iteration
        or the next): what it enqueues is dispatched in that same pass."""
        self._before.append(callback)
        self._kick()

    def withdraw(self, item: Pending) -> None:
        """Take ``item`` out of its queue if it is still waiting (its client went away)."""
        if item.queue is not None:
            item.queue.unqueue(item)

    def stats(self, version: ModelVersion) -> VersionStats:
        """The version's statistics (empty ones for a version without a queue)."""
        queue = self._queues.get(version)
        return queue.stats if queue is not None else VersionStats()

    def queued(self, version: ModelVersion) -> int:
        """Requests of ``version`` waiting for a worker now (not yet executing)."""
        queue = self._queues.get(version)
        return sum(queue.level_counts) if queue is not None else 0

    def executing(self, version: ModelVersion) -> int:
        """Batches of ``version`` on a worker now."""
        queue = self._queues.get(version)
        return queue.in_flight if queue is not None else 0

    def queue_state(self, version: ModelVersion) -> QueueState:
        queue = self._queues.get(version)
        return queue.state if queue is not None else QueueState.CLOSED

    async def close(self, timeout: float | None = None) -> None:
        """Stop the workers (after the manager drained every version), waiting at most
        ``timeout`` seconds for calls still running; a stuck worker is a daemon thread that
        never holds up the process's exit."""
        if self._timer is not None:
            self._timer.cancel()
        self._pool.shutdown(wait=False)
        await asyncio.to_thread(self._pool.join, timeout)

    # ---- dispatch ------------------------------------------------------------------

    def _kick(self) -> None:
        # NOTE: coalesce many arrivals in one loop iteration into one dispatch pass, so a
        # burst of requests is seen whole and forms one batch instead of many.
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            self._running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        now = self._clock.time()
        next_due = float("inf")
        while True:
            if self._before:
                before, self._before = self._before, []
                for callback in before:
                    try:
                        callback()
                    except Exception:  # NOTE: never the end of this pass for everyone else
                        log.exception("a callback before dispatching failed")
            chosen = None
            for queue in self._queues.values():
                if self._idle <= 0 and not (queue.on_loop or queue.gate.inline):
                    continue  # NOTE: a worker coming free dispatches again
                due = queue.ready_at()
                if due is None:
                    continue
                if due > now:
                    next_due = min(next_due, due)
                elif chosen is None or queue.used_ns < chosen.used_ns:
                    chosen = queue
            if chosen is None:
                break
            self._run(chosen, now)
        if next_due < float("inf"):
            self._arm_timer(next_due)

    def _arm_timer(self, when: float) -> None:
        if self._timer is not None and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._clock.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self._dispatch()

    def _expire(self, queue: VersionQueue, item: Pending) -> None:
        item.timer = None
        queue.expire(item)
        if item.future.done():  # rejected, not delayed
            elapsed = int((self._clock.time() - item.arrived) * 1e9)
            queue.stats.record_rejection("timeout", elapsed, item.count)
        self._kick()

    def _run(self, queue: VersionQueue, now: float) -> None:
        gate = queue.gate
        instance, parts = queue.take_run(gate.run_length(SOLO_RUN) if gate.inline else SOLO_RUN)
        sizes = [_elements(batch) for _, batch in parts] if gate.allowed else None
        if gate.inline:
            assert sizes is not None
            # NOTE: an outsized input would hold the loop: it goes to a worker, if one is
            # free (this queue was dispatched without one: then the loop rather than a wait).
            if self._idle <= 0 or all(gate.fits(size) for size in sizes):
                self._run_inline(queue, instance, parts, sizes, now)
                return
        for taken, _ in parts:
            for item in taken:
                queue.stats.record_queued(now - item.arrived, item.count)
        running = Running(queue, instance, parts, self._ns(), on_loop=queue.on_loop, sizes=sizes)
        caller = self._caller(running) if self._calls is not None else None
        if running.on_loop:
            ((_, batch),) = parts  # NOTE: on-loop queues hand out one batch at a time
            started = time.perf_counter_ns()
            # NOTE: started now, in this dispatch pass (a backend returning a future sends
            # its batch at once); a coroutine's task copies the context here, so
            # model_caller() within it is this batch's door.
            task: asyncio.Future[Sequence[Result]]
            with calls_through(caller):
                try:
                    task = asyncio.ensure_future(
                        instance.execute_async(batch), loop=self._running_loop()
                    )
                except Exception as exc:
                    task = self._running_loop().create_future()
                    task.set_exception(exc)
            self._loop_batches.add(task)
            task.add_done_callback(
                lambda done: self._ended(running, [loop_outcome(done, started)], None)
            )
            running.task = task
        else:
            self._idle -= 1
            # NOTE: the worker schedules _finished (and _collect) itself: asyncio.wrap_future
            # would take one more loop iteration, to settle an asyncio future whose callback
            # then runs it.
            loop = self._running_loop()
            progress = self._progress(running, loop) if len(parts) > 1 else None
            running.work = self._pool.submit(
                execute, instance, parts, caller, progress, self._ns, self._cpu_ns
            )
            running.work.add_done_callback(
                lambda fut: _call_soon(loop, self._finished, running, fut)
            )
        if self._execution_timeout is not None:
            running.watchdog = self._clock.call_at(
                now + self._execution_timeout, self._write_off, running
            )

    def _run_inline(
        self,
        queue: VersionQueue,
        instance: Backend,
        parts: list[Part],
        sizes: list[int],
        now: float,
    ) -> None:
        """Execute a run here, on the loop: the version's executions were measured quicker
        than a hand-off to a worker (``InlineGate``). Its model makes no calls to models
        (``Backend.may_run_inline``), so it runs without a door for them."""
        for taken, _ in parts:
            for item in taken:
                queue.stats.record_queued(now - item.arrived, item.count)
        running = Running(queue, instance, parts, self._ns(), inline=True, sizes=sizes)
        waits = waits_so_far()
        outcomes = run_parts(instance, parts, None, self._ns, self._cpu_ns)
        running.waited = waits_so_far() != waits
        running.finished = True
        queue.finish(instance)
        now = self._clock.time()
        for outcome in outcomes:
            self._settle(running, outcome, now)

    def _progress(
        self, running: Running, loop: asyncio.AbstractEventLoop
    ) -> Callable[[Outcome], None]:
        """From the worker: an outcome of a run of several parts, for the loop to answer now
        (one wake-up for every outcome that arrives before the loop gets to them)."""
        outbox = running.outbox

        def post(outcome: Outcome) -> None:
            outbox.append(outcome)
            if not running.posted:
                running.posted = True
                _call_soon(loop, self._collect, running)

        return post

    def _collect(self, running: Running) -> None:
        # NOTE: posted is cleared before the outbox is read: an outcome the worker adds
        # meanwhile is either read here or finds posted clear and posts again.
        running.posted = False
        if running.written_off or running.finished:
            return
        now = self._clock.time()
        outbox = running.outbox
        while outbox:
            self._settle(running, outbox.popleft(), now)

    # ---- calls from inside a batch (BLS) ----------------------------------------------

    def _caller(self, running: Running) -> Caller:
        """The door for the calls ``running``'s model makes, from its worker thread (or,
        for a batch on the loop, from the loop itself: the call starts at once)."""
        loop = self._running_loop()
        loop_thread = threading.get_ident()

        def call(request: ModelCall) -> Future[Mapping[str, np.ndarray]]:
            answer: Future[Mapping[str, np.ndarray]] = Future()
            if threading.get_ident() == loop_thread:
                self._start_call(running, request, answer)
            else:
                loop.call_soon_threadsafe(self._start_call, running, request, answer)
            return answer

        return call

    def _start_call(
        self, running: Running, request: ModelCall, answer: Future[Mapping[str, np.ndarray]]
    ) -> None:
        if not answer.set_running_or_notify_cancel():
            return
        if not (running.on_loop or running.lent or running.finished or running.written_off):
            # NOTE: the batch now waits for others: its worker's place is lent (one more
            # thread) until it returns, so its calls, and everyone else's batches, never
            # wait for a worker that is waiting for them (a model calling itself included).
            running.lent = True
            self._idle += 1
            self._pool.grow()
            self._kick()
        assert self._calls is not None
        task = asyncio.ensure_future(self._calls(request, running.held()))
        self._call_tasks.add(task)

        def settle(done: asyncio.Future[Mapping[str, np.ndarray]]) -> None:
            self._call_tasks.discard(task)
            if done.cancelled():
                answer.set_exception(RepomanError("the call was cancelled"))
            elif done.exception() is not None:
                answer.set_exception(done.exception())
            else:
                answer.set_result(done.result())

        task.add_done_callback(settle)

    def _give_back(self, running: Running) -> None:
        running.finished = True
        if running.lent:
            running.lent = False
            self._idle -= 1
            self._pool.shrink()

    def _finished(self, running: Running, fut: Future[list[Outcome]]) -> None:
        """A run on a worker returned (its future holds every part's outcome)."""
        error = fut.exception()
        self._ended(running, [] if error is not None else fut.result(), error)

    def _ended(
        self, running: Running, outcomes: list[Outcome], error: BaseException | None
    ) -> None:
        """A run ended: answer each part with its outcome (or every part with ``error``,
        what the whole run raised)."""
        queue = running.queue
        version = queue.version
        if running.task is not None:
            self._loop_batches.discard(running.task)
        # NOTE: a done concurrent future keeps its done callbacks, which hold this run: let go
        # of it (and of the task), or every batch would wait for the garbage collector
        running.task = running.work = None
        if running.written_off:
            log.warning(
                "model %s version %d: a batch written off as hung returned after all",
                version.model,
                version.version,
            )
            return
        if running.watchdog is not None:
            running.watchdog.cancel()
        if not running.on_loop:
            self._idle += 1
        self._give_back(running)
        queue.finish(running.instance)
        running.outbox.clear()  # NOTE: every outcome is in the result too
        now = self._clock.time()
        while running.answered < len(running.parts):
            self._settle(running, error if error is not None else outcomes[running.answered], now)
        self._dispatch()

    def _settle(self, running: Running, outcome: Outcome | BaseException, now: float) -> None:
        """Answer the next part of ``running`` (parts are answered in order) with its
        outcome, or with what the whole run raised."""
        queue = running.queue
        version = queue.version
        taken, batch = running.parts[running.answered]
        running.answered += 1
        results: Sequence[Result] | BaseException | Skipped
        if isinstance(outcome, BaseException):
            results = outcome
        else:
            results, started, ended, cpu = outcome
            if results is SKIPPED:
                return  # NOTE: every client of it went away
            # NOTE: judged by its thread's CPU time, on the loop as on a worker: a backend that
            # may run inline computes on the calling thread, and the rest of its wall time was
            # waiting for the GIL or for a CPU, which would have held the loop wherever it ran
            # (InlineGate). Its wall time, where the run blocked, catches a backend that blocks
            # after all (strays); a run preempted 20 ms by the OS or the hypervisor is no stray.
            sizes = running.sizes
            wall = ended - started if running.waited else None
            if sizes is not None and queue.gate.observe(
                cpu, running.inline, sizes[running.answered - 1], wall
            ):
                log.debug(
                    "model %s version %d: executions now run %s (median of the last %d: "
                    "%d µs, limit %d µs)",
                    version.model,
                    version.version,
                    "on the event loop" if queue.gate.inline else "on the batch workers",
                    WINDOW,
                    queue.gate.judged_ns // 1000,
                    queue.gate.below_ns // 1000,
                )
        if not isinstance(results, BaseException):
            queue.used_ns += ended - started
            count_execution(
                queue,
                taken,
                batch,
                (max(0, started - running.handed), ended - started, self._ns() - ended),
            )
            running.handed = ended
        answer_execution(queue, taken, len(batch.requests), results, now)

    def _write_off(self, running: Running) -> None:
        """A batch ran past the execution timeout: fail it, replace its worker, and report
        the version as unhealthy (its queued requests fail too; it takes no more)."""
        running.watchdog = None
        if running.task is not None:
            # NOTE: not cancelled: like a stuck thread, it is left to end (the backend's
            # own timeouts end it); its instance is never used again.
            if running.task.done():
                return
        elif running.work is None or not self._pool.write_off(running.work):
            return  # NOTE: it finished meanwhile; its done callback is on its way
        else:
            self._idle += 1  # NOTE: a fresh thread took the stuck one's place
        running.written_off = True
        self.written_off += 1
        self._give_back(running)
        queue, version = running.queue, running.queue.version
        reason = (
            f"a batch did not finish within {self._execution_timeout:g} s "
            "(--execution-timeout): the version is marked unhealthy"
        )
        error = ExecutionTimeout(f"model '{version.model}' version {version.version}: {reason}")
        log.error("%s", error)
        queue.abandon(running.instance)
        now = self._clock.time()
        for item in running.unanswered:  # NOTE: a streamed part was answered already
            answer_item(queue, item, error, now)
        queue.fail_queued(ModelNotReady(version.model, version.version, reason))
        if self._on_hung is not None:
            self._on_hung(version, reason)
        self._dispatch()


def _elements(batch: Batch) -> int:
    """Input elements of an execution (what its time grows with)."""
    requests = batch.requests
    if isinstance(requests, Rows):
        return sum(array.size for array in requests.arrays().values())
    return sum(array.size for request in requests for array in request.values())


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """From a worker thread: run ``callback`` on the loop (unless the loop is gone: a call
    written off as hung may return after the server stopped)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)
