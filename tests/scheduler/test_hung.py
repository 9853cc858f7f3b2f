"""A backend call that never returns: written off after the execution timeout, worker replaced."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from repoman.errors import ExecutionTimeout, ModelNotReady
from repoman.scheduler import SharedScheduler
from repoman.scheduler.workers import WorkerPool
from tests.fakes import EchoBackend, ManualClock, make_version

RELEASE = threading.Event()


class Stuck(EchoBackend):
    """Never returns (until the test releases it, so no thread outlives the test run)."""

    def execute(self, batch):
        RELEASE.wait(30)
        return super().execute(batch)


def one_row() -> dict[str, np.ndarray]:
    return {"INPUT": np.ones((1, 2), dtype=np.float32)}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_hung_batch_fails_its_version_alone_and_the_pool_keeps_serving() -> None:
    hung: list[tuple[str, str]] = []

    async def main() -> None:
        clock = ManualClock()
        scheduler = SharedScheduler(
            1,  # one worker: without a replacement the healthy model would wait forever
            clock=clock,
            execution_timeout=5.0,
            on_hung=lambda version, reason: hung.append((version.model, reason)),
        )
        stuck, healthy = make_version(Stuck, name="stuck"), make_version(name="healthy")
        scheduler.open(stuck)
        scheduler.open(healthy)
        first = asyncio.create_task(scheduler.submit(stuck, one_row(), ("OUTPUT",)))
        await settle()
        queued = asyncio.create_task(scheduler.submit(stuck, one_row(), ("OUTPUT",)))
        other = asyncio.create_task(scheduler.submit(healthy, one_row(), ("OUTPUT",)))
        await settle()
        assert not other.done()  # the only worker is stuck
        clock.advance(5.1)
        with pytest.raises(ExecutionTimeout, match="did not finish within 5 s"):
            await first
        with pytest.raises(ModelNotReady, match="marked unhealthy"):
            await queued
        assert (await asyncio.wait_for(other, 10))["OUTPUT"].shape == (1, 2)
        with pytest.raises(ModelNotReady):
            await scheduler.submit(stuck, one_row(), ("OUTPUT",))
        await asyncio.wait_for(scheduler.drain(stuck), 5)  # nothing in flight any more
        assert scheduler.written_off == 1
        RELEASE.set()  # the stuck call returns late: it is ignored
        await asyncio.sleep(0.05)
        await scheduler.close(5)

    try:
        asyncio.run(main())
    finally:
        RELEASE.set()
    assert [model for model, _ in hung] == ["stuck"]
    assert "--execution-timeout" in hung[0][1]


def test_a_written_off_worker_is_replaced_and_never_waited_for() -> None:
    gate = threading.Event()
    pool = WorkerPool(1, name="test-pool")
    stuck = pool.submit(gate.wait, 30)
    while not stuck.running():
        pass
    assert pool.write_off(stuck)
    assert pool.size == 1
    assert pool.submit(lambda: 7).result(timeout=5) == 7  # the new thread serves
    pool.shutdown(wait=False)
    assert pool.join(timeout=5)  # the stuck thread is not waited for
    gate.set()
    assert stuck.result(timeout=5) is True
    assert not pool.write_off(stuck)  # finished: nothing to write off


class StuckOnSecond(EchoBackend):
    """Answers its first execution at once; the next ones wait for the test."""

    def load(self) -> None:
        super().load()
        self.calls = 0

    def execute(self, batch):
        self.calls += 1
        if self.calls > 1:
            RELEASE.wait(30)
        return super().execute(batch)


def test_a_run_written_off_after_streaming_an_answer_fails_only_the_rest_each_counted_once():
    RELEASE.clear()

    async def main() -> tuple[object, ...]:
        clock = ManualClock()
        scheduler = SharedScheduler(1, clock=clock, execution_timeout=5.0)
        mv = make_version(StuckOnSecond, max_batch_size=0, dynamic=None)
        scheduler.open(mv)
        solo = {"INPUT": np.ones(2, dtype=np.float32)}
        tasks = [asyncio.create_task(scheduler.submit(mv, solo, ("OUTPUT",))) for _ in range(3)]
        first = await asyncio.wait_for(tasks[0], 10)  # answered while the run goes on
        assert not tasks[1].done() and not tasks[2].done()
        clock.advance(5.1)
        outcomes = await asyncio.gather(*tasks[1:], return_exceptions=True)
        stats = scheduler.stats(mv)
        RELEASE.set()
        await asyncio.sleep(0.05)
        await scheduler.close(5)
        return first, outcomes, stats

    try:
        first, outcomes, stats = asyncio.run(main())
    finally:
        RELEASE.set()
    assert first["OUTPUT"].shape == (2,)
    assert all(isinstance(outcome, ExecutionTimeout) for outcome in outcomes)
    assert stats.success.count == 1 and stats.fail.count == 2
    assert stats.execution_count == 1
