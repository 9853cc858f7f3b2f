"""Quick executions run on the event loop itself (``InlineGate``), slow ones on the workers."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Executor, Future

import numpy as np

from repoman.config.model import DynamicBatching
from repoman.scheduler import SharedScheduler
from repoman.scheduler.inline import (
    COOL_DOWN,
    INLINE_BELOW_NS,
    INLINE_RUN_NS,
    LEAVE_ABOVE_NS,
    MOST_BELOW_NS,
    OUTSIZED,
    STRAY_NS,
    WINDOW,
    InlineGate,
    inline_limit,
)
from tests import fakes
from tests.fakes import EchoBackend

QUICK = INLINE_BELOW_NS // 10
SLOW = INLINE_BELOW_NS * 5


# ---- the gate on its own ----------------------------------------------------------------


def test_a_gate_goes_inline_once_the_median_of_a_window_is_quick():
    gate = InlineGate(allowed=True)
    times = [SLOW] * (WINDOW // 2 - 1) + [QUICK] * (WINDOW // 2 + 1)
    for taken in times[:-1]:
        assert not gate.observe(taken, inline=False)
        assert not gate.inline
    assert gate.observe(times[-1], inline=False)
    assert gate.inline


def test_a_gate_stays_on_the_workers_while_every_execution_is_slow():
    gate = InlineGate(allowed=True)
    for _ in range(5 * WINDOW):
        gate.observe(INLINE_BELOW_NS, inline=False)
    assert not gate.inline


def test_a_backend_that_does_not_allow_it_never_goes_inline():
    gate = InlineGate(allowed=False)
    for _ in range(5 * WINDOW):
        gate.observe(1, inline=False)
    assert not gate.inline


def _inline_gate() -> InlineGate:
    gate = InlineGate(allowed=True)
    for _ in range(WINDOW):
        gate.observe(QUICK, inline=False)
    assert gate.inline
    return gate


def test_one_stray_execution_on_the_loop_is_ignored_and_a_second_sends_it_back():
    gate = _inline_gate()
    assert not gate.observe(STRAY_NS + 1, inline=True)  # a garbage collection, say
    assert gate.inline
    assert gate.observe(STRAY_NS + 1, inline=True)
    assert not gate.inline


def test_after_going_back_it_waits_a_cool_down_that_doubles_each_time():
    gate = _inline_gate()
    for cool_down in (COOL_DOWN, 2 * COOL_DOWN, 4 * COOL_DOWN):
        gate.observe(STRAY_NS + 1, inline=True)
        gate.observe(STRAY_NS + 1, inline=True)
        assert not gate.inline
        for _ in range(cool_down):
            assert not gate.observe(QUICK, inline=False)
            assert not gate.inline
        assert gate.observe(QUICK, inline=False)
        assert gate.inline


def test_a_median_past_the_limit_on_the_loop_sends_it_back():
    gate = _inline_gate()
    slow = 0
    while gate.inline:
        gate.observe(LEAVE_ABOVE_NS, inline=True)
        slow += 1
    assert slow == WINDOW // 2


def test_a_median_between_the_way_in_and_the_way_out_keeps_it_where_it_is():
    about = (INLINE_BELOW_NS + LEAVE_ABOVE_NS) // 2
    gate = _inline_gate()
    for _ in range(5 * WINDOW):
        assert not gate.observe(about, inline=True)
    assert gate.inline
    workers = InlineGate(allowed=True)
    for _ in range(5 * WINDOW):
        assert not workers.observe(about, inline=False)
    assert not workers.inline


def test_times_from_before_a_switch_are_ignored():
    gate = _inline_gate()
    for _ in range(3 * WINDOW):
        gate.observe(100 * INLINE_BELOW_NS, inline=False)  # a worker's run that ended late
    assert gate.inline


def test_a_run_on_the_loop_is_sized_to_hold_it_about_INLINE_RUN_NS():
    gate = _inline_gate()
    for _ in range(WINDOW):
        gate.observe(INLINE_RUN_NS // 8, inline=True)
    assert gate.run_length(64) == 8
    assert gate.run_length(4) == 4
    for _ in range(WINDOW):
        gate.observe(INLINE_BELOW_NS - 1, inline=True)
    assert gate.inline
    assert gate.run_length(64) == INLINE_RUN_NS // (INLINE_BELOW_NS - 1)


# ---- through the scheduler ----------------------------------------------------------------


class WorkClock:
    """Nanoseconds moved only by the fake backends: an execution takes what it says."""

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def _serve(
    cost_ns,
    *,
    cpu_ns=None,
    pause=0.0,
    allowed=True,
    dynamic=True,
    requests=3 * WINDOW,
    sequential=True,
    limit=None,
):
    """Requests to one fake model whose executions cost what ``cost_ns(i)`` says (the i-th
    execution; ``cpu_ns(i)`` of it its thread's CPU time, where that differs from its wall
    time; ``pause``: each also really sleeps that long, a wait); on which thread each
    execution ran: True for the event loop's."""
    work = WorkClock()
    cpu = WorkClock() if cpu_ns is not None else work
    on_loop: list[bool] = []

    class Timed(EchoBackend):
        may_run_inline = allowed

        def execute(self, batch):
            index = len(on_loop)
            work.ns += cost_ns(index)
            if cpu_ns is not None:
                cpu.ns += cpu_ns(index)
            if pause:
                time.sleep(pause)
            on_loop.append(threading.get_ident() == loop_thread)
            return super().execute(batch)

    async def main():
        nonlocal loop_thread
        loop_thread = threading.get_ident()
        scheduler = SharedScheduler(
            2, timer=work, cpu_timer=cpu, inline_below_ns=limit or INLINE_BELOW_NS
        )
        mv = fakes.make_version(
            Timed,
            max_batch_size=8 if dynamic else 0,
            dynamic=DynamicBatching() if dynamic else None,
        )
        scheduler.open(mv)
        inputs = {"INPUT": np.ones((1, 2) if dynamic else (2,), np.float32)}
        if sequential:
            results = [await scheduler.submit(mv, inputs, ("OUTPUT",)) for _ in range(requests)]
        else:
            results = await asyncio.gather(
                *(scheduler.submit(mv, inputs, ("OUTPUT",)) for _ in range(requests))
            )
        await scheduler.close()
        return results, mv

    loop_thread = 0
    results, mv = asyncio.run(main())
    assert len(results) == requests
    for result in results:
        np.testing.assert_array_equal(result["OUTPUT"], np.ones_like(result["OUTPUT"]))
    return on_loop, mv


