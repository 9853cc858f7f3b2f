"""Running the gRPC edge: bind (a clear error when the port is taken), start, say where, stop.

grpcio's asyncio server runs in the event loop that serves HTTP. Front-end processes share
one gRPC port through SO_REUSEPORT: the core reserves the port (bound, never listening, so
the kernel hands it no connection) and every front-end binds it too.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
from tritonclient.grpc import service_pb2_grpc

from repoman.dataplane.api import DataPlane
from repoman.errors import RepomanError
from repoman.grpc.service import InferenceServicer
from repoman.server.auth import AccessPolicy

log = logging.getLogger("repoman")

DEFAULT_GRPC_PORT = 8001
"""Triton's."""
OFF = -1
"""The ``--grpc-port`` that turns gRPC off."""


@dataclass(frozen=True)
class GrpcOptions:
    """Where and how to serve gRPC. ``port`` 0 picks a free one; ``max_message_bytes`` is
    the HTTP body limit (max receive message size); ``shared`` binds with SO_REUSEPORT (the
    front-ends); ``grace`` is how long in-flight RPCs may finish when stopping."""

    host: str
    port: int
    max_message_bytes: int
    grace: float
    shared: bool = False


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcEdge:
    """One gRPC server over ``plane``: :meth:`bind` (in the running loop) then
    :meth:`lifecycle` as a cleanup context: started before HTTP accepts, stopped first."""

    def __init__(self, plane: DataPlane, policy: AccessPolicy, options: GrpcOptions) -> None:
        self._plane = plane
        self._policy = policy
        self._options = options
        self._server: grpc.aio.Server | None = None
        self.port = 0

    def bind(self) -> int:
        """Bind the port (the actual one is returned: ``port`` 0 picks one); RepomanError
        when it is taken. NOTE: gRPC turns SO_REUSEPORT on by default, which would let two
        servers share a port silently; off unless front-ends share it on purpose."""
        options = self._options
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 1 if options.shared else 0),
                ("grpc.max_receive_message_length", options.max_message_bytes),
                ("grpc.max_send_message_length", -1),
            ]
        )
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self._plane, self._policy), server
        )
        where = address(options.host, options.port)
        try:
            port = server.add_insecure_port(where)
        except RuntimeError as exc:
            raise RepomanError(f"cannot listen for gRPC on {where}: {exc}") from None
        if port == 0:  # NOTE: older grpcio answers 0 instead of raising
            raise RepomanError(f"cannot listen for gRPC on {where}: the address is in use")
        self._server, self.port = server, port
        return port

    async def lifecycle(self, app: object = None) -> AsyncIterator[None]:
        if self._server is None:
            self.bind()
        assert self._server is not None
        await self._server.start()
        if not self._options.shared:
            log_listening(self._options.host, self.port, "gRPC")
        yield
        await self._server.stop(self._options.grace)


def log_listening(host: str, port: int, what: str) -> None:
    log.info("listening on grpc://%s (%s)", address(host, port), what)


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """A socket bound to ``host:port`` (0: a free port) with SO_REUSEPORT, never listening:
    it holds the port for the front-ends, which bind it too. RepomanError when it is taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, where = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(where)
    except OSError as exc:
        raise RepomanError(
            f"cannot listen for gRPC on {address(host, port)}: {exc.strerror or exc}"
        ) from None
    return sock, sock.getsockname()[1]


Lifecycle = Callable[[object], AsyncIterator[None]]
