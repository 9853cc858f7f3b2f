"""A minimal HTTP/1.1 keep-alive client on asyncio transports, for the load loop's hot path.

Each request is one pre-built ``bytes`` (request line, headers and body) written in one call,
and each answer is split off the byte stream by its framing alone: about a quarter of the CPU
aiohttp's client spends per request (see the README of ``repoman perf``), which matters when
the load generator shares two cores with the server it measures. It handles what a v2 server
may answer with: Content-Length, chunked transfer coding, or a body ended by closing.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping

from yarl import URL

MAX_HEAD = 64 * 1024  # a response head larger than this is not a v2 server talking


class ProtocolError(Exception):
    """The server's answer does not parse as HTTP/1.1."""


def build_request(url: URL, body: bytes, headers: Mapping[str, str]) -> bytes:
    """The whole ``POST`` as it goes on the wire, keep-alive, Content-Length framed."""
    host = url.raw_host or ""
    if ":" in host:  # an IPv6 literal goes in brackets
        host = f"[{host}]"
    if not url.is_default_port():
        host = f"{host}:{url.port}"
    lines = [f"POST {url.raw_path_qs} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight (a closed loop's worker)."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._status = 0
        self._length = -1  # body bytes still expected; -1: until close; -2: chunked
        self._head_done = False
        self._keep_alive = True
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    @classmethod
    async def open(cls, url: URL, timeout_s: float) -> Connection:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if url.scheme == "https" else None
        _, protocol = await asyncio.wait_for(
            loop.create_connection(cls, str(url.raw_host), int(url.port or 80), ssl=context),
            timeout_s,
        )
        return protocol

    def send(self, request: bytes, timeout_s: float) -> asyncio.Future[tuple[int, bytes]]:
        """Write ``request``; the future gives ``(status, body)``, or raises on a broken answer
        or after ``timeout_s`` (the connection is closed then: its stream is out of step)."""
        if self.closed or self._transport is None:
            raise ConnectionResetError("the connection is closed")
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._head_done = False
        self._timer = loop.call_later(timeout_s, self._expire, timeout_s)
        self._transport.write(request)
        return self._waiter

    def _expire(self, timeout_s: float) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(TimeoutError(f"no answer within {timeout_s:g} s"))
        self.close()

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._head_done and self._length == -1:
            self._finish(bytes(self._buffer))  # the body ran until the server closed
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionResetError("the server closed"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            while not self._head_done:
                if not self._parse_head():
                    return
                if 100 <= self._status < 200:  # an interim answer: the real one follows
                    self._head_done = False
            self._parse_body()
        except (ProtocolError, ValueError) as exc:
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_exception(ProtocolError(f"bad HTTP answer: {exc}"))
            self.close()

    def _parse_head(self) -> bool:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                raise ProtocolError("response head too large")
            return False
        head = bytes(buffer[:end]).lower()
        del buffer[: end + 4]
        if not head.startswith(b"http/1."):
            raise ProtocolError(repr(head[:40]))
        self._status = int(head[9:12])
        self._length = -1
        self._keep_alive = not head.startswith(b"http/1.0")
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name == b"content-length":
                self._length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value:
                self._length = -2
            elif name == b"connection":
                self._keep_alive = b"close" not in value
        if self._status in (204, 304):
            self._length = 0
        self._head_done = True
        return True

    def _parse_body(self) -> None:
        buffer = self._buffer
        if self._length >= 0:
            if len(buffer) >= self._length:
                body = bytes(buffer[: self._length])
                del buffer[: self._length]
                self._finish(body)
        elif self._length == -2:
            self._parse_chunks()

    def _parse_chunks(self) -> None:
        # NOTE: re-scanned from the start on each arrival; v2 servers rarely chunk, and a
        # chunked answer is small next to the cost of the request itself.
        buffer, position, parts = self._buffer, 0, list[bytes]()
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return
            size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
            if size == 0:
                trailer_end = buffer.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    return
                del buffer[: trailer_end + 4]
                self._finish(b"".join(parts))
                return
            start = line_end + 2
            if len(buffer) < start + size + 2:
                return
            parts.append(bytes(buffer[start : start + size]))
            position = start + size + 2

    def _finish(self, body: bytes) -> None:
        waiter, self._waiter = self._waiter, None
        self._head_done = False
        if self._timer is not None:
            self._timer.cancel()
        if not self._keep_alive:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, body))
