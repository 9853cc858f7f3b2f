"""The closed loop: C asyncio workers on keep-alive connections, each sending its next request
as soon as the last one's answer is in, timing every request with ``perf_counter_ns``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import orjson
from yarl import URL

from repoman.perf.http1 import Connection, build_request
from repoman.perf.inputs import Body
from repoman.perf.options import describe

NEVER = 1 << 62  # a perf_counter_ns far in the future: "no window bound yet"
DRAIN_GRACE_S = 1.0  # after a step, in-flight requests get this long before being cancelled
MAX_MESSAGES = 8  # distinct error messages kept per step; the rest count under "other"


@dataclass(frozen=True)
class Step:
    """One load level. Completions in [window_start_ns, window end] are measured; the window
    ends ``duration_s`` after it starts, or at the ``requests``-th measured completion."""

    concurrency: int
    window_start_ns: int  # absolute perf_counter_ns (CLOCK_MONOTONIC: the same in every process)
    duration_s: float | None
    requests: int | None


@dataclass
class StepResult:
    """What one step measured; results of several client processes merge into one."""

    concurrency: int
    window_start_ns: int
    window_end_ns: int
    latencies_ns: np.ndarray  # successful measured requests, int64
    completed: int = 0  # measured completions, successful or not
    failed: int = 0  # measured failures
    failed_unmeasured: int = 0  # failures during warm-up or the drain after the window
    messages: dict[str, int] = field(default_factory=dict)  # error message -> count
    client_cpu_s: float = 0.0  # CPU the load generator itself used over the whole step
    client_wall_s: float = 0.0  # the step's wall time, warm-up included

    @property
    def window_s(self) -> float:
        return max(self.window_end_ns - self.window_start_ns, 1) / 1e9

    @classmethod
    def merge(cls, parts: Sequence[StepResult]) -> StepResult:
        messages: dict[str, int] = {}
        for part in parts:
            for message, count in part.messages.items():
                messages[message] = messages.get(message, 0) + count
        return cls(
            concurrency=sum(p.concurrency for p in parts),
            window_start_ns=min(p.window_start_ns for p in parts),
            window_end_ns=max(p.window_end_ns for p in parts),
            latencies_ns=np.concatenate([p.latencies_ns for p in parts]),
            completed=sum(p.completed for p in parts),
            failed=sum(p.failed for p in parts),
            failed_unmeasured=sum(p.failed_unmeasured for p in parts),
            messages=messages,
            client_cpu_s=sum(p.client_cpu_s for p in parts),
            client_wall_s=max(p.client_wall_s for p in parts),
        )


def error_message(status: int, payload: bytes) -> str:
    """``HTTP 400: <the server's "error">`` (or the start of the body when it is not v2 JSON)."""
    try:
        complaint = orjson.loads(payload)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        complaint = payload[:200].decode(errors="replace").strip()
    return f"HTTP {status}: {complaint}" if complaint else f"HTTP {status}"


class ClosedLoop:
    """One step's workers in this process. ``completed``/``failed`` can be read while it runs.

    ``client`` is "raw" (``http1.Connection`` per worker, the default: the cheapest per
    request) or "aiohttp" (one ``ClientSession`` with ``TCPConnector(limit=C)``, keep-alive).
    """

    def __init__(
        self, url: URL, bodies: Sequence[Body], step: Step, timeout_s: float, client: str = "raw"
    ) -> None:
        self._url = url
        self._bodies = bodies
        self._step = step
        self._timeout_s = timeout_s
        self._client = client
        self._window_end_ns = NEVER
        self._stop = False
        self._done = asyncio.Event()
        self._latencies: list[int] = []
        self.result = StepResult(
            step.concurrency, step.window_start_ns, NEVER, np.empty(0, np.int64)
        )

    async def run(self) -> StepResult:
        # NOTE: process CPU over the step tells whether the client could be the bottleneck:
        # near one core (100%) per process means the numbers measure the client, not the server.
        cpu, wall = time.process_time(), time.perf_counter()
        step = self._step
        if step.duration_s is not None:
            self._window_end_ns = step.window_start_ns + int(step.duration_s * 1e9)
        if self._client == "aiohttp":
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=step.concurrency, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
            ) as session:
                await self._drive(self._aiohttp_worker(session, k) for k in range(step.concurrency))
        else:
            wire = [build_request(self._url, body.data, body.headers) for body in self._bodies]
            await self._drive(self._raw_worker(wire, k) for k in range(step.concurrency))
        self.result.client_cpu_s = time.process_time() - cpu
        self.result.client_wall_s = time.perf_counter() - wall
        self.result.window_end_ns = self._window_end_ns
        self.result.latencies_ns = np.array(self._latencies, dtype=np.int64)
        return self.result

    async def _drive(self, coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
        workers = [asyncio.create_task(coroutine) for coroutine in coroutines]
        if self._step.duration_s is not None:
            await asyncio.sleep(max(self._window_end_ns - time.perf_counter_ns(), 0) / 1e9)
        else:
            await self._done.wait()
        self._stop = True
        _, pending = await asyncio.wait(workers, timeout=DRAIN_GRACE_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    def _answered(self, start: int, end: int, status: int, payload: bytes) -> None:
        if status != 200:
            self._fail(end, error_message(status, payload))
        elif self._step.window_start_ns <= end <= self._window_end_ns:
            self._latencies.append(end - start)
            self._count(end)

    def _fail(self, end_ns: int, message: str) -> None:
        result = self.result
        if self._step.window_start_ns <= end_ns <= self._window_end_ns:
            result.failed += 1
            self._count(end_ns)
        else:
            result.failed_unmeasured += 1
        if message in result.messages or len(result.messages) < MAX_MESSAGES:
            result.messages[message] = result.messages.get(message, 0) + 1
        else:
            result.messages["other errors"] = result.messages.get("other errors", 0) + 1

    def _count(self, end_ns: int) -> None:
        self.result.completed += 1
        if self.result.completed == self._step.requests:
            self._window_end_ns = end_ns
            self._stop = True
            self._done.set()

    # NOTE: the workers are the hot path: locals instead of attribute look-ups and no decoding
    # of the answer, so that the client stays cheaper than the server it measures.

    async def _raw_worker(self, wire: Sequence[bytes], offset: int) -> None:
        count, url, timeout_s, clock = len(wire), self._url, self._timeout_s, time.perf_counter_ns
        answered, index = self._answered, offset
        connection: Connection | None = None
        try:
            while not self._stop:
                request = wire[index % count]
                index += 1
                start = clock()
                try:
                    if connection is None or connection.closed:
                        connection = await Connection.open(url, timeout_s)
                    status, payload = await connection.send(request, timeout_s)
                except Exception as exc:  # refused, reset, timed out: an error, not a traceback
                    self._fail(clock(), describe(exc))
                    continue
                answered(start, clock(), status, payload)
        finally:
            if connection is not None:
                connection.close()

    async def _aiohttp_worker(self, session: aiohttp.ClientSession, offset: int) -> None:
        bodies, count = self._bodies, len(self._bodies)
        post, url, clock = session.post, self._url, time.perf_counter_ns
        answered, index = self._answered, offset
        while not self._stop:
            body = bodies[index % count]
            index += 1
            start = clock()
            try:
                async with post(url, data=body.data, headers=body.headers) as response:
                    payload = await response.read()
                    status = response.status
            except Exception as exc:  # refused, reset, timed out: an error, not a traceback
                self._fail(clock(), describe(exc))
                continue
            answered(start, clock(), status, payload)
