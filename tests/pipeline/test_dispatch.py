"""The dispatcher in one process: real manager, real scheduler, fake backends (tests/fakes.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from repoman.aspired import Aspired, AspiredVersion
from repoman.backends import BackendRegistry
from repoman.config import parse_model_config
from repoman.config.model import ModelConfig
from repoman.errors import ModelNotReady, StepFailed
from repoman.manager import ModelManager
from repoman.pipeline.dispatch import Dispatcher
from repoman.scheduler import SharedScheduler
from tests import fakes


def member(name: str, backend: str = "echo", extra: str = "") -> ModelConfig:
    return parse_model_config(
        f'backend: "{backend}"\nmax_batch_size: 8\n'
        'input [{ name: "INPUT" data_type: TYPE_FP32 dims: [ 2 ] }]\n'
        'output [{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 2 ] }]\n' + extra,
        filename="config.pbtxt",
        fmt="pbtxt",
        model_name=name,
    )


def chain(name: str, *members: str) -> ModelConfig:
    tensors = ["IN", *(f"t{i}" for i in range(len(members) - 1)), "OUT"]
    steps = "".join(
        f'step {{ model_name: "{m}" input_map {{ key: "INPUT" value: "{tensors[i]}" }} '
        f'output_map {{ key: "OUTPUT" value: "{tensors[i + 1]}" }} }}\n'
        for i, m in enumerate(members)
    )
    return parse_model_config(
        'platform: "ensemble"\nmax_batch_size: 8\n'
        'input [{ name: "IN" data_type: TYPE_FP32 dims: [ 2 ] }]\n'
        'output [{ name: "OUT" data_type: TYPE_FP32 dims: [ 2 ] }]\n'
        f"ensemble_scheduling {{ {steps} }}",
        filename="config.pbtxt",
        fmt="pbtxt",
        model_name=name,
    )


class Core:
    """What ``repoman serve`` builds, minus the repository and HTTP."""

    def __init__(self) -> None:
        registry = BackendRegistry()
        fakes.repoman_register_backends(registry)
        self.scheduler = SharedScheduler(1)
        self.dispatcher = Dispatcher(self.scheduler)
        self.manager = ModelManager(registry, self.dispatcher, blocked=self.dispatcher.blocked)
        self.dispatcher.bind(self.manager.route)

    async def serve(self, *configs: ModelConfig) -> None:
        for config in configs:
            version = AspiredVersion(1, config, (("f", 1, 1),), Path("/nowhere"), "")
            assert await self.manager.apply(Aspired(config.name, (version,), frozenset({1}))) == []

    async def infer(self, model: str, value: float = 1.0, priority: int = 0) -> np.ndarray:
        rows = np.full((1, 2), value, dtype=np.float32)
        version = self.manager.route(model)
        outputs = await self.dispatcher.submit(version, {"IN": rows}, ["OUT"], priority=priority)
        return outputs["OUT"]


def run(scenario: Callable[[Core], Awaitable[None]]) -> None:
    """Run ``scenario`` against a fresh core on its own event loop, then stop the core."""

    async def main() -> None:
        fakes.BlockingBackend.gate.clear()
        core = Core()
        try:
            await asyncio.wait_for(scenario(core), 20)
        finally:
            fakes.BlockingBackend.gate.set()
            await core.manager.shutdown()
            await core.scheduler.close(5)

    asyncio.run(main())


async def until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


def test_a_chain_runs_every_step_in_order() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("a"), member("b"), chain("pipe", "a", "b"))
        np.testing.assert_array_equal(await core.infer("pipe", 3.0), np.full((1, 2), 3.0))
        for name in ("a", "b"):
            assert core.dispatcher.stats(core.manager.route(name)).execution_count == 1
        stats = core.dispatcher.stats(core.manager.route("pipe"))
        assert (stats.inference_count, stats.execution_count, stats.success.count) == (1, 1, 1)

    run(scenario)


def test_a_failing_step_names_itself_and_its_member() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("a"), member("bad", "per_request_error"), chain("pipe", "a", "bad"))
        with pytest.raises(StepFailed) as info:
            await core.infer("pipe", -1.0)
        assert str(info.value).startswith("ensemble 'pipe': step 1 (model 'bad' version 1) failed:")
        assert info.value.status == 500
        assert core.dispatcher.stats(core.manager.route("pipe")).fail.count == 1

    run(scenario)


def test_a_caller_that_goes_away_withdraws_its_queued_step() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("slow", "blocking"), member("b"), chain("pipe", "slow", "b"))
        first = asyncio.create_task(core.infer("pipe"))  # holds the one worker
        slow = core.manager.route("slow")
        await until(lambda: core.scheduler.stats(slow).queue.count == 1)  # taken by the worker
        second = asyncio.create_task(core.infer("pipe"))
        await until(lambda: core.scheduler.queued(slow) == 1)
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
        assert core.scheduler.queued(slow) == 0
        fakes.BlockingBackend.gate.set()
        np.testing.assert_array_equal(await first, np.ones((1, 2)))

    run(scenario)


def test_a_request_whose_caller_went_away_is_no_longer_in_flight_in_its_ensemble() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("slow", "blocking"), chain("pipe", "slow"))
        pipe, slow = core.manager.route("pipe"), core.manager.route("slow")
        first = asyncio.create_task(core.infer("pipe"))  # holds the one worker
        await until(lambda: core.scheduler.stats(slow).queue.count == 1)
        second = core.dispatcher.enqueue(pipe, {"IN": np.ones((1, 2), np.float32)}, ["OUT"])
        assert core.dispatcher.queued(pipe) == 2
        core.dispatcher.withdraw(second)
        assert second.future.cancelled()
        assert core.dispatcher.queued(pipe) == 1  # counted out at once, not a loop later
        fakes.BlockingBackend.gate.set()
        await first
        stats = core.dispatcher.stats(pipe)
        assert (stats.success.count, stats.fail.count) == (1, 0)
        await asyncio.wait_for(core.dispatcher.drain(pipe), 5)

    run(scenario)


def test_draining_an_ensemble_waits_for_its_requests_and_refuses_new_ones() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("slow", "blocking"), chain("pipe", "slow"))
        pipe = core.manager.route("pipe")
        running = asyncio.create_task(core.infer("pipe"))
        await until(lambda: core.dispatcher.queued(pipe) == 1)
        drain = asyncio.create_task(core.dispatcher.drain(pipe))
        await asyncio.sleep(0.01)
        assert not drain.done()
        with pytest.raises(ModelNotReady, match="being unloaded"):
            core.dispatcher.enqueue(pipe, {"IN": np.ones((1, 2), np.float32)}, ["OUT"])
        fakes.BlockingBackend.gate.set()
        await running
        await asyncio.wait_for(drain, 5)

    run(scenario)


def test_an_ensemble_waits_for_its_members() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(chain("pipe", "a", "b"), member("a"))
        with pytest.raises(ModelNotReady, match=r"step 1 \('b'\): unknown model: 'b'"):
            core.manager.route("pipe")
        state, reason = core.manager.serving_state(core.manager.versions("pipe")[0])
        assert (state.value, reason) == ("UNAVAILABLE", "step 1 ('b'): unknown model: 'b'")
        await core.serve(member("b"))
        assert core.manager.is_ready("pipe")

    run(scenario)


def test_ensembles_that_include_each_other_are_never_ready() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("a"), chain("one", "a", "two"), chain("two", "a", "one"))
        with pytest.raises(
            ModelNotReady, match=r"ensembles include each other \(one -> two -> one\)"
        ):
            core.manager.route("one")

    run(scenario)


def test_an_ensemble_reports_triton_s_numbers_its_steps_compute_times_summed() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("a"), member("b"), chain("pipe", "a", "b"))
        for _ in range(3):
            await core.infer("pipe")
        stats = core.dispatcher.stats(core.manager.route("pipe"))
        steps = [core.dispatcher.stats(core.manager.route(name)) for name in ("a", "b")]
        assert stats.success.count == stats.queue.count == stats.execution_count == 3
        assert 0 < stats.queue.ns < stats.success.ns
        for kind in ("compute_input", "compute_infer", "compute_output"):
            total = getattr(stats, kind)
            assert total.count == 3
            assert total.ns == sum(getattr(step, kind).ns for step in steps), kind
        assert stats.compute_infer.ns > 0
        [(size, batch)] = stats.batches.items()
        assert size == 1 and batch.compute_infer.ns == stats.compute_infer.ns

    run(scenario)


def test_requests_that_ask_for_no_output_are_answered_empty_without_running_a_step() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("a"), chain("pipe", "a"))
        version = core.manager.route("pipe")
        rows = np.ones((1, 2), dtype=np.float32)
        answers = await asyncio.gather(
            *(core.dispatcher.submit(version, {"IN": rows}, []) for _ in range(3))
        )
        assert [dict(answer) for answer in answers] == [{}, {}, {}]
        assert core.dispatcher.stats(core.manager.route("a")).execution_count == 0
        stats = core.dispatcher.stats(version)
        assert (stats.success.count, stats.execution_count, stats.fail.count) == (3, 3, 0)
        assert core.dispatcher.queued(version) == 0

    run(scenario)


PRIORITIES = "dynamic_batching { priority_levels: 2 default_priority_level: 2 }\n"


def test_an_ensemble_request_s_priority_orders_its_steps_in_the_member_s_queue() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("slow", "blocking", PRIORITIES), chain("pipe", "slow"))
        slow = core.manager.route("slow")
        first = asyncio.create_task(core.infer("pipe", 0.0))  # holds the one worker
        await until(lambda: core.scheduler.stats(slow).queue.count == 1)
        waiting = [
            asyncio.create_task(core.infer("pipe", value, priority))
            for value, priority in ((1.0, 0), (2.0, 2), (3.0, 1))
        ]
        await until(lambda: core.scheduler.queued(slow) == 3)
        fakes.BlockingBackend.gate.set()
        await asyncio.gather(first, *waiting)
        assert slow.instances[0].firsts == [0.0, 3.0, 1.0, 2.0]  # priority 1 went first

    run(scenario)


def test_a_priority_a_member_does_not_have_takes_its_default_level() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("a"), chain("pipe", "a"))
        np.testing.assert_array_equal(await core.infer("pipe", 2.0, 5), np.full((1, 2), 2.0))

    run(scenario)


def test_a_step_that_times_out_in_its_queue_fails_the_ensemble_at_once() -> None:
    # NOTE: a step learns of its ending from the scheduler alone (no future callback): a
    # queue timeout must reach it as an answer does, or this ensemble request never ends.
    policy = (
        "dynamic_batching { default_queue_policy { timeout_action: REJECT "
        "default_timeout_microseconds: 50000 } }"
    )

    async def scenario(core: Core) -> None:
        await core.serve(
            member("slow", "blocking", policy), member("b"), chain("pipe", "slow", "b")
        )
        first = asyncio.create_task(core.infer("pipe"))  # holds the one worker
        slow = core.manager.route("slow")
        await until(lambda: core.scheduler.stats(slow).queue.count == 1)
        with pytest.raises(StepFailed) as info:
            await asyncio.wait_for(core.infer("pipe"), 5)
        assert "step 0 (model 'slow' version 1)" in str(info.value)
        assert "timeout" in str(info.value)
        assert core.dispatcher.stats(core.manager.route("pipe")).fail.count == 1
        fakes.BlockingBackend.gate.set()
        np.testing.assert_array_equal(await first, np.ones((1, 2)))

    run(scenario)


# ---- cohorts: requests that arrive together move through the steps as one ----------------

BATCHING = "dynamic_batching { max_queue_delay_microseconds: 2000 }"


async def send(core: Core, model: str, values: list[float]) -> list:
    """Requests arriving in one loop iteration (one cohort), each with its own id; each one's
    answer or error."""
    version = core.manager.route(model)
    calls = [
        core.dispatcher.submit(
            version, {"IN": np.full((1, 2), v, np.float32)}, ["OUT"], request_id=f"r{v:g}"
        )
        for v in values
    ]
    return await asyncio.gather(*calls, return_exceptions=True)


def test_a_cohort_crosses_each_step_as_its_own_requests_with_their_own_ids() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("a", extra=BATCHING), member("b", extra=BATCHING))
        await core.serve(chain("pipe", "a", "b"))
        answers = await send(core, "pipe", [1, 2, 3, 4])
        assert [float(answer["OUT"][0, 0]) for answer in answers] == [1, 2, 3, 4]
        for name in ("a", "b"):
            version = core.manager.route(name)
            assert version.instances[0].batch_ids == [["r1", "r2", "r3", "r4"]]
            stats = core.dispatcher.stats(version)
            assert (stats.success.count, stats.execution_count) == (4, 1)
        stats = core.dispatcher.stats(core.manager.route("pipe"))
        assert (stats.success.count, stats.execution_count, stats.fail.count) == (4, 4, 0)

    run(scenario)


def test_a_request_that_fails_in_a_cohort_s_step_fails_alone() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("a", extra=BATCHING))
        await core.serve(member("bad", "per_request_error", BATCHING), chain("pipe", "a", "bad"))
        first, failed, last = await send(core, "pipe", [1, -2, 3])
        assert float(first["OUT"][0, 0]) == 1 and float(last["OUT"][0, 0]) == 3
        assert isinstance(failed, StepFailed)
        assert "step 1 (model 'bad' version 1)" in str(failed)
        stats = core.dispatcher.stats(core.manager.route("pipe"))
        assert (stats.success.count, stats.fail.count) == (2, 1)

    run(scenario)


def test_a_caller_that_goes_away_leaves_the_rest_of_its_cohort_going() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("slow", "blocking", BATCHING), member("b", extra=BATCHING))
        await core.serve(chain("pipe", "slow", "b"))
        pipe, slow = core.manager.route("pipe"), core.manager.route("slow")
        calls = [
            core.dispatcher.enqueue(pipe, {"IN": np.full((1, 2), v, np.float32)}, ["OUT"])
            for v in (1.0, 2.0, 3.0)
        ]
        await until(lambda: core.scheduler.executing(slow) == 1)  # the cohort's group runs
        core.dispatcher.withdraw(calls[1])
        assert calls[1].future.cancelled() and core.dispatcher.queued(pipe) == 2
        fakes.BlockingBackend.gate.set()
        first, last = await asyncio.gather(calls[0].future, calls[2].future)
        assert (float(first["OUT"][0, 0]), float(last["OUT"][0, 0])) == (1.0, 3.0)
        b = core.manager.route("b")
        assert core.dispatcher.stats(b).success.count == 2  # NOTE: only those still wanted
        stats = core.dispatcher.stats(pipe)
        assert (stats.success.count, stats.fail.count, core.dispatcher.queued(pipe)) == (2, 0, 0)

    run(scenario)


def test_cohorts_hold_at_most_the_ensemble_s_batch_and_members_batch_them_together() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("a", extra=BATCHING), chain("pipe", "a"))
        answers = await send(core, "pipe", [float(v) for v in range(20)])
        assert [float(answer["OUT"][0, 0]) for answer in answers] == list(range(20))
        sizes = core.manager.route("a").instances[0].batch_sizes
        assert sum(sizes) == 20 and max(sizes) <= 8  # the ensemble's (and a's) max_batch_size

    run(scenario)


def test_a_member_without_dynamic_batching_takes_a_cohort_s_requests_one_by_one() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("solo"), chain("pipe", "solo"))
        answers = await send(core, "pipe", [1, 2, 3])
        assert [float(answer["OUT"][0, 0]) for answer in answers] == [1, 2, 3]
        solo = core.manager.route("solo")
        assert solo.instances[0].batch_ids == [["r1"], ["r2"], ["r3"]]

    run(scenario)


def test_a_cohort_s_group_is_split_to_fill_a_member_s_batch() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("slow", "blocking", BATCHING), chain("pipe", "slow"))
        slow = core.manager.route("slow")
        holder = asyncio.ensure_future(send(core, "pipe", [0]))
        await until(lambda: core.scheduler.executing(slow) == 1)
        early = asyncio.ensure_future(send(core, "pipe", [1, 2, 3, 4, 5]))
        await until(lambda: core.scheduler.queued(slow) == 5)
        late = asyncio.ensure_future(send(core, "pipe", [6, 7, 8, 9, 10]))
        await until(lambda: core.scheduler.queued(slow) == 10)
        fakes.BlockingBackend.gate.set()
        answers = [*await holder, *await early, *await late]
        assert [float(answer["OUT"][0, 0]) for answer in answers] == list(range(11))
        assert slow.instances[0].batch_sizes == [1, 8, 2]  # 5 + 3 of the second cohort's 5
        assert slow.instances[0].firsts == list(range(11))

    run(scenario)


def test_an_ensemble_drained_before_its_requests_that_went_away_could_start_stays_quiet() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("a", extra=BATCHING), chain("pipe", "a"))
        pipe = core.manager.route("pipe")
        errors: list = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        gone = core.dispatcher.enqueue(pipe, {"IN": np.ones((1, 2), np.float32)}, ["OUT"])
        core.dispatcher.withdraw(gone)  # NOTE: before the dispatch pass that would start it
        await core.dispatcher.drain(pipe)  # NOTE: at once: nothing is in flight
        await asyncio.sleep(0.01)  # NOTE: that pass runs, and finds the ensemble gone
        answer = await core.dispatcher.submit(
            core.manager.route("a"), {"INPUT": np.ones((1, 2), np.float32)}, ["OUTPUT"]
        )
        np.testing.assert_array_equal(answer["OUTPUT"], np.ones((1, 2)))
        assert errors == []  # NOTE: no callback of the loop failed

    run(scenario)