def test_a_quick_model_runs_on_the_loop_after_its_first_window():
    on_loop, _ = _serve(lambda i: QUICK)
    assert on_loop == [False] * WINDOW + [True] * (len(on_loop) - WINDOW)


def test_a_slow_model_stays_on_the_workers():
    on_loop, _ = _serve(lambda i: SLOW)
    assert not any(on_loop)


def test_a_quick_model_whose_backend_does_not_allow_it_stays_on_the_workers():
    on_loop, _ = _serve(lambda i: 0, allowed=False)
    assert not any(on_loop)


def test_a_model_that_turns_slow_on_the_loop_goes_back_to_the_workers():
    turn = WINDOW + 3
    on_loop, _ = _serve(lambda i: QUICK if i < turn else LEAVE_ABOVE_NS)
    assert on_loop[WINDOW:turn] == [True] * (turn - WINDOW)
    # NOTE: once the median of the loop's last WINDOW executions is slow, no more
    assert on_loop[turn:] == [True] * (WINDOW // 2) + [False] * (len(on_loop) - turn - WINDOW // 2)


def test_on_the_loop_an_execution_that_never_waited_is_judged_by_its_cpu_time():
    # NOTE: long in wall time, quick in CPU time, no wait: the OS (or the hypervisor) ran
    # something else meanwhile, which would have held the loop wherever the model ran
    turn = WINDOW + 3
    on_loop, _ = _serve(lambda i: QUICK if i < turn else 3 * LEAVE_ABOVE_NS, cpu_ns=lambda i: QUICK)
    assert on_loop == [False] * WINDOW + [True] * (len(on_loop) - WINDOW)


def test_on_the_loop_a_run_preempted_past_stray_ns_that_never_blocked_is_no_stray():
    # NOTE: the OS or the hypervisor held the thread 20 ms: not the model's doing
    turn = WINDOW + 3
    on_loop, _ = _serve(lambda i: QUICK if i < turn else STRAY_NS + 1, cpu_ns=lambda i: QUICK)
    assert on_loop == [False] * WINDOW + [True] * (len(on_loop) - WINDOW)


def test_on_the_loop_a_backend_that_blocks_goes_back_after_its_second_stray():
    # NOTE: quick in CPU time, each past STRAY_NS of wall time: it waits on something
    turn = WINDOW + 3
    on_loop, _ = _serve(
        lambda i: QUICK if i < turn else STRAY_NS + 1, cpu_ns=lambda i: QUICK, pause=0.001
    )
    assert on_loop[turn:] == [True, True] + [False] * (len(on_loop) - turn - 2)


def test_a_model_that_turns_very_slow_goes_back_after_its_second_stray():
    turn = WINDOW + 3
    on_loop, _ = _serve(lambda i: QUICK if i < turn else STRAY_NS + 1)
    assert on_loop[turn:] == [True, True] + [False] * (len(on_loop) - turn - 2)


def test_without_dynamic_batching_a_run_on_the_loop_executes_each_request_alone():
    on_loop, mv = _serve(lambda i: QUICK, dynamic=False, requests=200, sequential=False)
    assert len(on_loop) == 200
    assert set(mv.instances[0].batch_sizes) == {1}
    assert on_loop[:WINDOW] == [False] * WINDOW
    assert on_loop[-1]


def test_an_outsized_execution_does_not_fit_on_the_loop():
    gate = InlineGate(allowed=True)
    assert gate.fits(10**9)  # NOTE: nothing measured yet: the workers decide first
    for _ in range(WINDOW):
        gate.observe(QUICK, inline=False, elements=100)
    assert gate.fits(OUTSIZED * 100)
    assert not gate.fits(OUTSIZED * 100 + 1)


def test_a_run_with_an_outsized_input_goes_to_a_worker_and_the_next_comes_back():
    work = WorkClock()
    ran: list[tuple[int, bool]] = []

    class Timed(EchoBackend):
        may_run_inline = True

        def execute(self, batch):
            work.ns += QUICK
            ran.append((batch.size, threading.get_ident() == loop_thread))
            return super().execute(batch)

    async def main():
        nonlocal loop_thread
        loop_thread = threading.get_ident()
        scheduler = SharedScheduler(2, timer=work, cpu_timer=work, inline_below_ns=INLINE_BELOW_NS)
        mv = fakes.make_version(Timed, max_batch_size=8, dynamic=DynamicBatching())
        scheduler.open(mv)
        for rows in [1] * (WINDOW + 2) + [8, 1]:
            inputs = {"INPUT": np.ones((rows, 2), np.float32)}
            result = await scheduler.submit(mv, inputs, ("OUTPUT",))
            assert result["OUTPUT"].shape == (rows, 2)
        await scheduler.close()

    loop_thread = 0
    asyncio.run(main())
    assert ran[WINDOW:] == [(1, True), (1, True), (8, False), (1, True)]


def test_with_every_worker_busy_an_outsized_run_stays_on_the_loop_rather_than_wait():
    work = WorkClock()
    ran: list[tuple[int, bool]] = []
    release = threading.Event()

    class Busy(EchoBackend):
        def execute(self, batch):
            release.wait(30)
            return super().execute(batch)

    class Timed(EchoBackend):
        may_run_inline = True

        def execute(self, batch):
            work.ns += QUICK
            ran.append((batch.size, threading.get_ident() == loop_thread))
            return super().execute(batch)

    async def main():
        nonlocal loop_thread
        loop_thread = threading.get_ident()
        scheduler = SharedScheduler(1, timer=work, cpu_timer=work, inline_below_ns=INLINE_BELOW_NS)
        quick = fakes.make_version(Timed, name="quick", dynamic=DynamicBatching())
        busy = fakes.make_version(Busy, name="busy", dynamic=DynamicBatching())
        scheduler.open(quick)
        scheduler.open(busy)
        for _ in range(WINDOW + 1):
            await scheduler.submit(quick, {"INPUT": np.ones((1, 2), np.float32)}, ("OUTPUT",))
        holding = asyncio.ensure_future(
            scheduler.submit(busy, {"INPUT": np.ones((1, 2), np.float32)}, ("OUTPUT",))
        )
        for _ in range(500):  # NOTE: until the one worker holds busy's batch (at most 5 s)
            if scheduler.executing(busy):
                break
            await asyncio.sleep(0.01)
        assert scheduler.executing(busy) == 1
        outsized = {"INPUT": np.ones((8, 2), np.float32)}
        result = await asyncio.wait_for(scheduler.submit(quick, outsized, ("OUTPUT",)), 10)
        assert result["OUTPUT"].shape == (8, 2)
        release.set()
        await holding
        await scheduler.close()

    loop_thread = 0
    asyncio.run(main())
    assert ran[-1] == (8, True)


# ---- the limit, measured on the machine ---------------------------------------------------


class Costly(Executor):
    """Runs each call at once, after burning ``cost_ns`` of CPU: a hand-off that costs that."""

    def __init__(self, cost_ns: int) -> None:
        self.cost_ns = cost_ns

    def submit(self, fn, /, *args, **kwargs):
        until = time.process_time_ns() + self.cost_ns
        while time.process_time_ns() < until:
            pass
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_the_limit_is_four_bare_round_trips_where_they_cost_more_than_the_default_allows():
    round_trip = INLINE_BELOW_NS // 2  # NOTE: twice what the default limit assumes
    limit = inline_limit(Costly(round_trip))
    assert 4 * round_trip <= limit < 4 * round_trip + INLINE_BELOW_NS // 2


def test_the_limit_stays_between_the_default_and_its_ceiling():
    assert inline_limit(Costly(0)) == INLINE_BELOW_NS
    assert inline_limit(Costly(MOST_BELOW_NS)) == MOST_BELOW_NS


def test_under_a_higher_limit_slower_executions_run_on_the_loop_and_stay_there():
    # NOTE: twice the default limit: under the default, they would never come to the loop
    on_loop, _ = _serve(lambda i: 2 * INLINE_BELOW_NS, limit=3 * INLINE_BELOW_NS)
    assert on_loop == [False] * WINDOW + [True] * (len(on_loop) - WINDOW)
    on_loop, _ = _serve(lambda i: 2 * INLINE_BELOW_NS)
    assert not any(on_loop)
