"""Serving with front-end processes: the core owns the models and the scheduler; N front-ends
share the HTTP port, do the HTTP work, and hand every request to the core."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from repoman.dataplane.api import MetricsSource
from repoman.dataplane.service import InferenceService
from repoman.grpc import GrpcOptions, reserve_port
from repoman.grpc import log_listening as log_grpc_listening
from repoman.manager import ModelManager
from repoman.multiproc.frontend import FrontendOptions, Settings
from repoman.multiproc.hub import FrontendHub
from repoman.multiproc.supervisor import Supervisor
from repoman.pipeline.dispatch import Dispatcher
from repoman.server import listen, log_listening, stop_on_signals

log = logging.getLogger("repoman")

ARENA_BYTES = 256 * 1024 * 1024
"""Each direction's shared memory per front-end (reserved, not touched until used)."""


async def serve_with_frontends(
    count: int,
    host: str,
    port: int,
    *,
    service: InferenceService,
    manager: ModelManager,
    dispatcher: Dispatcher,
    metrics: MetricsSource,
    models: Callable[[object], AsyncIterator[None]],
    options: FrontendOptions,
    serving_what: str,
    hub_ready: Callable[[FrontendHub], None],
    grpc: GrpcOptions | None = None,
) -> None:
    """Listen on ``host:port``, start ``count`` front-ends on it, serve until SIGTERM/SIGINT,
    then stop the front-ends (each finishes what it holds), then the models.

    With ``grpc``, every front-end serves gRPC too, on one port they share (SO_REUSEPORT);
    the core holds that port, bound but never listening, for as long as it serves.
    """
    listener = listen(host, port)
    grpc_holder = None
    if grpc is not None:
        grpc_holder, grpc_port = reserve_port(grpc.host, grpc.port)
        options = dataclasses.replace(options, grpc_host=grpc.host, grpc_port=grpc_port)
    folder = Path(tempfile.mkdtemp(prefix="repoman-"))
    hub = FrontendHub(service, manager, dispatcher, metrics, arena_bytes=ARENA_BYTES)
    hub_ready(hub)
    lifecycle = models(None)
    supervisor: Supervisor | None = None
    try:
        await hub.start(folder / "hub.sock")
        await anext(lifecycle)

        def settings(index: int) -> Settings:
            return Settings(
                index, str(folder / "hub.sock"), listener.fileno(), ARENA_BYTES, options
            )

        supervisor = Supervisor(count, settings)
        await supervisor.start()
        address = listener.getsockname()
        # NOTE: gRPC's line first: tests (tests/serverproc.py) take the HTTP line as the cue.
        if grpc is not None:
            log_grpc_listening(grpc.host, options.grpc_port, f"gRPC; {count} front-ends")
        log_listening([(address[0], address[1])], f"{serving_what}; {count} front-ends")
        await stop_on_signals().wait()
        log.info("stopping: front-ends finish their requests, then the models unload")
    finally:
        hub.stopping = True
        if supervisor is not None:
            await supervisor.stop(options.shutdown_timeout)
        listener.close()
        if grpc_holder is not None:
            grpc_holder.close()
        hub.close()
        with contextlib.suppress(StopAsyncIteration):
            await anext(lifecycle)
        shutil.rmtree(folder, ignore_errors=True)
        await asyncio.sleep(0)
        log.info("stopped")
