"""Where a step's workers run: in this process, or split over N client processes."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from yarl import URL

from repoman.perf.inputs import Body
from repoman.perf.loadgen import ClosedLoop, Step, StepResult
from repoman.perf.options import UsageError

START_TIMEOUT_S = 60.0
REPORT_EVERY_S = 0.1


class Driver(Protocol):
    """Runs steps; ``progress()`` gives (measured completions, failures) of the current one."""

    async def run(self, step: Step) -> StepResult: ...

    def progress(self) -> tuple[int, int]: ...

    def close(self) -> None: ...


class InProcess:
    """Every worker on this process's event loop: the default, and the cheapest on few cores."""

    def __init__(self, url: URL, bodies: Sequence[Body], timeout_s: float, client: str) -> None:
        self._url, self._bodies, self._timeout_s, self._client = url, bodies, timeout_s, client
        self._loop: ClosedLoop | None = None

    async def run(self, step: Step) -> StepResult:
        self._loop = ClosedLoop(self._url, self._bodies, step, self._timeout_s, self._client)
        return await self._loop.run()

    def progress(self) -> tuple[int, int]:
        if self._loop is None:
            return 0, 0
        result = self._loop.result
        return result.completed, result.failed + result.failed_unmeasured

    def close(self) -> None:
        pass


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal non-negative shares, larger ones first."""
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


class ProcessPool:
    """N forked client processes, each running its share of a step's workers in its own loop.

    Windows line up because ``Step.window_start_ns`` is absolute and ``perf_counter_ns`` is
    CLOCK_MONOTONIC, shared by every process; the parent merges the children's results.
    """

    def __init__(
        self, count: int, url: URL, bodies: Sequence[Body], timeout_s: float, client: str
    ) -> None:
        # NOTE: fork, called while no event loop runs (see runner.run): spawn would re-run the
        # main module, and ``python -m repoman`` has no ``__main__`` guard to stop it.
        context = multiprocessing.get_context("fork")
        self._counters: Any = context.Array("q", 2 * count, lock=False)
        self._connections: list[multiprocessing.connection.Connection] = []
        self._children: list[Any] = []
        for index in range(count):
            mine, theirs = context.Pipe()
            child = context.Process(
                target=_child_main,
                args=(theirs, index, self._counters, url, list(bodies), timeout_s, client),
                daemon=True,
            )
            child.start()
            theirs.close()
            self._connections.append(mine)
            self._children.append(child)
        for connection in self._connections:  # all listening before the first window opens
            if not connection.poll(START_TIMEOUT_S):
                self.close()
                raise UsageError("a client process did not start")
            connection.recv()

    async def run(self, step: Step) -> StepResult:
        active = min(len(self._connections), step.concurrency, step.requests or step.concurrency)
        shares = split(step.concurrency, active)
        requests = split(step.requests, active) if step.requests else [None] * active
        self._counters[:] = [0] * len(self._counters)
        for connection, share, count in zip(self._connections, shares, requests, strict=False):
            connection.send(replace(step, concurrency=share, requests=count))
        try:
            parts = await asyncio.gather(
                *(asyncio.to_thread(connection.recv) for connection in self._connections[:active])
            )
        except EOFError:
            raise UsageError("a client process ended in the middle of a step") from None
        return StepResult.merge(parts)

    def progress(self) -> tuple[int, int]:
        counters = self._counters[:]
        return sum(counters[0::2]), sum(counters[1::2])

    def close(self) -> None:
        for connection in self._connections:
            with contextlib.suppress(OSError):  # the child may be gone already
                connection.send(None)
        for child in self._children:
            child.join(2)
            if child.is_alive():
                child.terminate()


def _child_main(
    connection: multiprocessing.connection.Connection,
    index: int,
    counters: Any,
    url: URL,
    bodies: list[Body],
    timeout_s: float,
    client: str,
) -> None:
    async def run(step: Step) -> StepResult:
        loop = ClosedLoop(url, bodies, step, timeout_s, client)
        measuring = asyncio.create_task(loop.run())
        while not measuring.done():
            result = loop.result
            counters[2 * index] = result.completed
            counters[2 * index + 1] = result.failed + result.failed_unmeasured
            await asyncio.wait([measuring], timeout=REPORT_EVERY_S)
        return measuring.result()

    try:
        connection.send("ready")
        while (step := connection.recv()) is not None:
            connection.send(asyncio.run(run(step)))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass  # the parent is gone or interrupted: it reports, the child just ends
