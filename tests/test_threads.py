"""in_thread: a call off the event loop, and the deadline it tells the code it runs."""

from __future__ import annotations

import asyncio
import time

from repoman.threads import in_thread, time_left


def test_a_call_sees_the_time_left_before_its_deadline() -> None:
    async def run() -> tuple[float | None, float | None]:
        bounded = await in_thread(time_left, deadline=time.monotonic() + 30)
        unbounded = await in_thread(time_left)
        return bounded, unbounded

    bounded, unbounded = asyncio.run(run())
    assert bounded is not None and 20 < bounded <= 30
    assert unbounded is None


def test_a_passed_deadline_leaves_no_time_and_the_caller_s_thread_has_none() -> None:
    async def run() -> float | None:
        return await in_thread(time_left, deadline=time.monotonic() - 5)

    assert asyncio.run(run()) == 0.0
    assert time_left() is None
