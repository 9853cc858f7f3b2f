"""The batch workers: daemon threads, one of which can be written off when a call never returns."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_STOP = object()


class WorkerPool(Executor):
    """``size`` daemon threads running submitted calls, like a ThreadPoolExecutor, except that:

    - a call that never returns can be written off (:meth:`write_off`): a new thread takes
      its place at once, and the stuck one exits if its call ever returns;
    - the threads are daemons and :meth:`shutdown` never waits for a call that is stuck, so
      a hung backend can neither hold the pool nor keep the process from exiting.
    """

    def __init__(self, size: int, name: str = "repoman-batch") -> None:
        self._name = name
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._running: dict[Future[Any], threading.Thread] = {}
        self._retired: set[threading.Thread] = set()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._closed = False
        for _ in range(size):
            self._spawn()

    @property
    def size(self) -> int:
        """Threads that take work (written-off ones not counted)."""
        with self._lock:
            return len(self._threads - self._retired)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._closed:
            raise RuntimeError("the worker pool is shut down")
        future: Future[Any] = Future()
        self._work.put((future, fn, args, kwargs))
        return future

    def grow(self) -> None:
        """One more thread (a running call waits on others and lends its place)."""
        if not self._closed:
            self._spawn()

    def shrink(self) -> None:
        """One thread fewer, once one is free (the lent place is given back)."""
        if not self._closed:
            self._work.put(_STOP)

    def write_off(self, future: Future[Any]) -> bool:
        """Give up on the thread running ``future``: it takes no more work, a new thread
        replaces it. A call not started yet is cancelled instead (no thread is stuck). False
        when ``future`` already finished."""
        if future.cancel():
            return True
        with self._lock:
            thread = self._running.get(future)
            if thread is None or thread in self._retired or future.done():
                return False
            self._retired.add(thread)
        self._spawn()
        return True

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; with ``wait``, join the threads that are not stuck."""
        self._closed = True
        with self._lock:
            healthy = [t for t in self._threads if t not in self._retired]
        for _ in healthy:
            self._work.put(_STOP)
        if wait:
            for thread in healthy:
                thread.join()

    def join(self, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout`` seconds in all) for the threads that are not written off
        to end after :meth:`shutdown`; whether they all did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            healthy = [t for t in self._threads if t not in self._retired]
        for thread in healthy:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
        return not any(thread.is_alive() for thread in healthy)

    def _spawn(self) -> None:
        thread = threading.Thread(
            target=self._loop, name=f"{self._name}-{next(self._numbers)}", daemon=True
        )
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _loop(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                item = self._work.get()
                if item is _STOP:
                    return
                future, fn, args, kwargs = item
                # NOTE: registered before it counts as running, so that write_off never
                # sees a running call without its thread.
                with self._lock:
                    self._running[future] = me
                if not future.set_running_or_notify_cancel():
                    with self._lock:
                        self._running.pop(future, None)
                    continue
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                finally:
                    with self._lock:
                        self._running.pop(future, None)
                        retired = me in self._retired
                if retired:
                    return  # NOTE: its place was taken while it was stuck
        finally:
            with self._lock:
                self._threads.discard(me)
                self._retired.discard(me)
