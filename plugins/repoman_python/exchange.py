"""Exchanges with a stub on the server's event loop: a message out, the stub's interim
messages (its model's calls) handled as they come, until its reply. No thread waits.

One :class:`Exchange` serves every batch sent to one stub (its socket), one at a time. Between
batches it keeps the loop reading the socket, so a batch costs no registration: the stub says
nothing between a reply and the next message. The loop reads a duplicate of the socket's
descriptor that only the loop closes, so the socket can be closed on any thread (a restart,
an unload) without leaving the loop's selector holding a closed descriptor. A blocking
conversation on the socket itself (load, unload, a restart, warm-up on a thread) takes the
messages: the first time the loop finds the socket readable with no exchange open, it stops
reading (without reading) until the next exchange.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from repoman_python import wire

READ_BYTES = 1 << 16
_QUIET = socket.MSG_DONTWAIT  # NOTE: whatever mode a blocking conversation left the socket in


Outcome = tuple[Any, ...] | BaseException
"""How an exchange ends: the stub's reply, or why there is none: TimeoutError when it fell
silent past the timeout, wire.Closed or OSError when its end closed, ValueError (or a pickle
error) for a message that cannot be read."""


def _ignore(body: Any) -> None:
    """The interim handler of an exchange that expects none."""


class Exchange:
    """Send a message and take the stub's reply on the loop, for one stub's socket.

    ``on_interim(body)`` (given to :meth:`start`) gets the body of every message whose kind is
    ``interim`` (the stub's calls) at once, on the loop, and may :meth:`send` on this exchange
    (answers). The reply is the first message of another kind. ``timeout`` seconds counts from
    the message sent and from each interim message: the stub is only given up on when it
    falls silent that long. Event loop only (its ``loop``), one exchange open at a time;
    :meth:`close` once the socket is done with.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        interim: str = "call",
        timeout: float,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        # NOTE: the caller's, where it has it: on Python 3.11 each lookup is a getpid() call
        self.loop = loop or asyncio.get_running_loop()
        self.sock = sock
        self._interim = interim
        self._timeout = timeout
        self._reader: socket.socket | None = None  # the loop's duplicate, while it reads
        self._inbox = bytearray()
        self._outbox = bytearray()
        self._on_interim: Callable[[Any], None] = _ignore
        self._on_done: Callable[[Outcome], None] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._open = False

    @property
    def open(self) -> bool:
        """An exchange is under way (sent, no reply yet)."""
        return self._open

    def start(
        self,
        message: Any,
        on_done: Callable[[Outcome], None],
        on_interim: Callable[[Any], None] = _ignore,
    ) -> None:
        """Send ``message``; ``on_done(outcome)`` is called once, on the loop, in the same
        callback that reads the reply or finds the exchange failed (which may be before
        ``start`` returns): no loop iteration is spent between the reply and its use."""
        assert not self._open, "one exchange at a time"
        self._on_done, self._on_interim = on_done, on_interim
        self._open = True
        if self._reader is None:
            try:
                reader = self.sock.dup()
            except OSError as exc:  # NOTE: closed already (the stub is being stopped)
                self._end(exc)
                return
            reader.setblocking(False)
            self._reader = reader
            self.loop.add_reader(reader.fileno(), self._readable)
        self._deadline = self.loop.time() + self._timeout
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._check_time)
        self.send(message)

    async def run(self, message: Any, on_interim: Callable[[Any], None] = _ignore) -> Any:
        """:meth:`start`, awaited: the reply, or the outcome raised."""
        done: asyncio.Future[tuple[Any, ...]] = self.loop.create_future()

        def settle(outcome: Outcome) -> None:
            if isinstance(outcome, BaseException):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)

        self.start(message, settle, on_interim)
        return await done

    def send(self, message: Any) -> None:
        """Send ``message`` now, or as soon as the socket takes it (never blocks); nothing
        once the exchange is over."""
        if not self._open:
            return
        data = wire.frame(message)
        if self._outbox:
            self._outbox += data
            return
        assert self._reader is not None
        try:
            sent = self._reader.send(data, _QUIET)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._end(exc)
            return
        if sent < len(data):
            self._outbox += data[sent:]
            self.loop.add_writer(self._reader.fileno(), self._writable)

    def close(self) -> None:
        """Stop reading the socket and let go of the duplicate (an open exchange ends as if
        the stub had closed its end)."""
        if self._open:
            self._end(wire.Closed("the exchange was closed"))
        self._stop_reading()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _writable(self) -> None:
        reader = self._reader
        assert reader is not None
        try:
            sent = reader.send(self._outbox, _QUIET)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end(exc)
            return
        del self._outbox[:sent]
        if not self._outbox:
            self.loop.remove_writer(reader.fileno())

    def _readable(self) -> None:
        reader = self._reader
        if not self._open or reader is None:
            # NOTE: a blocking conversation's message, or the stub's end closing: not ours
            self._stop_reading()
            return
        try:
            data = reader.recv(READ_BYTES, _QUIET)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end(exc)
            return
        if not data:
            self._end(wire.Closed("connection closed"))
            return
        self._inbox += data
        while self._open:
            try:
                body = wire.unframe(self._inbox)
                if body is None:
                    return
                message = wire.loads_plain(body)
            except Exception as exc:
                self._end(exc)
                return
            if message[0] != self._interim:
                self._end(message)
                return
            self._deadline = self.loop.time() + self._timeout
            self._on_interim(message[1])

    def _check_time(self) -> None:
        """The one timer: fires at the deadline it was set for, which each message moves
        on; it ends an exchange silent past its deadline and lapses while none is open."""
        self._timer = None
        if not self._open:
            return
        if self.loop.time() >= self._deadline:
            self._end(TimeoutError())
            return
        self._timer = self.loop.call_at(self._deadline, self._check_time)

    def _end(self, outcome: Outcome) -> None:
        """Close the exchange and tell the caller how it ended (once). After a reply the
        loop goes on reading; after a failure it stops (a closed socket stays readable, and
        a half-read stream is lost)."""
        if not self._open:
            return
        self._open = False
        if isinstance(outcome, BaseException) or self._inbox:
            # NOTE: the stub speaks only when spoken to: more after its reply is a broken stream
            self._stop_reading()
        elif self._outbox:  # NOTE: answers to calls the model no longer waits for
            self._outbox.clear()
            assert self._reader is not None
            self.loop.remove_writer(self._reader.fileno())
        on_done, self._on_done = self._on_done, None
        self._on_interim = _ignore
        assert on_done is not None
        on_done(outcome)

    def _stop_reading(self) -> None:
        reader, self._reader = self._reader, None
        self._inbox.clear()
        if reader is None:
            return
        fd = reader.fileno()
        self.loop.remove_reader(fd)
        if self._outbox:
            self._outbox.clear()
            self.loop.remove_writer(fd)
        reader.close()
