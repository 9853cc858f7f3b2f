"""The manager under a memory budget, in process: fake backends that hold real memory, a fake
clock and made-up usage, so which version goes is decided by the test, not by timing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from repoman.aspired import Aspired, AspiredVersion
from repoman.config.model import ModelConfig, ModelManagement, TensorConfig
from repoman.errors import ModelNotReady
from repoman.manager import MemoryBooks, ModelManager, ModelVersion, State
from repoman.types import DataType
from tests.fakes import ManualClock
from tests.manager.test_manager import RecordingServing, registry

MB = 1 << 20


def config(name: str, mb: float = 8, **management) -> ModelConfig:
    tensor = (TensorConfig("INPUT", DataType.FP32, (1,)),)
    out = (TensorConfig("OUTPUT", DataType.FP32, (1,)),)
    return ModelConfig(
        name=name,
        platform="",
        backend="ballast",
        max_batch_size=0,
        inputs=tensor,
        outputs=out,
        parameters={"ballast_mb": str(mb)},
        management=ModelManagement(**{"load": "LAZY", **management}),
    )


def aspired(name: str, mb: float = 8, files_mb: float | None = None, **management) -> Aspired:
    size = int((mb if files_mb is None else files_mb) * MB)
    version = AspiredVersion(
        1, config(name, mb, **management), (("model.txt", size, 1),), Path(".")
    )
    return Aspired(name, (version,), frozenset({1}))


class Usage:
    """What the scheduler would say: when each model last answered, and how often."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.uses: dict[str, int] = {}
        self.running: set[str] = set()

    def __call__(self, mv: ModelVersion) -> tuple[float, int, bool, bool]:
        last, uses = self.last.get(mv.model, 0.0), self.uses.get(mv.model, 0)
        return last, uses, False, mv.model in self.running

    def used(self, name: str, at: float, times: int = 1) -> None:
        self.last[name] = at
        self.uses[name] = self.uses.get(name, 0) + times


def manager(budget_mb: float | None, clock: ManualClock, usage: Usage) -> ModelManager:
    books = MemoryBooks(None if budget_mb is None else int(budget_mb * MB), clock=clock.time)
    return ModelManager(registry(), RecordingServing(), books=books, usage=usage)


def states(m: ModelManager) -> dict[str, str]:
    return {name: m.versions(name)[0].state.value for name in m.model_names()}


async def serve(m: ModelManager, name: str) -> ModelVersion:
    """What a request does: route, and wait for the load when the version is AVAILABLE."""
    mv = m.route(name)
    return await m.activate(mv) if mv.state is State.AVAILABLE else mv


def test_a_lazy_version_is_available_until_asked_for_then_ready_and_measured() -> None:
    clock, usage = ManualClock(), Usage()

    async def go() -> None:
        m = manager(None, clock, usage)
        await m.apply(aspired("a"))
        mv = m.route("a")
        assert (mv.state, mv.reason) == (State.AVAILABLE, "not loaded: loads on its first request")
        assert (mv.memory_bytes, mv.memory_measured) == (8 * MB, False)  # predicted: the files
        first, second = await asyncio.gather(m.activate(mv), m.activate(mv))
        assert first is second and first.state is State.READY  # NOTE: one load for both
        # NOTE: 8 MiB of pages touched; the interpreter's own allocations meanwhile are noise.
        assert 8 * MB <= first.memory_bytes < 12 * MB and first.memory_measured
        assert m.books.loads == {"lazy": 1} and m.books.used == first.memory_bytes
        await m.shutdown()
        assert m.books.used == 0

    asyncio.run(go())


def test_the_least_recently_used_goes_first_on_the_fake_clock() -> None:
    clock, usage = ManualClock(start=0.0), Usage()

    async def go() -> None:
        m = manager(20, clock, usage)  # room for two 8 MiB versions, not three
        for name in "abc":
            await m.apply(aspired(name))
        await serve(m, "a")
        usage.used("a", 10)
        await serve(m, "b")
        usage.used("b", 20)
        clock.advance(30)
        usage.used("a", 30)  # a again: b is now the least recent
        await serve(m, "c")
        assert states(m) == {"a": "READY", "b": "AVAILABLE", "c": "READY"}
        assert m.route("b").reason == "unloaded: memory budget"
        assert m.books.evictions == {"memory_budget": 1}
        clock.advance(100)
        usage.used("c", 130)
        usage.used("a", 120)
        await serve(m, "b")  # c is the most recent now; a goes
        assert states(m) == {"a": "AVAILABLE", "b": "READY", "c": "READY"}
        assert m.books.used <= 20 * MB
        await m.shutdown()

    asyncio.run(go())


