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
    """The running event loop's monotonic clock (``loop.time``/``loop.call_at``)."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Cancellable:
        return asyncio.get_running_loop().call_at(when, callback, *args)
