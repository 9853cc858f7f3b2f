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


class LoopClock:
    """The running event loop's monotonic clock (``loop.time``/``loop.call_at``).

    The loop is looked up once, at the first call, then kept (a new one if it was closed):
    ``asyncio.get_running_loop`` costs a system call (``getpid``) each time, and the
    scheduler reads the clock several times per request.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def time(self) -> float:
        return self.loop.time()

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Cancellable:
        return self.loop.call_at(when, callback, *args)
