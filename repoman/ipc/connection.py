"""Messages between two processes: length-prefixed frames over a Unix socket, on an event loop.

Each flush is one frame: 4 bytes of length (little-endian), then the list of the messages sent
since the last flush, pickled together (one pickling of many small messages costs about half
of pickling each alone, on both ends). Only small descriptors travel here (tensors go through
an :class:`~repoman.ipc.arena.Arena`); both ends are processes of one server, so pickle is
safe. Sends are buffered and flushed once per loop iteration, so a burst of messages costs one
system call; a send that the socket only partly takes keeps the rest, in order, until the
socket is writable again.
What a side gathers over a loop iteration (counts, blocks to free) it sends once, from a
callback :meth:`Connection.before_flush` runs just before that iteration's flush.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import struct
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("<I")
MAX_FRAME = 64 * 1024 * 1024
"""A frame longer than this means the stream is corrupt: the connection is closed."""
READ_BYTES = 1 << 20
"""The most one read takes from the socket."""


class ConnectionLost(ConnectionError):
    """The peer closed the connection or died (possibly in the middle of a message)."""


class Connection:
    """One end of a message stream. Every method runs on the event loop thread.

    ``on_message`` gets each message in the order it was sent; ``on_close`` gets called
    once, with the reason, when the peer goes away or :meth:`close` is called.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_message: Callable[[Any], None],
        on_close: Callable[[BaseException | None], None],
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._on_message = on_message
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._inbox = bytearray()
        # NOTE: every read lands here first: ``recv(n)`` would allocate n bytes per read
        # (for 1 MiB, an mmap, an mremap and a munmap each time) to keep a few hundred.
        self._buffer = memoryview(bytearray(READ_BYTES))
        self._outbox = bytearray()
        self._pending: list[Any] = []
        self._flush_scheduled = False
        self._writing = False
        self._before: list[Callable[[], None]] = []
        self.closed = False
        self._loop.add_reader(sock.fileno(), self._readable)

    def send(self, message: Any) -> None:
        """Queue ``message``; it goes out at the end of this loop iteration, pickled then:
        do not change it after sending it."""
        if self.closed:
            raise ConnectionLost("the connection is closed")
        self._pending.append(message)
        if not self._flush_scheduled and not self._writing:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def before_flush(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once, just before the next flush (at the end of this loop
        iteration), so that what it sends leaves with that flush. Register once per batch."""
        if self.closed:
            raise ConnectionLost("the connection is closed")
        self._before.append(callback)
        if not self._flush_scheduled and not self._writing:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def close(self, reason: BaseException | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        fileno = self._sock.fileno()
        if fileno >= 0:
            self._loop.remove_reader(fileno)
            if self._writing:
                self._loop.remove_writer(fileno)
        self._sock.close()
        self._on_close(reason)

    # ---- the loop's callbacks ---------------------------------------------------------

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._before and not self.closed:
            before, self._before = self._before, []
            for callback in before:
                try:
                    callback()
                except Exception:  # NOTE: as a message handler: logged, never fatal
                    log.exception("a callback before a flush failed")
        if self.closed:
            return
        if self._pending:
            messages, self._pending = self._pending, []
            self._frame(messages)
        if not self._outbox:
            return
        try:
            sent = self._sock.send(self._outbox)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.close(ConnectionLost(f"sending failed: {exc}"))
            return
        del self._outbox[:sent]
        if self._outbox and not self._writing:
            # NOTE: a partial write: the rest goes out, in order, when the socket can take it.
            self._writing = True
            self._loop.add_writer(self._sock.fileno(), self._writable)

    def _frame(self, messages: list[Any]) -> None:
        """``messages`` into the outbox as one frame; one that cannot be pickled is logged
        and left out (the others go); a frame past ``MAX_FRAME`` goes as two."""
        payload: bytes | None
        try:
            payload = pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            if len(messages) == 1:
                log.exception("a message could not be pickled; it was not sent")
                return
            payload = None  # NOTE: one of them cannot be: halves until it stands alone
        if payload is None or (len(payload) > MAX_FRAME and len(messages) > 1):
            half = len(messages) // 2
            self._frame(messages[:half])
            self._frame(messages[half:])
            return
        self._outbox += _LENGTH.pack(len(payload))
        self._outbox += payload

    def _writable(self) -> None:
        self._flush()
        if not self._outbox and self._writing and not self.closed:
            self._writing = False
            self._loop.remove_writer(self._sock.fileno())

    def _readable(self) -> None:
        try:
            count = self._sock.recv_into(self._buffer)
        except BlockingIOError:
            return
        except OSError as exc:
            self.close(ConnectionLost(f"receiving failed: {exc}"))
            return
        if not count:
            partial = bool(self._inbox)
            self.close(
                ConnectionLost("the peer closed in the middle of a message")
                if partial
                else ConnectionLost("the peer closed the connection")
            )
            return
        self._inbox += self._buffer[:count]
        self._deliver()

    def _deliver(self) -> None:
        inbox = self._inbox
        start = 0
        try:
            while len(inbox) - start >= 4:
                (length,) = _LENGTH.unpack_from(inbox, start)
                if length > MAX_FRAME:
                    self.close(ConnectionLost(f"a frame of {length} bytes: the stream is corrupt"))
                    return
                if len(inbox) - start - 4 < length:
                    break
                messages = pickle.loads(memoryview(inbox)[start + 4 : start + 4 + length])
                start += 4 + length
                for message in messages:
                    try:
                        self._on_message(message)
                    except Exception:
                        # NOTE: one bad message must not stall the ones behind it.
                        log.exception("handling a message failed")
                    if self.closed:
                        return
        finally:
            if start:
                del inbox[:start]
