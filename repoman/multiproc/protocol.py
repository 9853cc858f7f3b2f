"""What the core and its front-end processes say to each other: the handshake, the messages.

Handshake (on a blocking socket, descriptors passed with SCM_RIGHTS): the front-end sends
``hello`` with its request arena's memfd, the core answers ``welcome`` with its response
arena's. Then framed messages (``repoman.ipc.Connection``), as tuples:

front-end -> core
  ("infer", rid, model, asked_version, routed_version, generation, inputs, wanted,
   priority, timeout_us, request_id, parameters)  inputs: {name: tensor descriptor}
  ("cancel", rid)                               its client went away
  ("free", [offsets])                           done with response blocks
  ("refused", model, version, reason)           a request refused before the core saw it
  ("encoded", [(model, version, counts, sum)])  the times responses took to encode, bucketed
                                                on stats.SECONDS_BUCKETS
  "free" and "encoded" gather what one loop iteration saw: one message each per iteration,
  sent just before the flush that carries the answers they belong to.
  ("call", cid, method, args)                   the rest of the data plane
core -> front-end
  ("routes", snapshot)                          the routing table, whenever it changes
  ("result", rid, version, outputs)             outputs: {name: tensor descriptor}
  ("failed", rid, status, message, name, kind) / ("cancelled", rid) / ("retry", rid)
  ("reply", cid, value) / ("raise", cid, status, message, name, kind)
                                                name: the error's type name; kind: its
                                                ErrorKind (what sets gRPC's status)
After any answer to ``infer`` the core no longer reads that request's input blocks.
Tensors of at most INLINE_BYTES travel inline in the descriptor, both ways (no block to free).
"""

from __future__ import annotations

import json
from typing import Any

INLINE_BYTES = 4096
"""Tensors this small (a page) ride in the message: cheaper than a block of the arena, whose
allocation, release and "free" message cost about three times the copy."""


class Retry(Exception):
    """The version a request was checked against was swapped for one with another config:
    the front-end checks it again against the routing table it has by now, and resends."""


def encode_hello(pid: int, arena_bytes: int) -> bytes:
    return json.dumps(["hello", pid, arena_bytes]).encode()


def decode_hello(data: bytes) -> tuple[Any, ...]:
    hello = json.loads(data)
    if not (isinstance(hello, list) and len(hello) == 3 and hello[0] == "hello"):
        raise ValueError(f"expected a hello, found {data[:80]!r}")
    return tuple(hello)


def encode_welcome(arena_bytes: int) -> bytes:
    return json.dumps(["welcome", arena_bytes]).encode()


def decode_welcome(data: bytes) -> int:
    welcome = json.loads(data)
    if not (isinstance(welcome, list) and len(welcome) == 2 and welcome[0] == "welcome"):
        raise ValueError(f"expected a welcome, found {data[:80]!r}")
    return int(welcome[1])
