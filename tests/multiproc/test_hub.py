"""The core's side of a front-end: a request it cannot queue or answer because of a bug in the
core is still answered (500), never left for the front-end to wait on."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import numpy as np
import pytest

from repoman.errors import ErrorKind
from repoman.ipc import tensors
from repoman.ipc.arena import Arena
from repoman.ipc.connection import Connection
from repoman.multiproc.hub import _Peer

pytestmark = pytest.mark.timeout(60)


class BuggyHub:
    """The hub as far as a peer's infer reaches it, with a bug in routing."""

    def route(self, *args: Any) -> Any:
        raise KeyError("a bug in the core")


async def answer_to_infer(hub: Any) -> tuple[Any, ...]:
    core_end, frontend_end = socket.socketpair()
    got: asyncio.Queue[Any] = asyncio.Queue()
    requests, responses = Arena.create(1 << 16), Arena.create(1 << 16)
    peer = _Peer(hub, 4242, requests, responses)
    peer.connection = Connection(core_end, peer.on_message, lambda reason: None)
    frontend = Connection(frontend_end, got.put_nowait, lambda reason: None)
    try:
        inputs = {"INPUT": tensors.put(requests, np.ones((1, 4), dtype=np.float32), [])}
        frontend.send(("infer", 7, "m", None, 1, 0, inputs, ("OUTPUT",), 0, None))
        return await asyncio.wait_for(got.get(), 10)
    finally:
        frontend.close()
        peer.connection.close()
        requests.close()
        responses.close()


def test_a_request_the_core_fails_to_queue_is_answered_500():
    kind, rid, status, message, name, error_kind = asyncio.run(answer_to_infer(BuggyHub()))
    assert (kind, rid, status, name) == ("failed", 7, 500, "KeyError")
    assert error_kind == int(ErrorKind.INTERNAL)
    assert "internal error" in message and "server log" in message
