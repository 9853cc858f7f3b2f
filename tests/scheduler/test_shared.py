"""The shared scheduler with fake backends, in-process: batches, errors, instance limits, draining."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from repoman.config.model import DynamicBatching
from repoman.errors import BackendError, ModelNotReady
from repoman.scheduler import QueueState, SharedScheduler
from tests import fakes
from tests.fakes import BlockingBackend, EchoBackend, PerRequestErrorBackend, RaisingBackend


def make_version(backend=EchoBackend, *, delay_us=None, preferred=(), **kwargs):
    dynamic = None
    if delay_us is not None:
        dynamic = DynamicBatching(
            max_queue_delay_microseconds=delay_us, preferred_batch_size=tuple(preferred)
        )
    return fakes.make_version(backend, dynamic=dynamic, **kwargs)


def rows(n: int, value: float = 1.0) -> dict[str, np.ndarray]:
    return {"INPUT": np.full((n, 2), value, dtype=np.float32)}


def run(coro):
    return asyncio.run(coro)


def test_requests_arriving_together_form_one_batch():
    async def main():
        scheduler = SharedScheduler(2)
        mv = make_version(delay_us=5000)
        scheduler.open(mv)
        results = await asyncio.gather(
            *(scheduler.submit(mv, rows(1, float(i)), ("OUTPUT",)) for i in range(5))
        )
        await scheduler.close()
        return mv, results

    mv, results = run(main())
    assert mv.instances[0].batch_sizes == [5]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["OUTPUT"], np.full((1, 2), float(i)))


def test_batch_size_counts_rows_and_respects_max():
    async def main():
        scheduler = SharedScheduler(1)
        mv = make_version(delay_us=5000, max_batch_size=8)
        scheduler.open(mv)
        await asyncio.gather(*(scheduler.submit(mv, rows(3), ("OUTPUT",)) for _ in range(4)))
        await scheduler.close()
        return mv

    mv = run(main())
    assert sum(mv.instances[0].batch_sizes) == 12
    assert all(size <= 8 for size in mv.instances[0].batch_sizes)
    assert mv.instances[0].batch_sizes[0] == 6  # two requests of 3 fit; a third would be 9


def test_without_dynamic_batching_each_request_runs_alone():
    async def main():
        scheduler = SharedScheduler(2)
        mv = make_version(delay_us=None)
        scheduler.open(mv)
        await asyncio.gather(*(scheduler.submit(mv, rows(2), ("OUTPUT",)) for _ in range(4)))
        await scheduler.close()
        return mv

    assert run(main()).instances[0].batch_sizes == [2, 2, 2, 2]


def test_a_failing_batch_fails_exactly_its_own_requests():
    async def main():
        scheduler = SharedScheduler(1)
        bad = make_version(RaisingBackend, delay_us=0, name="bad")
        good = make_version(EchoBackend, delay_us=0, name="good")
        scheduler.open(bad)
        scheduler.open(good)
        outcome = await asyncio.gather(
            scheduler.submit(bad, rows(1, -1.0), ("OUTPUT",)),
            scheduler.submit(good, rows(1, 3.0), ("OUTPUT",)),
            return_exceptions=True,
        )
        await scheduler.close()
        return outcome

    failed, served = run(main())
    assert isinstance(failed, BackendError) and "'bad'" in str(failed)
    np.testing.assert_array_equal(served["OUTPUT"], np.full((1, 2), 3.0))


def test_a_per_request_error_fails_only_that_request():
    async def main():
        scheduler = SharedScheduler(1)
        mv = make_version(PerRequestErrorBackend, delay_us=5000)
        scheduler.open(mv)
        outcome = await asyncio.gather(
            scheduler.submit(mv, rows(1, 1.0), ("OUTPUT",)),
            scheduler.submit(mv, rows(1, -1.0), ("OUTPUT",)),
            scheduler.submit(mv, rows(1, 2.0), ("OUTPUT",)),
            return_exceptions=True,
        )
        await scheduler.close()
        return mv, outcome

    mv, (first, second, third) = run(main())
    assert mv.instances[0].batch_sizes == [3]
    assert isinstance(second, BackendError) and "negative" in str(second)
    np.testing.assert_array_equal(first["OUTPUT"], np.full((1, 2), 1.0))
    np.testing.assert_array_equal(third["OUTPUT"], np.full((1, 2), 2.0))


def test_a_version_never_runs_more_batches_than_instances():
    class Counting(EchoBackend):
        lock = threading.Lock()
        running = 0
        peak = 0

        def execute(self, batch):
            with Counting.lock:
                Counting.running += 1
                Counting.peak = max(Counting.peak, Counting.running)
            try:
                import time

                time.sleep(0.01)
                return super().execute(batch)
            finally:
                with Counting.lock:
                    Counting.running -= 1

    async def main(instances):
        Counting.peak = 0
        scheduler = SharedScheduler(4)
        mv = make_version(Counting, delay_us=None, instances=instances)
        scheduler.open(mv)
        await asyncio.gather(*(scheduler.submit(mv, rows(1), ("OUTPUT",)) for _ in range(12)))
        await scheduler.close()
        return Counting.peak

    assert run(main(1)) == 1
    assert run(main(3)) == 3


def test_drain_finishes_queued_work_and_refuses_new():
    async def main():
        BlockingBackend.gate.clear()
        scheduler = SharedScheduler(1)
        mv = make_version(BlockingBackend, delay_us=None)
        scheduler.open(mv)
        queued = [
            asyncio.create_task(scheduler.submit(mv, rows(1, float(i)), ("OUTPUT",)))
            for i in range(3)
        ]
        await asyncio.sleep(0.01)
        drain = asyncio.create_task(scheduler.drain(mv))
        await asyncio.sleep(0.01)
        assert scheduler.queue_state(mv) is QueueState.CLOSING
        with pytest.raises(ModelNotReady):
            await scheduler.submit(mv, rows(1), ("OUTPUT",))
        assert not drain.done()
        BlockingBackend.gate.set()
        await drain
        # Drained means every request was answered: the unload that follows a drain
        # must never pull an instance from under a batch still running.
        assert all(task.done() for task in queued)
        results = [await task for task in queued]
        await scheduler.close()
        return scheduler, mv, results

    scheduler, mv, results = run(main())
    assert scheduler.queue_state(mv) is QueueState.CLOSED
    assert [r["OUTPUT"][0, 0] for r in results] == [0.0, 1.0, 2.0]


def test_a_run_of_requests_without_dynamic_batching_answers_each_as_it_is_executed():
    gate = threading.Event()

    class SecondWaits(EchoBackend):
        def load(self) -> None:
            super().load()
            self.calls = 0

        def execute(self, batch):
            self.calls += 1
            if self.calls == 2:
                gate.wait(10)
            return super().execute(batch)

    async def main() -> None:
        scheduler = SharedScheduler(1)
        mv = make_version(SecondWaits, max_batch_size=0)
        scheduler.open(mv)
        solo = {"INPUT": np.ones(2, dtype=np.float32)}
        tasks = [asyncio.create_task(scheduler.submit(mv, solo, ("OUTPUT",))) for _ in range(3)]
        await asyncio.wait_for(tasks[0], 10)  # one hand-off took all three
        assert not tasks[1].done() and not tasks[2].done()
        gate.set()
        await asyncio.gather(*tasks)
        stats = scheduler.stats(mv)
        assert stats.execution_count == 3 and stats.success.count == 3
        assert stats.compute_input.count == 3 and stats.queue.count == 3
        await scheduler.close()

    try:
        asyncio.run(main())
    finally:
        gate.set()


# ---- backends awaited on the event loop (Backend.execute_async) ----------------------------


async def until(condition, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"not within {seconds} s"
        await asyncio.sleep(0.001)


def test_batches_awaited_on_the_loop_hold_no_worker():
    """One worker, held by a blocking batch: three instances of an on-loop backend still run
    three batches at once, and the blocked model is answered once released."""

    async def main():
        BlockingBackend.gate.clear()
        fakes.LoopBackend.gate, fakes.LoopBackend.peak = asyncio.Event(), 0
        scheduler = SharedScheduler(1)
        blocked = make_version(BlockingBackend, name="blocked", delay_us=None)
        on_loop = make_version(fakes.LoopBackend, name="on_loop", delay_us=None, instances=3)
        assert on_loop.instances[0].runs_on_loop and not blocked.instances[0].runs_on_loop
        scheduler.open(blocked)
        scheduler.open(on_loop)
        held = asyncio.create_task(scheduler.submit(blocked, rows(1), ("OUTPUT",)))
        waiting = [
            asyncio.create_task(scheduler.submit(on_loop, rows(1, float(i)), ("OUTPUT",)))
            for i in range(3)
        ]
        await until(lambda: fakes.LoopBackend.running == 3)
        assert fakes.LoopBackend.peak == 3 and not held.done()
        fakes.LoopBackend.gate.set()
        results = await asyncio.gather(*waiting)
        BlockingBackend.gate.set()
        await held
        await scheduler.close()
        return results

    try:
        results = run(main())
    finally:
        BlockingBackend.gate.set()
        fakes.LoopBackend.gate = None
    assert [r["OUTPUT"][0, 0] for r in results] == [0.0, 1.0, 2.0]


def test_an_on_loop_batch_calls_a_model_through_its_door_without_a_worker_lent():
    """model_caller() inside execute_async is the batch's door (the task's context); the call
    runs through the scheduler and no worker is added while the caller waits."""
    from repoman import model_caller
    from repoman.calls import ModelCall

    class Caller(fakes.LoopBackend):
        async def execute_async(self, batch):
            door = model_caller()
            assert door is not None
            answer = door(ModelCall("callee", {"INPUT": batch.requests[0]["INPUT"] * 2}))
            outputs = await asyncio.wrap_future(answer)
            return [{"OUTPUT": outputs["OUTPUT"]}]

    async def main():
        scheduler = SharedScheduler(1)
        caller = make_version(Caller, name="caller", delay_us=None)
        callee = make_version(name="callee", delay_us=None)
        pool_sizes = []

        async def handle(call, held):
            assert held == (caller,)
            pool_sizes.append(scheduler._pool.size)
            return await scheduler.submit(callee, call.inputs, ("OUTPUT",))

        scheduler.bind_calls(handle)
        scheduler.open(caller)
        scheduler.open(callee)
        result = await scheduler.submit(caller, rows(1, 3.0), ("OUTPUT",))
        await scheduler.close()
        return result, pool_sizes

    result, pool_sizes = run(main())
    assert result["OUTPUT"][0, 0] == 6.0
    assert pool_sizes == [1]


def test_an_on_loop_batch_past_the_execution_timeout_is_written_off():
    from repoman.errors import ExecutionTimeout

    hung = []

    async def main():
        fakes.LoopBackend.gate = asyncio.Event()
        clock = fakes.ManualClock()
        scheduler = SharedScheduler(
            1, clock=clock, execution_timeout=5.0, on_hung=lambda v, why: hung.append(v.model)
        )
        stuck = make_version(fakes.LoopBackend, name="stuck", delay_us=None)
        scheduler.open(stuck)
        first = asyncio.create_task(scheduler.submit(stuck, rows(1), ("OUTPUT",)))
        await until(lambda: fakes.LoopBackend.running == 1)
        clock.advance(5.1)
        with pytest.raises(ExecutionTimeout, match="did not finish within 5 s"):
            await first
        with pytest.raises(ModelNotReady):
            await scheduler.submit(stuck, rows(1), ("OUTPUT",))
        fakes.LoopBackend.gate.set()  # it returns late: ignored
        await until(lambda: fakes.LoopBackend.running == 0)
        await asyncio.wait_for(scheduler.drain(stuck), 5)
        await scheduler.close()
        return scheduler

    try:
        scheduler = run(main())
    finally:
        fakes.LoopBackend.gate = None
    assert scheduler.written_off == 1 and hung == ["stuck"]
