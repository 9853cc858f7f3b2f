"""gRPC's wire: HTTP/2 connections carrying unary calls, on asyncio.

One :class:`Connection` per client connection (an ``asyncio.Protocol``). It reads frames
(RFC 9113), decodes header blocks with hpack (RFC 7541), gathers each call's request body,
and hands a whole call to its :class:`Calls` (the server side: which method, which handler).
Answers go out as gRPC frames them: response headers, one length-prefixed message, trailers
with ``grpc-status``; or a trailers-only answer for an error. Flow control runs both ways.

Why not grpcio's server: each call crossed grpcio's poller thread and several event-loop
iterations before the next call of a connection was taken in, so calls reached the scheduler
one at a time and batches stayed near 1 (README, "Which gRPC server, and why"). Here every
call a read brings in starts in that same loop iteration, as aiohttp does for HTTP.

Deliberately left out: server push, TLS (as repoman's HTTP), streams of messages (a
streaming method's call is started as soon as its headers arrive, and may only refuse),
compressed answers (a compressed request is read; answers are sent uncompressed, which
gRPC allows).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import zlib
from collections.abc import Callable
from typing import Protocol, cast

import hpack

log = logging.getLogger("repoman")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9

END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 5, 6, 7, 8, 9

HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE = 1, 2, 3, 4
MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 5, 6

DEFAULT_WINDOW = 65_535
DEFAULT_FRAME = 16_384
MAX_WINDOW = 2**31 - 1

STREAM_WINDOW = 4 << 20
"""What a client may send on one call before we say "more" (the message is read whole anyway)."""
CONNECTION_WINDOW = 16 << 20
FRAME_SIZE = 1 << 20
"""The largest frame we take: fewer frames, fewer Python iterations, for large tensors."""
MAX_STREAMS = 1024
MAX_HEADER_LIST = 64 << 10
HEADER_CACHE = 64

OK = 0
CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 1, 2, 3, 4
RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL = 8, 12, 13
"""The gRPC status codes the wire itself answers with (grpc.StatusCode's numbers)."""

_FRAME = struct.Struct(">BHBBI")
_SETTING = struct.Struct(">HI")
_PREFIX = struct.Struct(">BI")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return _FRAME.pack(size >> 16, size & 0xFFFF, kind, flags, stream) + payload


def _integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 5.1) in a ``prefix_bits`` prefix of ``first``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(text: bytes) -> bytes:
    return _integer(len(text), 7) + text


def literal(name: str, value: str) -> bytes:
    """A header as a literal never added to a table (no Huffman): answers never change the
    client's decoding table, so every answer's block is the same bytes."""
    return b"\x00" + _string(name.encode("ascii")) + _string(value.encode("ascii"))


RESPONSE_BLOCK = b"\x88" + b"\x0f\x10" + _string(b"application/grpc")
"""``:status: 200`` (static index 8) and ``content-type: application/grpc`` (a literal on
static name 31, content-type)."""
OK_TRAILERS = literal("grpc-status", "0")


def percent_encoded(text: str) -> str:
    """``grpc-message``'s encoding: printable ASCII but '%' as is, the rest as %XX of UTF-8."""
    if text.isascii() and text.isprintable() and "%" not in text:
        return text
    return "".join(
        c if " " <= c <= "~" and c != "%" else "".join(f"%{b:02X}" for b in c.encode())
        for c in text
    )


def timeout_seconds(text: str) -> float | None:
    """``grpc-timeout`` (digits and a unit) in seconds; None when malformed."""
    unit = _UNITS.get(text[-1:])
    digits = text[:-1]
    if unit is None or not (digits.isascii() and digits.isdigit()) or len(text) > 9:
        return None
    return int(text[:-1]) * unit


