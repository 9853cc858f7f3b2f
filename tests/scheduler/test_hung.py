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
