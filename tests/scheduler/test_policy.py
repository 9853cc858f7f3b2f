"""Triton's dynamic-batching semantics, on a manual clock: delays, sizes, padding, order,
priorities, queue limits, timeouts, fair sharing."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from repoman.config.model import DynamicBatching, QueuePolicy
from repoman.errors import InvalidRequest, RequestTimeout, ServerBusy
from repoman.scheduler import SharedScheduler
from repoman.scheduler.queue import SOLO_RUN
from tests.fakes import BlockingBackend, EchoBackend, ManualClock, make_version


def rows(n: int, value: float = 1.0, width: int = 2) -> dict[str, np.ndarray]:
    return {"INPUT": np.full((n, width), value, dtype=np.float32)}


async def settle(times: int = 5) -> None:
    """Let the loop run queued callbacks (dispatch passes) without moving the manual clock."""
    for _ in range(times):
        await asyncio.sleep(0)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


class Recorder(EchoBackend):
    """Echo that records, per execution, the rows it was given (padding included) and the first values."""

    def load(self) -> None:
        super().load()
        self.merged_rows: list[int] = []
        self.firsts: list[list[float]] = []

    def execute(self, batch):
        merged = batch.merged()["INPUT"]
        self.merged_rows.append(merged.shape[0])
        self.firsts.append([float(request["INPUT"][0, 0]) for request in batch.requests])
        return super().execute(batch)


def submit(scheduler, mv, n=1, value=1.0, **kwargs) -> asyncio.Task:
    return asyncio.create_task(scheduler.submit(mv, rows(n, value), ("OUTPUT",), **kwargs))


def test_delay_counts_from_the_oldest_request_and_never_fires_early():
    async def main():
        clock = ManualClock()
        scheduler = SharedScheduler(2, clock=clock)
        mv = make_version(Recorder, dynamic=DynamicBatching(max_queue_delay_microseconds=5000))
        scheduler.open(mv)
        first = submit(scheduler, mv, value=1)
        await settle()
        clock.advance(0.003)
        second = submit(scheduler, mv, value=2)
        await settle()
        clock.advance(0.0019)  # 4.9 ms after the first request
        await settle()
        assert mv.instances[0].batch_sizes == []
        clock.advance(0.0001)  # 5.0 ms
        await asyncio.gather(first, second)
        await scheduler.close()
        return mv.instances[0]

    backend = asyncio.run(main())
    assert backend.firsts == [[1.0, 2.0]]


def test_five_requests_with_delay_and_max_eight_make_one_batch_of_five():
    async def main():
        clock = ManualClock()
        scheduler = SharedScheduler(2, clock=clock)
        mv = make_version(
            dynamic=DynamicBatching(max_queue_delay_microseconds=5000), max_batch_size=8
        )
        scheduler.open(mv)
        tasks = []
        for i in range(5):
            tasks.append(submit(scheduler, mv, value=i))
            await settle()
            clock.advance(0.0005)
        await settle()
        assert mv.instances[0].batch_sizes == []
        clock.advance(0.005)
        results = await asyncio.gather(*tasks)
        await scheduler.close()
        return mv, results

    mv, results = asyncio.run(main())
    assert mv.instances[0].batch_sizes == [5]
    assert [r["OUTPUT"][0, 0] for r in results] == [0, 1, 2, 3, 4]


def test_preferred_size_cuts_at_once_and_the_rest_waits_for_the_delay():
    async def main():
        clock = ManualClock()
        scheduler = SharedScheduler(2, clock=clock)
        dynamic = DynamicBatching(max_queue_delay_microseconds=100_000, preferred_batch_size=(4,))
        mv = make_version(Recorder, dynamic=dynamic, max_batch_size=8, instances=2)
        scheduler.open(mv)
        tasks = [submit(scheduler, mv, value=i) for i in range(6)]
        await wait_until(lambda: sum(len(b.batch_sizes) for b in mv.instances) == 1)
        await settle()
        sizes = [s for b in mv.instances for s in b.batch_sizes]
        assert sizes == [4]  # preferred size reached: no waiting for the 100 ms delay
        clock.advance(0.1)
        await asyncio.gather(*tasks)
        await scheduler.close()
        return sorted(s for b in mv.instances for s in b.batch_sizes)

    assert asyncio.run(main()) == [2, 4]


def test_allowed_batch_sizes_pad_and_the_padding_is_cut_from_outputs():
    async def main():
        scheduler = SharedScheduler(1)
        dynamic = DynamicBatching(max_queue_delay_microseconds=0, allowed_batch_sizes=(2, 4, 8))
        mv = make_version(Recorder, dynamic=dynamic, max_batch_size=8)
        scheduler.open(mv)
        result = await scheduler.submit(mv, rows(3, 7.0), ("OUTPUT",))
        await scheduler.close()
        return mv.instances[0], result

    backend, result = asyncio.run(main())
    assert backend.merged_rows == [4]  # padded from 3 rows to the allowed size 4
    assert backend.batch_sizes == [3]  # Batch.size excludes padding
    assert result["OUTPUT"].shape == (3, 2)


def test_requests_of_other_shapes_form_their_own_batches():
    async def main():
        clock = ManualClock()
        scheduler = SharedScheduler(1, clock=clock)
        mv = make_version(
            Recorder, dims=(-1,), dynamic=DynamicBatching(max_queue_delay_microseconds=1000)
        )
        scheduler.open(mv)
        tasks = [
            asyncio.create_task(scheduler.submit(mv, rows(1, 1.0, width=2), ("OUTPUT",))),
            asyncio.create_task(scheduler.submit(mv, rows(1, 2.0, width=3), ("OUTPUT",))),
            asyncio.create_task(scheduler.submit(mv, rows(1, 3.0, width=2), ("OUTPUT",))),
        ]
        await settle()
        clock.advance(0.001)
        await wait_until(lambda: len(mv.instances[0].firsts) >= 1)
        clock.advance(0.001)
        results = await asyncio.gather(*tasks)
        await scheduler.close()
        return mv.instances[0], results

    backend, results = asyncio.run(main())
    assert backend.firsts == [[1.0, 3.0], [2.0]]
    assert [r["OUTPUT"].shape for r in results] == [(1, 2), (1, 3), (1, 2)]


def test_preserve_ordering_answers_in_arrival_order():
    class SlowFirst(EchoBackend):
        def execute(self, batch):
            if batch.requests[0]["INPUT"][0, 0] == 0:
                time.sleep(0.2)
            return super().execute(batch)

    async def main(preserve):
        scheduler = SharedScheduler(2)
        dynamic = DynamicBatching(max_queue_delay_microseconds=0, preserve_ordering=preserve)
        mv = make_version(SlowFirst, dynamic=dynamic, max_batch_size=1, instances=2)
        scheduler.open(mv)
        order = []
        tasks = [submit(scheduler, mv, value=i) for i in range(2)]
        for index, task in enumerate(tasks):
            task.add_done_callback(lambda _, index=index: order.append(index))
        await asyncio.gather(*tasks)
        await scheduler.close()
        return order

    assert asyncio.run(main(False)) == [1, 0]  # the fast one overtakes without the option
    assert asyncio.run(main(True)) == [0, 1]


def test_higher_priority_is_served_first():
    async def main():
        BlockingBackend.gate.clear()
        scheduler = SharedScheduler(1)
        dynamic = DynamicBatching(priority_levels=2, default_priority_level=2)
        mv = make_version(BlockingBackend, dynamic=dynamic, max_batch_size=1)
        scheduler.open(mv)
        served: list[float] = []
        blocker = submit(scheduler, mv, value=-1)
        await settle()
        low = [submit(scheduler, mv, value=10 + i) for i in range(3)]
        high = [submit(scheduler, mv, value=20 + i, priority=1) for i in range(3)]
        await settle()
        for task in [blocker, *low, *high]:
            task.add_done_callback(lambda t: served.append(float(t.result()["OUTPUT"][0, 0])))
        BlockingBackend.gate.set()
        await asyncio.gather(blocker, *low, *high)
        await scheduler.close()
        return served

    assert asyncio.run(main()) == [-1, 20, 21, 22, 10, 11, 12]


def test_bad_priority_is_a_400():
    async def main():
        scheduler = SharedScheduler(1)
        mv = make_version(dynamic=DynamicBatching(priority_levels=2, default_priority_level=1))
        scheduler.open(mv)
        with pytest.raises(InvalidRequest, match="priority 3"):
            await scheduler.submit(mv, rows(1), ("OUTPUT",), priority=3)
        await scheduler.close()

    asyncio.run(main())


def test_a_full_queue_is_refused_at_once():
    async def main():
        BlockingBackend.gate.clear()
        scheduler = SharedScheduler(1)
        policy = QueuePolicy(max_queue_size=2)
        mv = make_version(
            BlockingBackend, max_batch_size=1, dynamic=DynamicBatching(default_queue_policy=policy)
        )
        scheduler.open(mv)
        running = submit(scheduler, mv)  # taken by the (blocked) worker: no longer queued
        await settle()
        queued = [submit(scheduler, mv) for _ in range(2)]
        await settle()
        with pytest.raises(ServerBusy, match="queue is full"):
            await scheduler.submit(mv, rows(1), ("OUTPUT",))
        BlockingBackend.gate.set()
        await asyncio.gather(running, *queued)
        await scheduler.close()

    asyncio.run(main())


def test_a_deadline_answers_on_time_while_workers_are_busy():
    async def main():
        BlockingBackend.gate.clear()
        clock = ManualClock()
        scheduler = SharedScheduler(1, clock=clock)
        policy = QueuePolicy(default_timeout_microseconds=10_000, allow_timeout_override=True)
        mv = make_version(
            BlockingBackend, max_batch_size=1, dynamic=DynamicBatching(default_queue_policy=policy)
        )
        scheduler.open(mv)
        running = submit(scheduler, mv)
        await settle()
        waiting = submit(scheduler, mv)
        patient = submit(scheduler, mv, timeout_us=50_000)  # the override is allowed
        await settle()
        clock.advance(0.0099)
        await settle()
        assert not waiting.done()
        clock.advance(0.0001)
        await settle()
        assert waiting.done() and not patient.done()  # the worker is still blocked
        with pytest.raises(RequestTimeout, match="10 ms timeout"):
            await waiting
        BlockingBackend.gate.set()
        await asyncio.gather(running, patient)
        await scheduler.close()

    asyncio.run(main())


def test_delay_action_serves_a_late_request_after_the_others():
    async def main():
        BlockingBackend.gate.clear()
        clock = ManualClock()
        scheduler = SharedScheduler(1, clock=clock)
        late = QueuePolicy(default_timeout_microseconds=1000, timeout_action="DELAY")
        dynamic = DynamicBatching(
            priority_levels=2, default_priority_level=2, priority_queue_policy={1: late}
        )
        mv = make_version(BlockingBackend, max_batch_size=1, dynamic=dynamic)
        scheduler.open(mv)
        served: list[float] = []
        running = submit(scheduler, mv, value=-1)
        await settle()
        delayed = submit(scheduler, mv, value=1, priority=1)
        await settle()
        clock.advance(0.002)  # its deadline passes: DELAY, not reject
        normal = submit(scheduler, mv, value=2)
        await settle()
        for task in (running, delayed, normal):
            task.add_done_callback(lambda t: served.append(float(t.result()["OUTPUT"][0, 0])))
        BlockingBackend.gate.set()
        await asyncio.gather(running, delayed, normal)
        await scheduler.close()
        return served

    assert asyncio.run(main()) == [-1, 2, 1]


class WorkClock:
    """The workers' nanoseconds, moved only by the fake backends' work (one worker thread):
    how long an execution took is what its backend says, however loaded the machine is."""

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def _saturate(costs_ms: dict[str, int], requests: int, dynamic: bool) -> list[str]:
    """Two models, each with ``requests`` requests queued at once on one worker, each
    execution taking its model's cost; the order the executions ran in."""
    work = WorkClock()
    executed: list[str] = []

    class Costly(EchoBackend):
        def execute(self, batch):
            name = self.context.config.name
            work.ns += costs_ms[name] * 1_000_000
            executed.append(name)
            return super().execute(batch)

    async def main():
        scheduler = SharedScheduler(1, timer=work)
        versions = [
            make_version(
                Costly,
                name=name,
                max_batch_size=1 if dynamic else 0,
                dynamic=DynamicBatching() if dynamic else None,
            )
            for name in costs_ms
        ]
        for mv in versions:
            scheduler.open(mv)
        tasks = [
            asyncio.create_task(
                scheduler.submit(
                    mv, rows(1) if dynamic else {"INPUT": np.ones(2, np.float32)}, ("OUTPUT",)
                )
            )
            for mv in versions
            for _ in range(requests)
        ]
        await asyncio.gather(*tasks)
        await scheduler.close()

    asyncio.run(main())
    return executed


