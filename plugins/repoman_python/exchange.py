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


class Exchange:
    """Send one message and await the stub's reply on the running loop.

    ``on_interim(message)`` gets every message whose kind is ``interim`` (the stub's calls)
    at once, on the loop, and may :meth:`send` on this exchange (answers). The reply is the
    first message of another kind. ``timeout`` seconds counts from the message sent and
    from each interim message: the stub is only given up on when it falls silent that long.
    Event loop only.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_interim: Callable[[Any], None],
        *,
        interim: str = "call",
        timeout: float,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._fd = sock.fileno()
        self._on_interim = on_interim
        self._interim = interim
        self._timeout = timeout
        self._inbox = bytearray()
        self._outbox = bytearray()
        self._reply: asyncio.Future[tuple[Any, ...]] = self._loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._open = False

    async def run(self, message: Any) -> tuple[Any, ...]:
        """Send ``message``; the stub's reply. Raises TimeoutError when it falls silent past
        the timeout, wire.Closed or OSError when its end closes, ValueError (or a pickle
        error) for a message that cannot be read."""
        self._sock.setblocking(False)
        self._open = True
        self._loop.add_reader(self._fd, self._readable)
        self._arm()
        try:
            self.send(message)
            return await self._reply
        finally:
            self._close()

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
            self._fail(exc)
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
            self._fail(exc)
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
            self._fail(exc)
            return
        if not data:
            self._fail(wire.Closed("connection closed"))
            return
        self._inbox += data
        while self._open:
            try:
                body = wire.unframe(self._inbox)
                if body is None:
                    return
                message = wire.loads_plain(body)
            except Exception as exc:
                self._fail(exc)
                return
            if message[0] != self._interim:
                self._reply.set_result(message)
                self._close()
                return
            self._arm()
            self._on_interim(message[1])

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self._timeout, self._fail, TimeoutError())

    def _fail(self, error: BaseException) -> None:
        if not self._reply.done():
            self._reply.set_exception(error)
        self._close()

    def _close(self) -> None:
        """Stop reading, writing and timing (at once: a closed socket stays readable)."""
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
