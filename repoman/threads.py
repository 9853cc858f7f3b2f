"""Blocking calls off the event loop on a thread of their own, which a time limit can abandon,
and the deadline such a call runs under (so work it starts in other processes ends with it)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "repoman_deadline", default=None
)


def time_left() -> float | None:
    """Seconds until the deadline the current call runs under (``in_thread(deadline=...)``),
    at least 0; None when it has none.

    Code that starts work the caller cannot stop (a child process) bounds it by this, so
    nothing outlives a caller that gave up.
    """
    deadline = _deadline.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def in_thread(
    fn: Callable[..., T], *args: Any, name: str = "repoman-call", deadline: float | None = None
) -> asyncio.Future[T]:
    """Run ``fn(*args)`` on a new daemon thread; the future resolves with what it returns.

    Unlike a pool, nothing waits behind a call that never returns: a caller that gives up
    (``asyncio.wait_for``) leaves the thread running alone, and a daemon thread never keeps
    the process from exiting. For rare, slow calls (loading, describing a model), not for
    the request path. ``deadline`` (a ``time.monotonic()`` value) is what ``time_left()``
    measures within ``fn``.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return  # NOTE: the caller cancelled it (gave up)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        _deadline.set(deadline)  # NOTE: a new thread starts with an empty context
        try:
            result = fn(*args)
        except BaseException as exc:
            outcome: tuple[Any, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        # NOTE: the loop may be gone by the time an abandoned call returns.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
