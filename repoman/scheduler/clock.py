"""The scheduler's sense of time: the event loop's clock, or a manual one in tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds and timers. Callbacks run on the event loop thread."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Cancellable: ...


class RunningLoop:
    """The running event loop, looked up once and then kept (again if it was closed):
    ``asyncio.get_running_loop()`` costs a system call (``getpid``) each time, and the
    scheduler needs the loop several times per request. Call it on the loop thread."""

    __slots__ = ("_loop",)

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def __call__(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop


class LoopClock:
    """The running event loop's monotonic clock (``loop.time``/``loop.call_at``)."""

    def __init__(self) -> None:
        self._loop = RunningLoop()

    def time(self) -> float:
        return self._loop().time()

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Cancellable:
        return self._loop().call_at(when, callback, *args)