def test_two_saturated_models_share_the_workers_evenly():
    executed = _saturate({"a": 2, "b": 2}, 60, dynamic=True)
    # While both queues are full (the first 60 executions), each model gets half the time:
    # on the work clock, exactly (turns alternate; ties go to the queue opened first).
    assert executed[:60].count("a") == 30, executed[:60]
    assert all(executed[i] != executed[i + 1] for i in range(59)), executed[:60]


def test_workers_are_shared_by_time_not_by_executions():
    executed = _saturate({"slow": 3, "fast": 1}, 60, dynamic=True)
    # While both are saturated, the fast model runs three executions per slow one.
    first = executed[:40]
    assert first.count("fast") == 30 and first.count("slow") == 10, first


def test_models_without_dynamic_batching_share_the_workers_by_time_run_by_run():
    executed = _saturate({"a": 2, "b": 2}, 200, dynamic=False)
    # A run holds the worker for up to SOLO_RUN executions; turns still alternate by the
    # time each used, so neither model runs twice in a row while both wait.
    assert executed.count("a") == executed.count("b") == 200
    runs = [executed[0]]
    for name in executed[1:]:
        if name != runs[-1]:
            runs.append(name)
    assert len(runs) >= 2 * (200 // SOLO_RUN), runs
    assert executed[: 2 * SOLO_RUN].count("a") == SOLO_RUN, executed[: 2 * SOLO_RUN]


def test_a_model_without_dynamic_batching_runs_one_request_per_execution():
    async def main():
        scheduler = SharedScheduler(2)
        mv = make_version(dynamic=None, max_batch_size=0, dims=(2,))
        scheduler.open(mv)
        await asyncio.gather(
            *(
                scheduler.submit(mv, {"INPUT": np.ones(2, np.float32)}, ("OUTPUT",))
                for _ in range(3)
            )
        )
        await scheduler.close()
        return mv.instances[0].batch_sizes

    assert asyncio.run(main()) == [1, 1, 1]


def test_a_request_timeout_is_ignored_unless_the_policy_allows_overrides():
    async def main():
        BlockingBackend.gate.clear()
        clock = ManualClock()
        scheduler = SharedScheduler(1, clock=clock)
        mv = make_version(
            BlockingBackend,
            max_batch_size=1,
            dynamic=DynamicBatching(default_queue_policy=QueuePolicy()),
        )
        scheduler.open(mv)
        running = submit(scheduler, mv)
        await settle()
        asked = submit(scheduler, mv, timeout_us=1000)
        await settle()
        clock.advance(1.0)
        await settle()
        assert not asked.done()  # no default timeout, and overriding is not allowed
        BlockingBackend.gate.set()
        await asyncio.gather(running, asked)
        await scheduler.close()

    asyncio.run(main())