class WireError(Exception):
    """The peer broke HTTP/2: the connection ends with GOAWAY and this code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Stream:
    """One call: the request's headers and body as they arrive; the answer's progress."""

    __slots__ = (
        "body",
        "call",
        "done",
        "headers",
        "id",
        "limit",
        "pending",
        "remote_closed",
        "send_window",
        "task",
        "timer",
        "trailers",
        "unacked",
    )

    def __init__(self, stream_id: int, headers: list[tuple[str, str]], send_window: int) -> None:
        self.id = stream_id
        self.headers = headers
        self.body: bytearray | bytes = b""
        self.remote_closed = False
        self.send_window = send_window
        self.unacked = 0
        self.pending: memoryview | None = None
        """The answer's DATA not sent yet (flow control), then ``trailers``."""
        self.trailers = b""
        self.done = False
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.limit = 0
        """The largest request message taken (0: any)."""
        self.call: object = None
        """What the server side keeps for the call (its method)."""

    def header(self, name: str) -> str:
        for key, value in self.headers:
            if key == name:
                return value
        return ""

    def metadata(self) -> list[tuple[str, str]]:
        return [(key, value) for key, value in self.headers if not key.startswith(":")]


class Calls(Protocol):
    """The server side of the wire: told of each call's start and of its whole body."""

    def begin(self, connection: Connection, stream: Stream) -> None: ...

    def end(self, connection: Connection, stream: Stream) -> None: ...


