"""Serving a request leaves no reference cycle behind: what a request allocates is freed by
reference counting as soon as it is answered, never left for the garbage collector (whose
passes over every live object, in a busy server, cost more than the requests themselves)."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import numpy as np

from repoman.backends import Batch
from tests.pipeline.test_dispatch import Core, chain, member, run
from tests.plugins.test_python_backend import ADD_ONE, floats, loaded


@contextmanager
def cyclic_garbage() -> Iterator[Counter[str]]:
    """The types of the objects that only the garbage collector could free, made within."""
    found: Counter[str] = Counter()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.update(type(o).__qualname__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def requests(core: Core, model: str, count: int) -> Callable[[], Awaitable[None]]:
    async def send() -> None:
        answers = await asyncio.gather(*(core.infer(model, float(i)) for i in range(count)))
        for i, answer in enumerate(answers):
            np.testing.assert_array_equal(answer, np.full((1, 2), float(i)))

    return send


def test_ensemble_requests_leave_no_cycles_on_workers_or_on_the_loop() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(
            member("w1"), member("w2", "loop"), member("w3"), chain("pipe", "w1", "w2", "w3")
        )
        send = requests(core, "pipe", 64)
        await send()  # NOTE: warm-up: caches and lazily built state are not garbage
        with cyclic_garbage() as found:
            for _ in range(3):
                await send()
        assert not found, found.most_common(8)

    run(scenario)


def test_plain_requests_leave_no_cycles() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("w"), member("l", "loop"))
        for model in ("w", "l"):
            version = core.manager.route(model)

            async def send(version=version) -> None:
                rows = {"INPUT": np.ones((1, 2), np.float32)}
                submit = core.dispatcher.submit
                await asyncio.gather(*(submit(version, rows, ["OUTPUT"]) for _ in range(64)))

            await send()
            with cyclic_garbage() as found:
                await send()
            assert not found, (model, found.most_common(8))

    run(scenario)


def test_a_batch_through_a_python_stub_leaves_no_cycles(tmp_path) -> None:
    backend = loaded(tmp_path / "add_one", ADD_ONE)

    async def batches() -> None:
        for _ in range(20):
            batch = Batch([floats([1.0, 2.0]) for _ in range(4)], ("OUT",))
            results = await backend.execute_async(batch)
            for result in results:
                np.testing.assert_array_equal(result["OUT"], [[2.0, 3.0]])

    try:
        asyncio.run(batches())
        with cyclic_garbage() as found:
            asyncio.run(batches())
        # NOTE: a fresh event loop per asyncio.run leaves its own; only ours are counted
        ours = {k: v for k, v in found.items() if k in ("Exchange", "_Calls", "Future", "Batch")}
        assert not ours, found.most_common(8)
    finally:
        backend.unload()
