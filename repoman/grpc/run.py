"""Running the gRPC edge: bind (a clear error when the port is taken), start, say where, stop.

The gRPC server (server.py, on wire.py's HTTP/2) runs in the event loop that serves HTTP.
Front-end processes share one gRPC port through SO_REUSEPORT: the core reserves the port
(bound, never listening, so the kernel hands it no connection) and every front-end binds it
too.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from tritonclient.grpc import service_pb2

from repoman.dataplane.api import DataPlane
from repoman.errors import RepomanError
from repoman.grpc.server import GrpcServer, listening_socket
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
        self._server = GrpcServer(
            InferenceServicer(plane, policy),
            service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
            options.max_message_bytes,
        )
        self._socket: socket.socket | None = None
        self.port = 0

    def bind(self) -> int:
        """Bind the port (the actual one is returned: ``port`` 0 picks one); RepomanError
        when it is taken. SO_REUSEPORT only when front-ends share the port on purpose, so
        a port already in use is a clear error, never a silent share."""
        options = self._options
        try:
            sock = listening_socket(options.host, options.port, shared=options.shared)
        except OSError as exc:
            where = address(options.host, options.port)
            raise RepomanError(
                f"cannot listen for gRPC on {where}: {exc.strerror or exc}"
            ) from None
        self._socket, self.port = sock, sock.getsockname()[1]
        return self.port

    async def lifecycle(self, app: object = None) -> AsyncIterator[None]:
        if self._socket is None:
            self.bind()
        assert self._socket is not None
        await self._server.start(self._socket)
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
