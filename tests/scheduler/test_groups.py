"""Groups (SharedScheduler.enqueue_group): several requests queued and answered as one, each
executed as its own request of the batch it joins. In-process, with fake backends."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from repoman.config.model import DynamicBatching, QueuePolicy
from repoman.errors import RepomanError, ServerBusy
from repoman.scheduler import RequestOptions, SharedScheduler
from repoman.scheduler.pending import Group
from tests import fakes
from tests.fakes import BlockingBackend, EchoBackend, PerRequestErrorBackend


def rows(value: float, n: int = 1) -> dict[str, np.ndarray]:
    return {"INPUT": np.full((n, 2), value, dtype=np.float32)}


def group(*values: float) -> Group:
    inputs = [rows(value) for value in values]
    return Group(
        inputs, [1] * len(values), [f"g{value:g}" for value in values], [None] * len(values)
    )


def dynamic(**kwargs) -> DynamicBatching:
    return DynamicBatching(max_queue_delay_microseconds=5000, **kwargs)


async def answered(item) -> None:
    """Until the scheduler ended ``item`` (a group's future is never awaited by a client)."""
    ended = asyncio.Event()
    item.on_answer = ended.set
    await asyncio.wait_for(ended.wait(), 10)


def test_a_group_is_one_queue_entry_whose_requests_each_run_as_their_own() -> None:
    async def main():
        scheduler = SharedScheduler(1)
        mv = fakes.make_version(EchoBackend, dynamic=dynamic())
        scheduler.open(mv)
        item = scheduler.enqueue_group(mv, group(1, 2, 3), ("OUTPUT",))
        assert scheduler.queued(mv) == 3  # NOTE: it counts the requests it stands for
        alone = scheduler.submit(mv, rows(4), ("OUTPUT",), request_id="alone")
        single, _ = await asyncio.gather(alone, answered(item))
        await scheduler.close()
        return mv, item, single, scheduler.stats(mv)

    mv, item, single, stats = asyncio.run(main())
    results = item.future.result()
    assert [float(result["OUTPUT"][0, 0]) for result in results] == [1.0, 2.0, 3.0]
    assert float(single["OUTPUT"][0, 0]) == 4.0
    # one batch, every request of the group its own request of it, with its own id
    assert mv.instances[0].batch_ids == [["g1", "g2", "g3", "alone"]]
    assert (stats.success.count, stats.queue.count, stats.execution_count) == (4, 4, 1)
    assert stats.inference_count == 4


def test_a_request_of_a_group_that_fails_alone_fails_only_its_own_slot() -> None:
    async def main():
        scheduler = SharedScheduler(1)
        mv = fakes.make_version(PerRequestErrorBackend, dynamic=dynamic())
        scheduler.open(mv)
        item = scheduler.enqueue_group(mv, group(1, -2, 3), ("OUTPUT",))
        await answered(item)
        await scheduler.close()
        return item, scheduler.stats(mv)

    item, stats = asyncio.run(main())
    first, failed, last = item.future.result()
    assert float(first["OUTPUT"][0, 0]) == 1.0 and float(last["OUTPUT"][0, 0]) == 3.0
    assert isinstance(failed, RepomanError) and "negative first element" in str(failed)
    assert (stats.success.count, stats.fail.count) == (2, 1)


def test_a_queue_without_room_for_the_whole_group_refuses_it_whole() -> None:
    async def main():
        scheduler = SharedScheduler(1)
        policy = QueuePolicy(max_queue_size=4)
        mv = fakes.make_version(BlockingBackend, dynamic=dynamic(default_queue_policy=policy))
        scheduler.open(mv)
        BlockingBackend.gate.clear()
        try:
            first = scheduler.enqueue_group(mv, group(1, 2), ("OUTPUT",))
            with pytest.raises(ServerBusy):
                scheduler.enqueue_group(mv, group(3, 4, 5), ("OUTPUT",))
            assert scheduler.queued(mv) == 2
            scheduler.withdraw(first)
            assert scheduler.queued(mv) == 0
        finally:
            BlockingBackend.gate.set()
        await scheduler.close()
        return scheduler.stats(mv)

    stats = asyncio.run(main())
    assert stats.rejected["queue_full"] == 3  # NOTE: each request it stood for


def test_only_a_dynamic_batcher_takes_groups_of_up_to_its_batch() -> None:
    async def main():
        scheduler = SharedScheduler(1)
        batching = fakes.make_version(EchoBackend, dynamic=dynamic(preferred_batch_size=(4,)))
        alone = fakes.make_version(EchoBackend, name="alone")
        scheduler.open(batching)
        scheduler.open(alone)
        found = scheduler.group_rows(batching), scheduler.group_rows(alone)
        await scheduler.close()
        return found

    assert asyncio.run(main()) == (4, 0)


def test_a_group_past_its_queue_timeout_fails_every_request_it_holds() -> None:
    async def main():
        scheduler = SharedScheduler(1)
        policy = QueuePolicy(default_timeout_microseconds=20_000)
        mv = fakes.make_version(BlockingBackend, dynamic=dynamic(default_queue_policy=policy))
        scheduler.open(mv)
        BlockingBackend.gate.clear()
        try:
            holder = asyncio.ensure_future(scheduler.submit(mv, rows(0), ("OUTPUT",)))
            await asyncio.sleep(0.01)  # NOTE: the one instance is busy with it
            item = scheduler.enqueue_group(mv, group(1, 2), ("OUTPUT",), RequestOptions())
            await answered(item)
        finally:
            BlockingBackend.gate.set()
        await holder
        await scheduler.close()
        return item, scheduler.stats(mv)

    item, stats = asyncio.run(main())
    assert "timeout" in str(item.future.exception())
    assert stats.rejected["timeout"] == 2


def test_a_group_that_may_be_split_fills_the_rest_of_a_batch() -> None:
    async def main(splittable: bool):
        scheduler = SharedScheduler(1)
        mv = fakes.make_version(EchoBackend, dynamic=dynamic(), max_batch_size=4)
        scheduler.open(mv)
        first = scheduler.enqueue_group(mv, group(1, 2, 3), ("OUTPUT",))
        second = scheduler.enqueue_group(mv, group(4, 5, 6), ("OUTPUT",))
        heads: list = []
        if splittable:
            second.on_split = heads.append
        await asyncio.gather(answered(first), answered(second))
        await scheduler.close()
        return mv, first, second, heads, scheduler.stats(mv)

    mv, first, second, heads, stats = asyncio.run(main(True))
    assert mv.instances[0].batch_ids == [["g1", "g2", "g3", "g4"], ["g5", "g6"]]
    (head,) = heads
    assert head.count == 1 and head.future.done()
    values = [
        float(r["OUTPUT"][0, 0]) for item in (first, head, second) for r in item.future.result()
    ]
    assert values == [1, 2, 3, 4, 5, 6]
    assert (stats.success.count, stats.execution_count) == (6, 2)
    mv, *_ = asyncio.run(main(False))
    assert mv.instances[0].batch_sizes == [3, 3]  # NOTE: whole groups only
