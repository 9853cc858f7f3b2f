"""The framed message connection: order, partial writes, the peer going away, corrupt frames, closing once."""

from __future__ import annotations

import asyncio
import pickle
import random
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import repoman.ipc.connection as connection_module
from repoman.ipc.connection import MAX_FRAME, Connection, ConnectionLost

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0
"""The most any test waits for something to happen on the loop."""


class RecordingSocket(socket.socket):
    """A socket that remembers each ``send``: (bytes offered, bytes taken; -1 when it would block)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock.family, sock.type, fileno=sock.detach())
        self.sends: list[tuple[int, int]] = []

    def send(self, data: Any, *args: Any) -> int:
        try:
            taken = super().send(data, *args)
        except BlockingIOError:
            self.sends.append((len(data), -1))
            raise
        self.sends.append((len(data), taken))
        return taken


class End:
    """A :class:`Connection` and what it was told: the messages in order and every close."""

    def __init__(
        self, sock: socket.socket, on_message: Callable[[End, Any], None] | None = None
    ) -> None:
        self.messages: list[Any] = []
        self.reasons: list[BaseException | None] = []
        self._then = on_message
        self.connection = Connection(sock, self._message, self._close)

    def _message(self, message: Any) -> None:
        self.messages.append(message)
        if self._then is not None:
            self._then(self, message)

    def _close(self, reason: BaseException | None) -> None:
        self.reasons.append(reason)

    async def received(self, count: int) -> None:
        async def until() -> None:
            while len(self.messages) < count and not self.reasons:
                await asyncio.sleep(0.001)

        await asyncio.wait_for(until(), WAIT)

    async def closed(self) -> BaseException | None:
        async def until() -> None:
            while not self.reasons:
                await asyncio.sleep(0.001)

        await asyncio.wait_for(until(), WAIT)
        return self.reasons[0]


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 3 * WAIT))


async def settle() -> None:
    """Let the loop run a while longer (whatever was going to happen has happened)."""
    await asyncio.sleep(0.05)


def frame(*messages: Any) -> bytes:
    """One flush's frame: its length, then the list of its messages pickled."""
    payload = pickle.dumps(list(messages), protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack("<I", len(payload)) + payload


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.settimeout(WAIT)
    yield ours, theirs
    ours.close()
    theirs.close()


# ---- order and partial writes ---------------------------------------------------------------


def test_thousands_of_messages_of_varied_sizes_arrive_in_order_around_a_10_mb_one(pair) -> None:
    rng = random.Random(5)
    messages: list[Any] = []
    for i in range(3000):
        if i == 1000:
            messages.append(("big", rng.randbytes(10 * 1024 * 1024)))
        elif i % 3 == 0:
            messages.append((i, rng.randbytes(rng.randrange(0, 4000))))
        elif i % 3 == 1:
            messages.append({"seq": i, "text": "x" * rng.randrange(0, 300)})
        else:
            messages.append(i)

    async def scenario() -> None:
        sender = End(RecordingSocket(pair[0]))
        receiver = End(pair[1])
        for i, message in enumerate(messages):
            sender.connection.send(message)
            if i % 50 == 49:
                await asyncio.sleep(0)  # later sends land while the big one is still going out
        await receiver.received(len(messages))
        await settle()
        assert receiver.messages == messages
        assert sender.reasons == [] and receiver.reasons == []
        sends = sender.connection._sock.sends
        assert any(taken < offered for offered, taken in sends), "no partial write happened"
        sender.connection.close()
        receiver.connection.close()

    run(scenario)


def test_what_the_socket_does_not_take_waits_in_order_until_a_slow_reader_reads(pair) -> None:
    big = random.Random(6).randbytes(4 * 1024 * 1024)

    async def scenario() -> None:
        sender = End(RecordingSocket(pair[0]))
        sender.connection.send("first")
        sender.connection.send(big)
        for i in range(20):
            await asyncio.sleep(0.005)  # nobody reads: the socket buffer is full
            sender.connection.send(i)
        sends = sender.connection._sock.sends
        assert sum(max(taken, 0) for _, taken in sends) < len(big), "the socket took it all?"
        receiver = End(pair[1])  # the reader starts reading only now
        await receiver.received(22)
        await settle()
        assert receiver.messages == ["first", big, *range(20)]
        assert sender.reasons == [] and receiver.reasons == []
        sender.connection.close()
        receiver.connection.close()

    run(scenario)


def test_a_burst_of_sends_in_one_loop_iteration_goes_out_in_one_system_call(pair) -> None:
    async def scenario() -> None:
        sender = End(RecordingSocket(pair[0]))
        receiver = End(pair[1])
        for i in range(500):
            sender.connection.send(("small", i))
        await receiver.received(500)
        assert receiver.messages == [("small", i) for i in range(500)]
        assert len(sender.connection._sock.sends) == 1
        sender.connection.close()
        receiver.connection.close()

    run(scenario)


def test_what_before_flush_gathers_over_an_iteration_leaves_after_the_sends_in_the_same_call(
    pair,
) -> None:
    async def scenario() -> None:
        sender = End(RecordingSocket(pair[0]))
        receiver = End(pair[1])
        gathered: list[int] = []

        def send_gathered() -> None:
            sender.connection.send(("gathered", list(gathered)))
            gathered.clear()

        for i in range(5):
            if not gathered:
                sender.connection.before_flush(send_gathered)
            gathered.append(i)
            sender.connection.send(("answer", i))
        await receiver.received(6)
        assert receiver.messages == [
            *(("answer", i) for i in range(5)),
            ("gathered", [0, 1, 2, 3, 4]),
        ]
        assert len(sender.connection._sock.sends) == 1
        sender.connection.before_flush(send_gathered)  # alone: it schedules the flush itself
        gathered.append(9)
        await receiver.received(7)
        assert receiver.messages[-1] == ("gathered", [9])
        sender.connection.close()
        receiver.connection.close()

    run(scenario)


def test_a_before_flush_callback_that_raises_is_logged_and_the_flush_still_goes_out(
    pair, caplog
) -> None:
    async def scenario() -> None:
        sender = End(pair[0])
        receiver = End(pair[1])

        def broken() -> None:
            raise RuntimeError("broken")

        sender.connection.before_flush(broken)
        sender.connection.send("after")
        await receiver.received(1)
        assert receiver.messages == ["after"]
        assert "a callback before a flush failed" in caplog.text
        sender.connection.close()
        receiver.connection.close()

    run(scenario)


def test_a_flush_goes_out_as_a_little_endian_length_then_its_messages_pickled_together(
    pair,
) -> None:
    async def scenario() -> None:
        sender = End(pair[0])
        sender.connection.send({"a": 1})
        sender.connection.send(b"")
        await settle()
        wire = pair[1].recv(1 << 16)
        assert wire == frame({"a": 1}, b"")
        sender.connection.send("later")
        await settle()
        assert pair[1].recv(1 << 16) == frame("later")
        sender.connection.close()

    run(scenario)


def test_a_message_that_cannot_be_pickled_is_logged_and_the_others_of_its_flush_go(
    pair, caplog
) -> None:
    async def scenario() -> None:
        sender = End(pair[0])
        receiver = End(pair[1])
        sender.connection.send("before")
        sender.connection.send(("a lock", threading.Lock()))
        sender.connection.send("after")
        await receiver.received(2)
        await settle()
        assert receiver.messages == ["before", "after"]
        assert "a message could not be pickled" in caplog.text
        sender.connection.close()
        receiver.connection.close()

    run(scenario)


def test_a_flush_past_max_frame_goes_out_in_frames_the_peer_takes(pair, monkeypatch) -> None:
    monkeypatch.setattr(connection_module, "MAX_FRAME", 64 * 1024)

    async def scenario() -> None:
        sender = End(pair[0])
        receiver = End(pair[1])
        for i in range(40):  # NOTE: 40 x 4 KiB in one flush: 160 KiB, past the 64 KiB limit
            sender.connection.send((i, bytes(4096)))
        await receiver.received(40)
        assert [i for i, _ in receiver.messages] == list(range(40))
        assert not receiver.reasons and not sender.reasons
        sender.connection.close()
        receiver.connection.close()

    run(scenario)


def test_a_frame_arriving_a_byte_at_a_time_is_delivered_once_and_whole(pair) -> None:
    message = {"tensor": list(range(50)), "name": "x" * 100}

    async def scenario() -> None:
        receiver = End(pair[0])
        data = frame(message) + frame("next")
        for i in range(len(data)):
            pair[1].sendall(data[i : i + 1])
            await asyncio.sleep(0)
            if i < len(data) - len(frame("next")) - 1:
                assert receiver.messages == []
        await receiver.received(2)
        assert receiver.messages == [message, "next"]
        receiver.connection.close()

    run(scenario)


# ---- the peer going away ----------------------------------------------------------------------


def test_on_close_gets_connection_lost_when_the_peer_closes_after_whole_messages(pair) -> None:
    async def scenario() -> None:
        receiver = End(pair[0])
        pair[1].sendall(frame("one") + frame("two"))
        pair[1].close()
        reason = await receiver.closed()
        await settle()
        assert isinstance(reason, ConnectionLost)
        assert "middle" not in str(reason)
        assert receiver.messages == ["one", "two"]
        assert receiver.connection.closed
        assert len(receiver.reasons) == 1

    run(scenario)


def test_when_one_end_closes_the_other_gets_connection_lost_and_the_closer_gets_none(pair) -> None:
    async def scenario() -> None:
        left, right = End(pair[0]), End(pair[1])
        left.connection.send("hello")
        await right.received(1)
        left.connection.close()
        assert isinstance(await right.closed(), ConnectionLost)
        await settle()
        assert left.reasons == [None]
        assert len(right.reasons) == 1
        assert right.messages == ["hello"]

    run(scenario)


@pytest.mark.parametrize("cut", [1, 3, 4, 5, "half", "all but one"])
def test_a_peer_dying_in_the_middle_of_a_frame_closes_with_that_reason_and_delivers_none_of_it(
    pair, cut: int | str
) -> None:
    partial = frame({"partial": "y" * 1000})
    at = {"half": len(partial) // 2, "all but one": len(partial) - 1}.get(cut, cut)

    async def scenario() -> None:
        receiver = End(pair[0])
        pair[1].sendall(frame("whole") + partial[:at])
        pair[1].close()
        reason = await receiver.closed()
        await settle()
        assert isinstance(reason, ConnectionLost)
        assert "in the middle of a message" in str(reason)
        assert receiver.messages == ["whole"]
        assert len(receiver.reasons) == 1

    run(scenario)


@pytest.mark.parametrize("length", [MAX_FRAME + 1, 0xFFFFFFFF])
def test_a_frame_header_announcing_more_than_max_frame_closes_the_connection_as_corrupt(
    pair, length: int
) -> None:
    async def scenario() -> None:
        receiver = End(pair[0])
        pair[1].sendall(frame("fine") + struct.pack("<I", length) + frame("after"))
        reason = await receiver.closed()
        await settle()
        assert isinstance(reason, ConnectionLost)
        assert "corrupt" in str(reason)
        assert receiver.messages == ["fine"]
        assert receiver.connection.closed
        assert len(receiver.reasons) == 1
        assert pair[1].recv(16) == b"", "the corrupt stream's socket is closed"
        with pytest.raises(ConnectionLost):
            receiver.connection.send("anything")

    run(scenario)


def test_a_frame_of_exactly_max_frame_is_not_corrupt(pair) -> None:
    async def scenario() -> None:
        receiver = End(pair[0])
        pair[1].sendall(struct.pack("<I", MAX_FRAME) + b"\x80" * 1000)
        await settle()
        assert receiver.reasons == [], "a frame of MAX_FRAME bytes is allowed"
        pair[1].close()
        reason = await receiver.closed()
        assert "in the middle of a message" in str(reason)
        assert receiver.messages == []

    run(scenario)


# ---- closing ----------------------------------------------------------------------------------


def test_a_local_close_calls_on_close_with_none_and_closes_the_socket(pair) -> None:
    async def scenario() -> None:
        end = End(pair[0])
        end.connection.close()
        assert end.reasons == [None]
        assert end.connection.closed
        assert pair[1].recv(16) == b""

    run(scenario)


def test_send_after_a_local_close_raises_connection_lost(pair) -> None:
    async def scenario() -> None:
        end = End(pair[0])
        end.connection.close()
        with pytest.raises(ConnectionLost):
            end.connection.send("too late")

    run(scenario)


def test_send_after_the_peer_closed_raises_connection_lost(pair) -> None:
    async def scenario() -> None:
        end = End(pair[0])
        pair[1].close()
        await end.closed()
        with pytest.raises(ConnectionLost):
            end.connection.send("too late")

    run(scenario)


def test_on_close_is_called_once_however_many_times_close_is_called(pair) -> None:
    async def scenario() -> None:
        end = End(pair[0])
        end.connection.close()
        end.connection.close()
        end.connection.close(ConnectionLost("again"))
        await settle()
        assert end.reasons == [None]

    run(scenario)


def test_on_close_is_called_once_when_the_peer_closes_and_then_we_close(pair) -> None:
    async def scenario() -> None:
        end = End(pair[0])
        pair[1].close()
        await end.closed()
        end.connection.close()
        await settle()
        assert len(end.reasons) == 1
        assert isinstance(end.reasons[0], ConnectionLost)

    run(scenario)


def test_on_close_is_called_once_when_we_close_and_then_the_peer_closes(pair) -> None:
    async def scenario() -> None:
        left, right = End(pair[0]), End(pair[1])
        left.connection.close()
        await right.closed()
        right.connection.close()
        await settle()
        assert left.reasons == [None]
        assert len(right.reasons) == 1
        assert isinstance(right.reasons[0], ConnectionLost)

    run(scenario)


def test_on_close_is_called_once_when_sending_and_receiving_both_find_the_peer_gone(pair) -> None:
    async def scenario() -> None:
        end = End(pair[0])
        pair[1].close()
        for i in range(100):
            end.connection.send(i)  # the flush and the read both see the peer gone
        await end.closed()
        await settle()
        assert len(end.reasons) == 1
        assert isinstance(end.reasons[0], ConnectionLost)

    run(scenario)


def test_on_close_is_called_once_when_the_peer_goes_during_a_partial_write(pair) -> None:
    async def scenario() -> None:
        end = End(pair[0])
        end.connection.send(b"z" * (8 * 1024 * 1024))
        await asyncio.sleep(0.01)  # the write is stuck: nobody reads
        pair[1].close()
        reason = await end.closed()
        await settle()
        assert isinstance(reason, ConnectionLost)
        assert len(end.reasons) == 1

    run(scenario)


def test_closing_from_inside_on_message_stops_delivery_and_calls_on_close_once(pair) -> None:
    async def scenario() -> None:
        end = End(pair[0], on_message=lambda end, message: end.connection.close())
        pair[1].sendall(frame("first") + frame("second") + frame("third"))
        await end.closed()
        await settle()
        assert end.messages == ["first"]
        assert end.reasons == [None]

    run(scenario)


def test_a_message_whose_handler_raises_does_not_hold_up_the_next() -> None:
    """Two frames in one read: the first one's handler raises; the second still arrives."""

    async def main() -> list[object]:
        left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        got: list[object] = []

        def handle(message: object) -> None:
            got.append(message)
            if message == "first":
                raise ValueError("a bug in a handler")

        receiver = Connection(right, handle, lambda reason: None)
        left.sendall(frame("first", "second"))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(got) == 2:
                break
        receiver.close()
        left.close()
        return got

    assert asyncio.run(main()) == ["first", "second"]
