"""One exchange with a stub on the event loop (repoman_python.exchange), against a socketpair
whose other end plays the stub."""

from __future__ import annotations

import asyncio
import fractions
import socket
import threading

import numpy as np
import pytest
from repoman_python import wire
from repoman_python.exchange import Exchange

from repoman import Arena, Rows, get_tensors


def test_interim_messages_are_handled_as_they_come_and_the_reply_ends_it():
    ours, theirs = socket.socketpair()
    interim = []

    async def main():
        def on_call(body):
            interim.append(body)
            exchange.send(("answer", body))

        exchange = Exchange(ours, timeout=10)
        # NOTE: two calls and the reply in one write: one read holds several messages.
        theirs.sendall(wire.frame(("call", 1)) + wire.frame(("call", 2)))
        reply_after_answers = threading.Thread(target=answer_twice_then_reply)
        reply_after_answers.start()
        try:
            return await exchange.run(("execute", {"n": 1}), on_call)
        finally:
            reply_after_answers.join()
            exchange.close()

    def answer_twice_then_reply():
        received = [wire.receive(theirs, trusted=True)[0] for _ in range(3)]
        assert received == [("execute", {"n": 1}), ("answer", 1), ("answer", 2)]
        theirs.sendall(wire.frame(("ok", "done", [])))

    with ours, theirs:
        assert asyncio.run(main()) == ("ok", "done", [])
        assert interim == [1, 2]
        # Nothing is left registered or half-read: the socket works blocking again.
        ours.settimeout(5)
        theirs.sendall(wire.frame(("after",)))
        assert wire.receive(ours, trusted=False)[0] == ("after",)


def test_a_message_larger_than_the_socket_buffer_goes_out_whole():
    ours, theirs = socket.socketpair()
    big = b"x" * (8 << 20)

    def stub():
        message, _ = wire.receive(theirs, trusted=True)
        theirs.sendall(wire.frame(("ok", len(message[1]))))

    async def main():
        exchange = Exchange(ours, timeout=30)
        try:
            return await exchange.run(("execute", big))
        finally:
            exchange.close()

    with ours, theirs:
        peer = threading.Thread(target=stub)
        peer.start()
        assert asyncio.run(main()) == ("ok", len(big))
        peer.join()


def test_a_closed_end_and_silence_fail_the_exchange():
    async def exchange(sock, timeout):
        exchange = Exchange(sock, timeout=timeout)
        try:
            return await exchange.run(("execute", None))
        finally:
            exchange.close()

    ours, theirs = socket.socketpair()
    with ours:
        theirs.close()
        with pytest.raises((wire.Closed, OSError)):
            asyncio.run(exchange(ours, 10))

    ours, theirs = socket.socketpair()
    with ours, theirs, pytest.raises(TimeoutError):
        asyncio.run(exchange(ours, 0.05))


def test_one_exchange_serves_batch_after_batch_and_gives_way_to_a_blocking_conversation():
    ours, theirs = socket.socketpair()

    def stub(count):
        for n in range(count):
            message, _ = wire.receive(theirs, trusted=True)
            assert message == ("execute", n)
            theirs.sendall(wire.frame(("ok", n)))

    async def main():
        exchange = Exchange(ours, timeout=10)
        peer = threading.Thread(target=stub, args=(3,))
        peer.start()
        replies = [await exchange.run(("execute", n)) for n in range(3)]
        peer.join()
        # A conversation on the socket itself, on a thread, while the loop goes on: the
        # loop, still reading between exchanges, must leave the message to it.
        def blocking():
            ours.settimeout(5)
            wire.send(ours, ("unload", None))
            return wire.receive(ours, trusted=False)[0]

        peer = threading.Thread(target=lambda: theirs.sendall(wire.frame(wire.receive(
            theirs, trusted=True)[0])))
        peer.start()
        echoed = await asyncio.to_thread(blocking)
        peer.join()
        peer = threading.Thread(target=stub, args=(1,))
        peer.start()
        replies.append(await exchange.run(("execute", 0)))
        peer.join()
        exchange.close()
        return replies, echoed

    with ours, theirs:
        replies, echoed = asyncio.run(main())
    assert replies == [("ok", 0), ("ok", 1), ("ok", 2), ("ok", 0)]
    assert echoed == ("unload", None)


def test_a_socket_closed_under_an_idle_exchange_leaves_the_loop_able_to_read_the_next():
    async def main():
        replies = []
        for _ in range(3):
            # NOTE: each new pair likely takes the descriptor numbers the last one freed
            ours, theirs = socket.socketpair()
            exchange = Exchange(ours, timeout=10)
            theirs.sendall(wire.frame(("ok", ours.fileno())))
            replies.append(await exchange.run(("execute", None)))
            ours.close()  # as a restart does, on whatever thread; the exchange is left
            theirs.close()
            await asyncio.sleep(0.01)  # the loop sees the stub's end close, and lets go
        return replies

    assert [reply[0] for reply in asyncio.run(main())] == ["ok"] * 3


