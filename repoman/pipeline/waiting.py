"""A request to a version that is not in memory (AVAILABLE): it waits for the version's load
(within the request's timeout), then goes on as any request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Protocol

import numpy as np

from repoman.errors import ModelNotReady, RepomanError, RequestTimeout
from repoman.manager import ModelVersion, State
from repoman.pipeline.runner import Handle
from repoman.scheduler import RequestOptions

Activate = Callable[[ModelVersion], AbstractAsyncContextManager[ModelVersion]]
"""The manager's lazy load: the READY version that serves once ``version`` is loaded, kept in
memory until the block ends (the request is in its queue by then)."""

RETRIES = 3
"""Loads a request waits for at most: the version it waited for can be unloaded again (to
make room for another) before the request reaches its queue."""


def _queue_timeout_us(version: ModelVersion) -> int:
    """The queue policy's default timeout (0: none): a request without a timeout of its own
    waits no longer for a load than it would in the queue."""
    batching = version.config.dynamic_batching
    return batching.default_queue_policy.default_timeout_microseconds if batching else 0


class Door(Protocol):
    """What a waiting request needs from the dispatcher: where to go once loaded."""

    def route(self, model: str, version: int | None) -> ModelVersion: ...

    def enqueue(
        self,
        version: ModelVersion,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        options: RequestOptions,
    ) -> Handle: ...

    def withdraw(self, item: Handle) -> None: ...


class WaitingRequest:
    """A :class:`~repoman.pipeline.runner.Handle` for a request to an AVAILABLE version.

    Event loop only. ``future`` gets the outputs, or the error: ModelNotReady (why the version
    could not load), RequestTimeout (the load outlasted the request's timeout). ``waited``
    is told how long the load kept the request, once it is on its way.
    """

    def __init__(
        self,
        door: Door,
        activate: Activate,
        version: ModelVersion,
        inputs: Mapping[str, np.ndarray],
        outputs: tuple[str, ...],
        waited: Callable[[ModelVersion, float], None],
        options: RequestOptions,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.future: asyncio.Future[Mapping[str, np.ndarray]] = loop.create_future()
        self._door, self._activate, self._waited = door, activate, waited
        self._inputs, self._outputs = inputs, outputs
        self._options = options
        self._inner: Handle | None = None
        self.on_answer: Callable[[], None] | None = None
        """Called when its future is settled (an iteration after the request it waited to
        send was answered); not for a withdrawal."""
        self._task = loop.create_task(self._run(version))

    @property
    def compute(self) -> tuple[int, int, int] | None:
        """The compute times of the request it sent once the version loaded."""
        return None if self._inner is None else self._inner.compute

    def cancel(self) -> None:
        """The caller went away: stop waiting (the load goes on) or withdraw the request."""
        self._task.cancel()
        if self._inner is not None:
            self._door.withdraw(self._inner)
        if not self.future.done():
            self.future.cancel()

    async def _run(self, version: ModelVersion) -> None:
        started = time.perf_counter()
        limit_us = self._options.timeout_us or _queue_timeout_us(version)
        deadline = None if not limit_us else started + limit_us / 1e6
        try:
            for _ in range(RETRIES):
                if version.state is State.READY:
                    self._enqueue(version, deadline)
                    break
                if version.state is not State.AVAILABLE:
                    # NOTE: unloaded again before this request got to it: route once more.
                    version = self._door.route(version.model, version.version)
                    continue
                left = None if deadline is None else max(deadline - time.perf_counter(), 0)
                try:
                    async with asyncio.timeout(left), self._activate(version) as loaded:
                        self._waited(loaded, time.perf_counter() - started)
                        self._enqueue(loaded, deadline)
                except TimeoutError:
                    raise RequestTimeout(
                        f"model '{version.model}' version {version.version} did not load "
                        f"within the request's timeout ({limit_us} us)"
                    ) from None
                break
            else:
                raise ModelNotReady(version.model, version.version, "unloaded while loading")
            assert self._inner is not None
            result = await asyncio.shield(self._inner.future)
        except RepomanError as exc:
            self._settle(exc)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: the request is answered with it, not left hanging
            self._settle(exc)
            return
        self._settle(result)

    def _settle(self, outcome: Mapping[str, np.ndarray] | BaseException) -> None:
        if self.future.done():
            return
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)
        listener, self.on_answer = self.on_answer, None  # NOTE: it holds this request
        if listener is not None:
            listener()

    def _enqueue(self, version: ModelVersion, deadline: float | None) -> None:
        left_us = None
        if deadline is not None:
            left_us = max(int((deadline - time.perf_counter()) * 1e6), 1)
        # NOTE: what is left of its time (none: no timeout, as before the wait)
        options = replace(self._options, timeout_us=left_us)
        self._inner = self._door.enqueue(version, self._inputs, self._outputs, options)
