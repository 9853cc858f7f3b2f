"""A front-end process: HTTP on the port it shares with its siblings, the models in the core.

Started by the core (:mod:`repoman.multiproc.supervisor`) as ``python -m
repoman.multiproc.frontend``; its settings come in the environment (never on the command
line, where ``ps`` would show the control token) and the listening socket as an inherited
descriptor. It dies with the core (PR_SET_PDEATHSIG, and the core's connection closing),
and on SIGTERM stops accepting, finishes what it holds and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

from repoman import collector, logs
from repoman.errors import RepomanError
from repoman.grpc import GrpcEdge, GrpcOptions
from repoman.ipc import Arena, Connection
from repoman.multiproc import protocol
from repoman.multiproc.remote import RemoteDataPlane
from repoman.server import AccessPolicy, BodyLimits, make_app, serve_on_socket
from repoman.server.app import Background

SETTINGS_VARIABLE = "REPOMAN_FRONTEND"
ROUTES_WAIT_S = 10.0
"""How long a starting front-end waits for the core's routing table before serving gRPC."""
log = logging.getLogger("repoman.frontend")


@dataclasses.dataclass(frozen=True)
class FrontendOptions:
    """What every front-end gets alike: the HTTP limits and policy, the timeouts, logging."""

    limits: dict[str, Any]
    access: dict[str, Any]
    keepalive_timeout: float
    shutdown_timeout: float
    access_log: bool
    log_level: str
    log_format: str
    grpc_host: str = ""
    grpc_port: int = -1
    """The gRPC port the front-ends share (the core reserved it); -1: no gRPC."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything one front-end needs, as the core hands it over."""

    index: int
    hub: str
    listen_fd: int
    arena_bytes: int
    options: FrontendOptions

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls) -> Settings:
        data = json.loads(os.environ[SETTINGS_VARIABLE])
        return cls(**{**data, "options": FrontendOptions(**data["options"])})


def die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the core exits, however it exits (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # NOTE: the core died before the request reached the kernel
        os._exit(1)


def connect(settings: Settings) -> tuple[socket.socket, Arena, Arena]:
    """The handshake: our request arena goes to the core, its response arena comes back."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(settings.hub)
    request_arena = Arena.create(settings.arena_bytes, name=f"repoman-frontend-{settings.index}")
    assert request_arena.fd is not None
    socket.send_fds(
        sock, [protocol.encode_hello(os.getpid(), settings.arena_bytes)], [request_arena.fd]
    )
    request_arena.release_fd()
    data, fds, _, _ = socket.recv_fds(sock, 4096, 1)
    size = protocol.decode_welcome(data)
    if len(fds) != 1:
        raise ValueError("the core sent no arena")
    response_arena = Arena.attach(fds[0], size)
    sock.settimeout(None)
    return sock, request_arena, response_arena


async def run(settings: Settings) -> int:
    sock, request_arena, response_arena = connect(settings)
    stop = asyncio.Event()
    lost: list[BaseException | None] = []

    def connection(plane: RemoteDataPlane) -> Connection:
        def closed(reason: BaseException | None) -> None:
            plane.on_close(reason)
            lost.append(reason)
            stop.set()

        return Connection(sock, plane.on_message, closed)

    plane = RemoteDataPlane(connection)
    plane.request_arena, plane.response_arena = request_arena, response_arena
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    limits = BodyLimits(**settings.options.limits)
    access = AccessPolicy(**settings.options.access)
    background: list[Background] = []
    if settings.options.grpc_port >= 0:
        background.append(_grpc(plane, access, limits, settings.options))
    app = make_app(plane, plane, limits=limits, access=access, background=background)
    listener = socket.socket(fileno=settings.listen_fd)
    collector.settle()
    await serve_on_socket(
        app,
        listener,
        stop,
        access_log=settings.options.access_log,
        shutdown_timeout=settings.options.shutdown_timeout,
        keepalive_timeout=settings.options.keepalive_timeout,
    )
    if lost:
        log.error("front-end %d: the core went away; exiting", settings.index)
        return 1
    plane.connection.close()
    return 0


def _grpc(
    plane: RemoteDataPlane, access: AccessPolicy, limits: BodyLimits, options: FrontendOptions
) -> Background:
    """gRPC on the port the front-ends share, once this one knows the routes (else a client
    the kernel hands to it first would hear of no model)."""
    edge = GrpcEdge(
        plane,
        access,
        GrpcOptions(
            host=options.grpc_host,
            port=options.grpc_port,
            max_message_bytes=limits.max_bytes,
            grace=options.shutdown_timeout,
            shared=True,
        ),
    )
    edge.bind()

    async def serve_grpc(app: object) -> AsyncIterator[None]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(plane.routed.wait(), ROUTES_WAIT_S)
        lifecycle = edge.lifecycle(app)
        await anext(lifecycle)
        yield
        with contextlib.suppress(StopAsyncIteration):
            await anext(lifecycle)

    return serve_grpc


def main() -> int:
    die_with_parent()
    settings = Settings.from_env()
    logs.configure(
        settings.options.log_level,
        settings.options.log_format,
        f"%(asctime)s %(levelname)-7s %(name)s[{settings.index}]: %(message)s",
    )
    try:
        return asyncio.run(run(settings))
    except (OSError, ValueError, RepomanError) as exc:
        log.error("front-end %d could not start: %s", settings.index, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
