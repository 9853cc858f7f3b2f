"""The gRPC server: a service's methods by path, each call run as a task, answered on its wire.

A servicer is any object with one ``async def Method(request, context)`` per RPC of the
service descriptor it is served for; ``context`` is a :class:`Context` (the call's metadata,
and :meth:`Context.abort`, as grpcio's servicer context has them). A method the servicer
lacks is answered ``UNIMPLEMENTED``, as an unknown path is.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from repoman.grpc import wire
from repoman.grpc.wire import Connection, Stream

log = logging.getLogger("repoman")

Handler = Callable[[Any, "Context"], Awaitable[Message]]


class Abort(Exception):
    """Raised by :meth:`Context.abort`: the call ends with this status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Context:
    """What a handler may ask of its call."""

    __slots__ = ("_stream",)

    def __init__(self, stream: Stream) -> None:
        self._stream = stream

    def invocation_metadata(self) -> list[tuple[str, str]]:
        """The call's custom metadata (HTTP/2's pseudo-headers left out), lower-case keys."""
        return self._stream.metadata()

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise Abort(code, details)


@dataclass(frozen=True)
class Method:
    name: str
    handler: Handler | None
    request: type[Message]
    streaming: bool


def methods(servicer: object, service: ServiceDescriptor) -> dict[str, Method]:
    """The service's methods by their HTTP/2 path (``/package.Service/Method``)."""
    return {
        f"/{service.full_name}/{method.name}": Method(
            method.name,
            getattr(servicer, method.name, None),
            message_factory.GetMessageClass(method.input_type),
            method.client_streaming or method.server_streaming,
        )
        for method in service.methods
    }


class GrpcServer:
    """Serves one servicer on a listening socket: :meth:`start`, then :meth:`stop`."""

    def __init__(
        self, servicer: object, service: ServiceDescriptor, max_message_bytes: int
    ) -> None:
        self._methods = methods(servicer, service)
        self._limit = max_message_bytes
        self._connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- wire.Calls ------------------------------------------------------------------

    def begin(self, connection: Connection, stream: Stream) -> None:
        path = stream.header(":path")
        method = self._methods.get(path)
        if method is None or method.handler is None:
            connection.fail(stream, wire.UNIMPLEMENTED, f"Method not found: {path}")
            return
        stream.call = method
        timeout = stream.header("grpc-timeout")
        if timeout:
            seconds = wire.timeout_seconds(timeout)
            if seconds is None:
                connection.fail(stream, wire.INTERNAL, f"a malformed grpc-timeout: {timeout!r}")
                return
            assert self._loop is not None
            stream.timer = self._loop.call_later(seconds, self._expire, connection, stream)
        if method.streaming:
            # NOTE: a stream of messages is never read: its handler may only refuse the call
            self._start(connection, stream, method, None)
            return
        stream.limit = self._limit

    def end(self, connection: Connection, stream: Stream) -> None:
        method = stream.call
        assert isinstance(method, Method)
        if method.streaming:
            return
        body = stream.body
        if len(body) < 5:
            connection.fail(stream, wire.INTERNAL, "the call carried no request message")
            return
        compressed, size = wire._PREFIX.unpack_from(body)
        if size != len(body) - 5:
            connection.fail(
                stream, wire.INTERNAL, "the call must carry exactly one request message"
            )
            return
        payload = bytes(body[5:]) if isinstance(body, bytearray) else body[5:]
        if compressed:
            encoding = stream.header("grpc-encoding")
            try:
                payload = wire.decompress(encoding, payload, self._limit)
            except ValueError as exc:
                code = (
                    wire.RESOURCE_EXHAUSTED
                    if "larger than max" in str(exc)
                    else (wire.UNIMPLEMENTED if "not supported" in str(exc) else wire.INTERNAL)
                )
                connection.fail(stream, code, str(exc))
                return
        self._start(connection, stream, method, payload)

    # ---- calls -----------------------------------------------------------------------

    def _start(
        self, connection: Connection, stream: Stream, method: Method, payload: bytes | None
    ) -> None:
        assert self._loop is not None
        stream.task = self._loop.create_task(self._run(connection, stream, method, payload))

    async def _run(
        self, connection: Connection, stream: Stream, method: Method, payload: bytes | None
    ) -> None:
        assert method.handler is not None
        try:
            request = method.request.FromString(payload) if payload is not None else None
        except DecodeError:
            connection.fail(
                stream, wire.INTERNAL, f"the request is not a valid {method.request.__name__}"
            )
            return
        try:
            response = await method.handler(request, Context(stream))
        except Abort as abort:
            connection.fail(stream, abort.code.value[0], abort.details)
        except Exception:
            log.exception("unexpected error serving gRPC %s", method.name)
            connection.fail(stream, wire.UNKNOWN, "unexpected error in the handler")
        else:
            connection.answer(stream, response.SerializeToString())

    def _expire(self, connection: Connection, stream: Stream) -> None:
        stream.timer = None
        task = stream.task
        connection.fail(stream, wire.DEADLINE_EXCEEDED, "Deadline Exceeded")
        if task is not None:
            task.cancel()

    # ---- listening -------------------------------------------------------------------

    def _connection(self) -> Connection:
        connection = Connection(self, self._connections.discard)
        self._connections.add(connection)
        return connection

    async def start(self, sock: socket.socket) -> None:
        """Serve on ``sock`` (bound and listening)."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(self._connection, sock=sock)

    async def stop(self, grace: float) -> None:
        """Take no new connection or call; give calls in flight ``grace`` seconds; close."""
        if self._server is None:
            return
        self._server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.go_away()
        idle = [connection.idle for connection in connections]
        if idle:
            await asyncio.wait(idle, timeout=grace)
        for connection in connections:
            connection.close()
        self._server = None


def listening_socket(host: str, port: int, *, shared: bool) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: a free port) and listening; SO_REUSEPORT when
    ``shared`` (front-ends share one port). OSError when it cannot be had."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, where = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(where)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
