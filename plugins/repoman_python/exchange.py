"""One exchange with a stub on the server's event loop: a message out, the stub's interim
messages (its model's calls) handled as they come, until its reply. No thread waits.

The socket is read through the loop's reader only while an exchange is open (the stub says
nothing between a reply and the next message), so the blocking conversations around it
(load, unload, a restart, warm-up on a thread) use the same socket as before.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from repoman_python import wire

READ_BYTES = 1 << 16


Outcome = tuple[Any, ...] | BaseException
"""How an exchange ends: the stub's reply, or why there is none: TimeoutError when it fell
silent past the timeout, wire.Closed or OSError when its end closed, ValueError (or a pickle
error) for a message that cannot be read."""


class Exchange:
    """Send one message and take the stub's reply on the running loop.

    ``on_interim(body)`` gets the body of every message whose kind is ``interim`` (the
    stub's calls) at once, on the loop, and may :meth:`send` on this exchange (answers).
    The reply is the first message of another kind. ``timeout`` seconds counts from the
    message sent and from each interim message: the stub is only given up on when it falls
    silent that long. Event loop only.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_interim: Callable[[Any], None],
        *,
        interim: str = "call",
        timeout: float,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        # NOTE: the caller's, where it has it: on Python 3.11 each lookup is a getpid() call
        self._loop = loop or asyncio.get_running_loop()
        self._sock = sock
        self._fd = sock.fileno()
        self._on_interim = on_interim
        self._interim = interim
        self._timeout = timeout
        self._inbox = bytearray()
        self._outbox = bytearray()
        self._on_done: Callable[[Outcome], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._open = False

    def start(self, message: Any, on_done: Callable[[Outcome], None]) -> None:
        """Send ``message``; ``on_done(outcome)`` is called once, on the loop, in the same
        callback that reads the reply or finds the exchange failed (which may be before
        ``start`` returns): no loop iteration is spent between the reply and its use."""
        if self._sock.gettimeout() != 0.0:
            # NOTE: only after a blocking conversation: each switch is two fcntl calls
            self._sock.setblocking(False)
        self._on_done = on_done
        self._open = True
        self._loop.add_reader(self._fd, self._readable)
        self._arm()
        self.send(message)

    async def run(self, message: Any) -> tuple[Any, ...]:
        """:meth:`start`, awaited: the reply, or the outcome raised."""
        done: asyncio.Future[tuple[Any, ...]] = self._loop.create_future()

        def settle(outcome: Outcome) -> None:
            if isinstance(outcome, BaseException):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)

        self.start(message, settle)
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
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._end(exc)
            return
        if sent < len(data):
            self._outbox += data[sent:]
            self._loop.add_writer(self._fd, self._writable)

    def _writable(self) -> None:
        try:
            sent = self._sock.send(self._outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end(exc)
            return
        del self._outbox[:sent]
        if not self._outbox:
            self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        try:
            data = self._sock.recv(READ_BYTES)
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
            self._arm()
            self._on_interim(message[1])

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self._timeout, self._end, TimeoutError())

    def _end(self, outcome: Outcome) -> None:
        """Stop reading, writing and timing (at once: a closed socket stays readable), then
        tell the caller how it ended (once)."""
        if not self._open:
            return
        self._open = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop.remove_reader(self._fd)
        if self._outbox:
            self._outbox.clear()
            self._loop.remove_writer(self._fd)
        on_done, self._on_done = self._on_done, None
        assert on_done is not None
        on_done(outcome)