def test_the_timeout_counts_from_each_exchange_not_from_the_first():
    ours, theirs = socket.socketpair()

    async def main():
        exchange = Exchange(ours, timeout=0.3)
        try:
            theirs.sendall(wire.frame(("ok", 1)))
            assert await exchange.run(("execute", 1)) == ("ok", 1)
            await asyncio.sleep(0.2)
            # 0.4 s after the first message: within the timeout of this one
            asyncio.get_running_loop().call_later(0.2, theirs.sendall, wire.frame(("ok", 2)))
            assert await exchange.run(("execute", 2)) == ("ok", 2)
            with pytest.raises(TimeoutError):
                await exchange.run(("execute", 3))
        finally:
            exchange.close()

    with ours, theirs:
        asyncio.run(main())


def test_what_the_stub_answers_is_read_as_plain_data_only():
    ours, theirs = socket.socketpair()

    async def main():
        theirs.sendall(wire.frame(("ok", fractions.Fraction(1, 3))))
        exchange = Exchange(ours, timeout=10)
        try:
            return await exchange.run(("execute", None))
        finally:
            exchange.close()

    with ours, theirs, pytest.raises(Exception, match="only plain data"):
        asyncio.run(main())


def test_small_number_arrays_travel_inline_and_arrive_writable():
    arena = Arena.create(1 << 20)
    try:
        blocks: list[int] = []
        arrays = {
            "small": np.arange(8, dtype=np.float32).reshape(2, 4),
            "big": np.zeros(wire.INLINE_BYTES, dtype=np.float32),
            "text": np.array([b"setosa"], dtype=object),
        }
        descriptors = wire.put_arrays(arena, arrays, blocks)
        assert descriptors["small"][2] is None  # inline: no block of the arena
        assert len(blocks) == 2  # the big one and the BYTES one went through the arena
        travelled = wire.loads_plain(wire.frame(descriptors)[4:])
        got = get_tensors(arena, travelled)
        for name, array in arrays.items():
            np.testing.assert_array_equal(got[name], array)
        got["small"][0, 0] = 42.0  # a model may write to its inputs
        del got  # NOTE: views of the arena must be gone before it closes
    finally:
        arena.close()


# ---- a batch's tensors as one per name ----------------------------------------------------


def test_a_batch_stacks_into_one_array_per_name_and_unstacks_into_its_own_rows():
    items = [
        {"x": np.full((1, 3), 1.0, np.float32), "text": np.array([[b"a"]], dtype=object)},
        {"x": np.full((3, 3), 2.0, np.float32), "text": np.array([[b"b"]] * 3, dtype=object)},
        {"x": np.zeros((0, 3), np.float32), "text": np.zeros((0, 1), dtype=object)},
        {"x": np.full((2, 3), 4.0, np.float32), "text": np.array([[b"d"]] * 2, dtype=object)},
    ]
    stacked = wire.stack(items)
    assert stacked is not None
    arrays, rows = stacked
    assert arrays["x"].shape == (6, 3) and arrays["text"].shape == (6, 1)
    assert rows == {"x": [1, 3, 0, 2], "text": [1, 3, 0, 2]}
    back = wire.unstack(arrays, rows)
    assert len(back) == len(items)
    for got, sent in zip(back, items, strict=True):
        assert got.keys() == sent.keys()
        for name in sent:
            assert got[name].dtype == sent[name].dtype
            np.testing.assert_array_equal(got[name], sent[name])
    assert np.shares_memory(back[1]["x"], arrays["x"])  # views, no copy


def test_requests_held_end_to_end_go_as_they_are_and_come_back_so():
    whole = {"x": np.arange(12, dtype=np.float32).reshape(6, 2)}
    items = Rows.of(whole, [1, 3, 1])  # NOTE: a sixth row past the requests' (padding)
    stacked = wire.stack(items)
    assert stacked is not None
    arrays, rows = stacked
    assert rows == {"x": [1, 3, 1]} and arrays["x"].shape == (5, 2)
    assert np.shares_memory(arrays["x"], whole["x"])  # no copy
    back = wire.unstack(arrays, rows)
    assert isinstance(back, Rows) and back.rows == [1, 3, 1]
    assert back[1]["x"][:, 0].tolist() == [2, 4, 6]
    uneven = wire.unstack({"x": arrays["x"], "y": arrays["x"]}, {"x": [1, 3, 1], "y": [2, 2, 1]})
    assert not isinstance(uneven, Rows) and uneven[0]["y"].shape == (2, 2)


@pytest.mark.parametrize(
    "items",
    [
        [{"x": np.ones((1, 2))}],  # one item: nothing to gain
        [{"x": np.ones((1, 2))}, {"y": np.ones((1, 2))}],  # other names
        [{"x": np.ones((1, 2))}, {"x": np.ones((1, 2)), "y": np.ones((1, 2))}],
        [{"x": np.ones((1, 2))}, {"x": np.ones((1, 2), np.float32)}],  # another data type
        [{"x": np.ones((1, 2))}, {"x": np.ones((1, 3))}],  # another shape past the first axis
        [{"x": np.float32(1)}, {"x": np.float32(2)}],  # no first axis
        [{"x": np.ones(())}, {"x": np.ones(())}],
        [{"x": np.ones((1, 2))}, {"x": [[1.0, 1.0]]}],  # not an array
        [{"x": np.ones((1, 2))}, ValueError("an error response")],
        # an array so large that copying it once more costs more than its descriptor
        [{"x": np.ones((1, 2))}, {"x": np.ones((wire.STACK_UP_TO // 16 + 1, 2))}],
    ],
)
def test_what_does_not_stack_is_left_to_go_one_by_one(items):
    assert wire.stack(items) is None
