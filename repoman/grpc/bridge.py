"""grpcio's threaded server over the event loop: each handler thread hands its call to the loop.

grpcio's asyncio server takes calls in one at a time (one outstanding request-call per method,
each accepted call through its poller thread and several loop iterations), so the batcher saw
about one request per batch. Its threaded server accepts on a thread of its own and runs every
call in a pool thread; each thread submits the call's coroutine to the loop and blocks on it,
so many calls are in the loop at once and the scheduler batches them as it does HTTP's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from repoman.grpc.service import Aborted, InferenceServicer

CANCELLED = "the call was cancelled (the client went away or the server is stopping)"


class LoopBridge:
    """A grpcio (threaded) servicer whose every RPC runs ``servicer``'s coroutine of the same
    name on ``loop``: the handler thread waits for it and answers, or aborts with its status.

    Threading: RPC methods run in grpcio's pool threads, never on ``loop``; the coroutine runs
    on ``loop`` only. When the call ends first (the client went away, or the server stopped
    after its grace), grpcio runs the call's callbacks, which cancel the coroutine.
    """

    def __init__(self, servicer: InferenceServicer, loop: asyncio.AbstractEventLoop) -> None:
        self._servicer = servicer
        self._loop = loop

    def __getattr__(self, name: str) -> Callable[[Any, grpc.ServicerContext], Any]:
        method = getattr(self._servicer, name)

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            return self._call(method(request, context.invocation_metadata()), context)

        handle.__name__ = name
        return handle

    def _call(self, coroutine: Coroutine[Any, Any, Any], context: grpc.ServicerContext) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        # NOTE: a callback added to a call that has already ended is not run (False): cancel
        # now. Cancelling the concurrent future cancels the task on the loop.
        if not context.add_callback(future.cancel):
            future.cancel()
        try:
            return future.result()
        except Aborted as exc:
            context.abort(exc.code, exc.details)
        except concurrent.futures.CancelledError:
            context.abort(grpc.StatusCode.CANCELLED, CANCELLED)