def test_a_version_running_a_batch_is_not_evicted_though_least_recent() -> None:
    # NOTE: its batch may be waiting for a call (BLS) to the model being made room for;
    # evicting it would drain it, and the drain would wait for that very batch
    clock, usage = ManualClock(start=0.0), Usage()

    async def go() -> None:
        m = manager(20, clock, usage)  # room for two 8 MiB versions, not three
        for name in "abc":
            await m.apply(aspired(name))
        await serve(m, "a")
        usage.used("a", 10)
        await serve(m, "b")
        usage.used("b", 20)
        usage.running.add("a")  # a is the least recent, but a batch of it runs now
        await serve(m, "c")
        assert states(m) == {"a": "READY", "b": "AVAILABLE", "c": "READY"}
        await m.shutdown()

    asyncio.run(go())


def test_a_pinned_version_is_never_evicted() -> None:
    clock, usage = ManualClock(start=0.0), Usage()

    async def go() -> None:
        m = manager(20, clock, usage)
        await m.apply(aspired("pinned", load="EAGER", pinned=True))  # never used at all
        await m.apply(aspired("b"))
        await m.apply(aspired("c"))
        await serve(m, "b")
        usage.used("b", 50)
        clock.advance(60)
        await serve(m, "c")
        assert states(m) == {"b": "AVAILABLE", "c": "READY", "pinned": "READY"}
        await m.shutdown()

    asyncio.run(go())


def test_a_version_larger_than_the_whole_budget_fails_with_the_reason() -> None:
    clock, usage = ManualClock(), Usage()

    async def go() -> None:
        m = manager(20, clock, usage)
        await m.apply(aspired("big", mb=30))
        await m.apply(aspired("small"))
        await serve(m, "small")
        with pytest.raises(ModelNotReady, match=r"more than the whole memory budget \(20.0 MiB\)"):
            await serve(m, "big")
        assert states(m) == {"big": "FAILED", "small": "READY"}  # NOTE: nobody evicted for it
        assert m.books.evictions == {}
        await m.shutdown()

    asyncio.run(go())


def test_a_version_whose_files_understate_it_is_unloaded_once_measured_over_the_budget() -> None:
    clock, usage = ManualClock(), Usage()

    async def go() -> None:
        m = manager(20, clock, usage)
        await m.apply(aspired("liar", mb=30, files_mb=1))
        with pytest.raises(ModelNotReady, match=r"took 3\d.\d MiB to load, more than the whole"):
            await serve(m, "liar")
        assert states(m) == {"liar": "FAILED"} and m.books.used == 0
        await m.shutdown()

    asyncio.run(go())


def test_an_unused_version_is_unloaded_after_its_idle_time_and_loads_again() -> None:
    clock, usage = ManualClock(start=0.0), Usage()

    async def go() -> None:
        m = manager(None, clock, usage)
        await m.apply(aspired("a", idle_unload_seconds=60))
        await m.apply(aspired("forever"))
        await serve(m, "a")
        await serve(m, "forever")
        usage.used("a", 0)
        clock.advance(59)
        assert await m.unload_idle() == 0
        clock.advance(1)
        assert await m.unload_idle() == 1
        assert states(m) == {"a": "AVAILABLE", "forever": "READY"}
        assert m.route("a").reason == "unloaded: idle"
        assert m.books.evictions == {"idle": 1}
        assert (await serve(m, "a")).state is State.READY
        await m.shutdown()

    asyncio.run(go())


def test_an_eager_version_the_budget_unloaded_stays_parked_through_a_rescan() -> None:
    clock, usage = ManualClock(start=0.0), Usage()

    async def go() -> None:
        m = manager(12, clock, usage)
        await m.apply(aspired("a", load="EAGER"))
        await m.apply(aspired("b", load="EAGER"))  # no room for both: a goes
        assert states(m) == {"a": "AVAILABLE", "b": "READY"}
        await m.apply(aspired("a", load="EAGER"))  # the next scan: a is not loaded again
        assert states(m) == {"a": "AVAILABLE", "b": "READY"}
        assert m.books.loads == {"eager": 2}
        await m.shutdown()

    asyncio.run(go())