class Connection(asyncio.Protocol):
    """One client's HTTP/2 connection (server side)."""

    def __init__(self, calls: Calls, on_close: Callable[[Connection], None]) -> None:
        self._calls = calls
        self._on_close = on_close
        self._transport: asyncio.Transport | None = None
        self._partial: list[bytes] = []
        """Bytes read that do not complete a frame yet, and how many the frame needs."""
        self._partial_size = 0
        self._needed = 0
        self._greeted = False
        self._decoder = hpack.Decoder(max_header_list_size=MAX_HEADER_LIST)
        self._decoded: dict[bytes, list[tuple[str, str]]] = {}
        self._continuing: tuple[int, int, list[bytes]] | None = None
        self.streams: dict[int, Stream] = {}
        self._last_stream = 0
        self._refusing = False
        """GOAWAY sent: streams above ``_last_stream`` are refused."""
        self._peer_window = DEFAULT_WINDOW
        self._peer_frame = DEFAULT_FRAME
        self._send_window = DEFAULT_WINDOW
        self._recv_window = CONNECTION_WINDOW
        self._recv_unacked = 0
        self._out: list[bytes] = []
        self._flushing = False
        self.closed = False
        self.idle = asyncio.get_running_loop().create_future()
        """Done when the connection has no call left (after GOAWAY) or is gone."""

    # ---- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        settings = b"".join(
            _SETTING.pack(key, value)
            for key, value in (
                (ENABLE_PUSH, 0),
                (MAX_CONCURRENT_STREAMS, MAX_STREAMS),
                (INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (MAX_FRAME_SIZE, FRAME_SIZE),
                (MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST),
            )
        )
        transport.write(
            frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, (CONNECTION_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big"))
        )

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._partial:
            # NOTE: a large frame comes in many reads: they are joined once it is whole
            self._partial.append(data)
            self._partial_size += len(data)
            if self._partial_size < self._needed:
                return
            data = b"".join(self._partial)
            self._partial.clear()
        try:
            if not self._greeted:
                if len(data) < len(PREFACE):
                    if not PREFACE.startswith(data):
                        raise WireError(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    self._keep(data, len(PREFACE))
                    return
                if not data.startswith(PREFACE):
                    raise WireError(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._greeted = True
                data = data[len(PREFACE) :]
            offset = self._frames(data)
        except WireError as exc:
            self.fail_connection(exc.code, str(exc))
            return
        except Exception:
            log.exception("unexpected error reading a gRPC connection")
            self.fail_connection(INTERNAL_ERROR, "internal error")
            return
        if offset < len(data):
            rest = data[offset:]
            needed = 9
            if len(rest) >= 9:
                high, low = rest[0], int.from_bytes(rest[1:3], "big")
                needed += (high << 16) | low
            self._keep(rest, needed)
        if self._recv_unacked >= CONNECTION_WINDOW // 4:
            self._recv_window += self._recv_unacked
            self._send(frame(WINDOW_UPDATE, 0, 0, self._recv_unacked.to_bytes(4, "big")))
            self._recv_unacked = 0

    def _keep(self, rest: bytes, needed: int) -> None:
        self._partial.append(rest)
        self._partial_size = len(rest)
        self._needed = needed

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for stream in self.streams.values():
            self._drop(stream)
        self.streams.clear()
        if not self.idle.done():
            self.idle.set_result(None)
        self._on_close(self)

    # ---- reading ---------------------------------------------------------------------

    def _frames(self, buffer: bytes) -> int:
        """Handle every whole frame in ``buffer``; return where the first partial one starts."""
        offset, size = 0, len(buffer)
        while size - offset >= 9:
            high, low, kind, flags, stream_id = _FRAME.unpack_from(buffer, offset)
            length = (high << 16) | low
            if length > FRAME_SIZE:
                raise WireError(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
            end = offset + 9 + length
            if end > size:
                break
            payload = buffer[offset + 9 : end]
            offset = end
            stream_id &= 0x7FFFFFFF
            if self._continuing is not None and kind != CONTINUATION:
                raise WireError(PROTOCOL_ERROR, "a header block was interrupted")
            if kind == DATA:
                self._data(stream_id, flags, payload)
            elif kind == HEADERS:
                self._headers(stream_id, flags, payload)
            elif kind == WINDOW_UPDATE:
                self._window_update(stream_id, payload)
            elif kind == SETTINGS:
                self._settings(stream_id, flags, payload)
            elif kind == PING:
                if len(payload) != 8 or stream_id:
                    raise WireError(FRAME_SIZE_ERROR, "a PING frame must carry 8 bytes")
                if not flags & ACK:
                    self._send(frame(PING, ACK, 0, payload))
            elif kind == RST_STREAM:
                stream = self.streams.pop(stream_id, None)
                if stream is not None:
                    self._drop(stream)
                    self._check_idle()
            elif kind == CONTINUATION:
                self._continuation(stream_id, flags, payload)
            elif kind == GOAWAY:
                self._refusing = True  # NOTE: the client leaves; what it sent is answered
            elif kind == PUSH_PROMISE:
                raise WireError(PROTOCOL_ERROR, "a client may not push")
            # PRIORITY and unknown frame types are ignored, as RFC 9113 says
        return offset

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if not flags & PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise WireError(PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1 : len(payload) - payload[0]]

    def _data(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0 or stream_id > self._last_stream:
            raise WireError(PROTOCOL_ERROR, "DATA on a stream that was never opened")
        length = len(payload)
        self._recv_unacked += length
        self._recv_window -= length
        if self._recv_window < 0:
            raise WireError(FLOW_CONTROL_ERROR, "the connection's window was overrun")
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            return  # NOTE: answered or reset already; its bytes only count for the window
        data = self._unpad(flags, payload)
        if data:
            body = stream.body
            if body:
                if not isinstance(body, bytearray):
                    body = stream.body = bytearray(body)
                body += data
            else:
                stream.body = data
            if stream.limit and len(stream.body) >= 5 and not self._fits(stream):
                return
        if flags & END_STREAM:
            self._remote_end(stream)
        else:
            stream.unacked += length
            if stream.unacked >= STREAM_WINDOW // 4:
                self._send(frame(WINDOW_UPDATE, 0, stream_id, stream.unacked.to_bytes(4, "big")))
                stream.unacked = 0

    def _fits(self, stream: Stream) -> bool:
        """False (and the call answered) when its message is over the size limit."""
        declared = _PREFIX.unpack_from(stream.body)[1]
        if declared <= stream.limit:
            stream.limit = 0  # NOTE: checked once
            return True
        stream.body = b""
        self.fail(
            stream,
            RESOURCE_EXHAUSTED,
            f"Received message larger than max ({declared} vs. {stream.limit})",
        )
        return False

    def _headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0 or not stream_id & 1:
            raise WireError(PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        block = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            block = block[5:]
        if flags & END_HEADERS:
            self._header_block(stream_id, flags, block)
        else:
            self._continuing = (stream_id, flags, [block])

    def _continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        if self._continuing is None or self._continuing[0] != stream_id:
            raise WireError(PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        first_flags, parts = self._continuing[1], self._continuing[2]
        parts.append(payload)
        if sum(map(len, parts)) > MAX_HEADER_LIST:
            raise WireError(PROTOCOL_ERROR, "a header block over the size limit")
        if flags & END_HEADERS:
            self._continuing = None
            self._header_block(stream_id, first_flags, b"".join(parts))

    def _decode(self, block: bytes) -> list[tuple[str, str]]:
        """The header block's fields. A block that left the decoding table as it was means
        the same fields the next time it comes (clients repeat a call's headers as the same
        few indexed bytes): those are remembered until the table changes."""
        found = self._decoded.get(block)
        if found is not None:
            return found
        table = self._decoder.header_table
        entries = table.dynamic_entries
        size, newest, limit = len(entries), entries[0] if entries else None, table.maxsize
        try:
            fields = cast("list[tuple[str, str]]", self._decoder.decode(block))
        except Exception as exc:  # hpack's errors: any means the table is out of step
            raise WireError(
                COMPRESSION_ERROR, f"a header block could not be decoded: {exc}"
            ) from None
        if (
            len(entries) == size
            and (entries[0] if entries else None) is newest
            and table.maxsize == limit
            and not (block and 0x20 <= block[0] < 0x40)  # NOTE: a size update is applied again
        ):
            if len(self._decoded) >= HEADER_CACHE:
                self._decoded.clear()
            self._decoded[block] = fields
        else:
            self._decoded.clear()
        return fields

    def _header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        fields = self._decode(block)
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client: they end its side
            if not flags & END_STREAM:
                raise WireError(PROTOCOL_ERROR, "trailers without END_STREAM")
            if not stream.remote_closed:
                self._remote_end(stream)
            return
        if stream_id <= self._last_stream:
            return  # NOTE: a stream answered or reset already: its frames are ignored
        if self._refusing:
            self._send(frame(RST_STREAM, 0, stream_id, REFUSED_STREAM.to_bytes(4, "big")))
            return
        self._last_stream = stream_id
        if len(self.streams) >= MAX_STREAMS:
            self._send(frame(RST_STREAM, 0, stream_id, REFUSED_STREAM.to_bytes(4, "big")))
            return
        stream = Stream(stream_id, fields, self._peer_window)
        self.streams[stream_id] = stream
        self._calls.begin(self, stream)
        if flags & END_STREAM and not stream.done:
            self._remote_end(stream)

    def _remote_end(self, stream: Stream) -> None:
        stream.remote_closed = True
        if not stream.done:
            self._calls.end(self, stream)

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise WireError(FRAME_SIZE_ERROR, "a WINDOW_UPDATE frame must carry 4 bytes")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise WireError(PROTOCOL_ERROR, "a window update of 0")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise WireError(FLOW_CONTROL_ERROR, "the connection's window overflowed")
            for waiting in list(self.streams.values()):
                if waiting.pending is not None:
                    self._push(waiting)
                    if self._send_window <= 0:
                        break
            return
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.send_window += increment
            if stream.pending is not None:
                self._push(stream)

    def _settings(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id:
            raise WireError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise WireError(FRAME_SIZE_ERROR, "a SETTINGS frame of a partial setting")
        for at in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, at)
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise WireError(FLOW_CONTROL_ERROR, "an initial window over 2^31-1")
                delta, self._peer_window = value - self._peer_window, value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= (1 << 24) - 1:
                    raise WireError(PROTOCOL_ERROR, f"a max frame size of {value}")
                self._peer_frame = value
        self._send(frame(SETTINGS, ACK, 0))
        for stream in list(self.streams.values()):
            if stream.pending is not None:
                self._push(stream)

    # ---- answering -------------------------------------------------------------------

    def answer(self, stream: Stream, message: bytes) -> None:
        """The call's one response message, then ``grpc-status: 0``."""
        if stream.done or self.closed:
            return
        stream.done = True
        size = len(message) + 5
        head = frame(HEADERS, END_HEADERS, stream.id, RESPONSE_BLOCK)
        prefix = _PREFIX.pack(0, len(message))
        if size <= self._peer_frame and size <= self._send_window and size <= stream.send_window:
            self._send_window -= size
            self._send(
                head
                + _FRAME.pack(size >> 16, size & 0xFFFF, DATA, 0, stream.id)
                + prefix
                + message
                + frame(HEADERS, END_HEADERS | END_STREAM, stream.id, OK_TRAILERS)
            )
            self._finish(stream)
            return
        self._send(head)
        stream.pending = memoryview(prefix + message)
        stream.trailers = frame(HEADERS, END_HEADERS | END_STREAM, stream.id, OK_TRAILERS)
        self._push(stream)

    def fail(self, stream: Stream, code: int, message: str) -> None:
        """A trailers-only answer: ``grpc-status: code`` with ``message``."""
        if stream.done or self.closed:
            return
        stream.done = True
        block = RESPONSE_BLOCK + literal("grpc-status", str(code))
        if message:
            block += literal("grpc-message", percent_encoded(message))
        self._send(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block))
        self._finish(stream)

    def _push(self, stream: Stream) -> None:
        """Send as much of the stream's pending answer as the windows allow; then trailers."""
        pending = stream.pending
        assert pending is not None
        while pending:
            size = min(len(pending), self._peer_frame, self._send_window, stream.send_window)
            if size <= 0:
                stream.pending = pending
                return
            self._send(frame(DATA, 0, stream.id, bytes(pending[:size])))
            self._send_window -= size
            stream.send_window -= size
            pending = pending[size:]
        stream.pending = None
        self._send(stream.trailers)
        self._finish(stream)

    def _finish(self, stream: Stream) -> None:
        """The answer is sent: forget the stream; ask the client to stop sending if it has
        not finished (RFC 9113 8.1: RST_STREAM NO_ERROR after a complete response)."""
        if stream.pending is not None:
            return
        if not stream.remote_closed:
            stream.remote_closed = True
            self._send(frame(RST_STREAM, 0, stream.id, NO_ERROR.to_bytes(4, "big")))
        if stream.timer is not None:
            stream.timer.cancel()
        self.streams.pop(stream.id, None)
        self._check_idle()

    def _drop(self, stream: Stream) -> None:
        stream.done = True
        stream.pending = None
        if stream.timer is not None:
            stream.timer.cancel()
        if stream.task is not None:
            stream.task.cancel()

    def _send(self, data: bytes) -> None:
        """Queue ``data``; everything queued in one loop iteration goes in one write."""
        self._out.append(data)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        out, self._out = self._out, []
        if out and self._transport is not None and not self.closed:
            self._transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _check_idle(self) -> None:
        if self._refusing and not self.streams and not self.idle.done():
            self.idle.set_result(None)

    # ---- ending ----------------------------------------------------------------------

    def go_away(self) -> None:
        """Take no new call (GOAWAY naming the last one taken); answer those taken."""
        if self.closed:
            return
        self._refusing = True
        self._send(frame(GOAWAY, 0, 0, struct.pack(">II", self._last_stream, NO_ERROR)))
        self._check_idle()

    def close(self) -> None:
        if self._transport is not None and not self.closed:
            self._flush()
            self._transport.close()

    def fail_connection(self, code: int, reason: str) -> None:
        log.debug("gRPC connection closed: %s", reason)
        self._send(
            frame(GOAWAY, 0, 0, struct.pack(">II", self._last_stream, code) + reason.encode()[:200])
        )
        self._flush()
        self.closed = True
        if self._transport is not None:
            self._transport.close()


def decompress(encoding: str, data: bytes, limit: int) -> bytes:
    """A compressed message's bytes (gzip or deflate); ValueError when the encoding is not
    one of those, or when it inflates past ``limit`` (0: no limit)."""
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflater = zlib.decompressobj()
    else:
        raise ValueError(f"the compression {encoding or 'identity'!r} is not supported")
    try:
        out = inflater.decompress(data, limit + 1 if limit else 0)
    except zlib.error as exc:
        raise ValueError(f"the message could not be decompressed ({exc})") from None
    if limit and len(out) > limit:
        raise ValueError(f"Received message larger than max ({limit + 1}+ vs. {limit})")
    return out
