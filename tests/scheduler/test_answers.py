"""How an execution's results reach its requests (repoman/scheduler/answers.py): a backend that
miscounts its results, a whole batch failing with a group in it, ordering kept when asked.
In-process, through the shared scheduler, with fake backends."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from repoman.backends import Batch, Result
from repoman.config.model import DynamicBatching
from repoman.errors import BackendError
from repoman.scheduler import SharedScheduler
from repoman.scheduler.pending import Group
from tests import fakes
from tests.fakes import EchoBackend, RaisingBackend


class ShortBackend(EchoBackend):
    """Echoes, but drops the last result of every batch of more than one request."""

    def execute(self, batch: Batch) -> Sequence[Result]:
        results = list(super().execute(batch))
        return results[:-1] if len(results) > 1 else results


def rows(value: float) -> dict[str, np.ndarray]:
    return {"INPUT": np.full((1, 2), value, dtype=np.float32)}


def group(*values: float) -> Group:
    return Group(
        [rows(v) for v in values], [1] * len(values), [""] * len(values), [None] * len(values)
    )


async def answered(item) -> None:
    ended = asyncio.Event()
    item.on_answer = ended.set
    await asyncio.wait_for(ended.wait(), 10)


def dynamic() -> DynamicBatching:
    return DynamicBatching(max_queue_delay_microseconds=5000)


def group_beside_one(backend: type, name: str, alone: float):
    """A group of three (1, 2, 3) and one request alone (``alone``), queued together for a
    version of ``backend`` (one batch): the version, the group's item, what the request
    alone got (its outputs or its error) and the version's statistics."""

    async def main():
        scheduler = SharedScheduler(1)
        mv = fakes.make_version(backend, dynamic=dynamic(), name=name)
        scheduler.open(mv)
        item = scheduler.enqueue_group(mv, group(1, 2, 3), ("OUTPUT",))
        single = scheduler.submit(mv, rows(alone), ("OUTPUT",))
        outcome, _ = await asyncio.wait_for(
            asyncio.gather(single, answered(item), return_exceptions=True), 10
        )
        await scheduler.close()
        return mv, item, outcome, scheduler.stats(mv)

    return asyncio.run(main())


def test_a_batch_answered_with_too_few_results_fails_every_request_of_it_by_name() -> None:
    mv, item, alone, stats = group_beside_one(ShortBackend, "short", 4)
    assert mv.instances[0].batch_sizes == [4]  # one batch: the group and the request alone
    assert isinstance(alone, BackendError)
    assert "returned 3 results for a batch of 4 requests" in str(alone)
    failures = item.future.result()
    assert len(failures) == 3 and all(isinstance(f, BackendError) for f in failures)
    assert (stats.success.count, stats.fail.count) == (0, 4)


def test_a_whole_batch_failing_fails_each_request_of_a_group_in_it() -> None:
    _, item, poison, stats = group_beside_one(RaisingBackend, "poisoned", -1)
    assert isinstance(poison, BackendError)
    assert "model 'poisoned' version 1 failed: ValueError: negative input" in str(poison)
    failures = item.future.result()
    assert [str(f) for f in failures] == [str(poison)] * 3
    assert (stats.success.count, stats.fail.count, stats.execution_count) == (0, 4, 0)


def test_a_solo_execution_and_a_batch_are_timed_on_each_request_they_answer() -> None:
    async def main():
        scheduler = SharedScheduler(1)
        mv = fakes.make_version(EchoBackend, dynamic=dynamic())
        scheduler.open(mv)
        solo = scheduler.enqueue(mv, rows(1), ("OUTPUT",))
        await asyncio.wait_for(solo.future, 10)
        together = [scheduler.enqueue(mv, rows(v), ("OUTPUT",)) for v in (2, 3)]
        await asyncio.wait_for(asyncio.gather(*(item.future for item in together)), 10)
        await scheduler.close()
        return mv, solo, together, scheduler.stats(mv)

    mv, solo, together, stats = asyncio.run(main())
    assert mv.instances[0].batch_sizes == [1, 2]
    assert solo.compute is not None and together[0].compute is not None
    assert together[0].compute == together[1].compute  # one execution, one time, both carry it
    assert solo.compute != together[0].compute
    assert (stats.success.count, stats.execution_count, stats.inference_count) == (3, 2, 3)
