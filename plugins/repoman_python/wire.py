"""Messages between the server and a python model's stub process: blocking, length-prefixed.

A message is a 4-byte big-endian length and a pickle. The server trusts what it sends (a
ModelConfig, paths); what comes back from the stub is read with :func:`loads_plain`, which
refuses every class (only dicts, lists, tuples, strings, bytes, numbers, None), so model
code cannot make the server run anything by what it answers.
"""

from __future__ import annotations

import io
import pickle
import socket
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from repoman import Arena, Rows, TensorDescriptor, put_tensor

_LENGTH = struct.Struct("!I")
MAX_MESSAGE = 1 << 31
INLINE_BYTES = 1024
"""Number arrays this small travel in the message itself, not through an arena."""


class Closed(EOFError):
    """The peer closed its end (the stub exited, or the server went away)."""


def frame(message: Any) -> bytes:
    """``message`` as it travels: its length, then its pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def unframe(buffer: bytearray) -> bytes | None:
    """The first whole message's pickle, taken off the front of ``buffer``; None while
    ``buffer`` holds less than one message."""
    if len(buffer) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack_from(buffer)
    if length > MAX_MESSAGE:
        raise ValueError(f"message of {length} bytes is over the limit")
    end = _LENGTH.size + length
    if len(buffer) < end:
        return None
    data = bytes(buffer[_LENGTH.size : end])
    del buffer[:end]
    return data


def send(sock: socket.socket, message: Any, fds: list[int] | None = None) -> None:
    """Send ``message`` on a blocking socket (or one with a timeout)."""
    data = frame(message)
    if fds:
        # NOTE: the descriptors ride on the first bytes; the rest follows as a plain stream.
        sent = socket.send_fds(sock, [data[:4096]], fds)
        data = data[sent:]
    if data:
        sock.sendall(data)


def receive(sock: socket.socket, *, trusted: bool, with_fds: int = 0) -> tuple[Any, list[int]]:
    """One message (and the descriptors sent with it). Raises Closed at end of stream and
    TimeoutError when the socket's timeout passes first."""
    fds: list[int] = []
    if with_fds:
        head, fds, _, _ = socket.recv_fds(sock, _LENGTH.size, with_fds)
        if not head:
            raise Closed("connection closed")
        head += _exactly(sock, _LENGTH.size - len(head))
    else:
        head = _exactly(sock, _LENGTH.size)
    (length,) = _LENGTH.unpack(head)
    if length > MAX_MESSAGE:
        raise ValueError(f"message of {length} bytes is over the limit")
    data = _exactly(sock, length)
    return (pickle.loads(data) if trusted else loads_plain(data)), fds


def _exactly(sock: socket.socket, count: int) -> bytes:
    chunks = []
    while count:
        chunk = sock.recv(min(count, 1 << 20))
        if not chunk:
            raise Closed("connection closed")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused: {module}.{name} (only plain data is accepted)")


def loads_plain(data: bytes) -> Any:
    return _PlainUnpickler(io.BytesIO(data)).load()


def put_arrays(
    arena: Arena, arrays: Mapping[str, np.ndarray], blocks: list[int]
) -> dict[str, TensorDescriptor]:
    """``put_tensors`` for a message: a small number array (most requests of a pipeline's
    pre/post step) travels inline, as a bytearray (writable where it arrives), which saves
    the arena's allocation, view and free on both sides; the rest goes through ``arena``."""
    out: dict[str, TensorDescriptor] = {}
    for name, array in arrays.items():
        if array.dtype != object and array.nbytes <= INLINE_BYTES:
            out[name] = (array.dtype.str, array.shape, None, bytearray(array.tobytes()))
        else:
            out[name] = put_tensor(arena, array, blocks)
    return out


STACK_UP_TO = 64 << 10
"""Bytes of one item's array past which a batch goes one by one: stacking copies every array
once more (end to end, then into the arena), which past ~100 KiB an array costs more than the
descriptor it saves (16 arrays of 4 KiB: 14 µs stacked against 51 µs one by one; of 64 KiB:
56-60 against 69-70; of 147 KiB: 112-123 against 94-108)."""

Stacked = tuple[dict[str, np.ndarray], dict[str, list[int]]]
"""Many requests' (or responses') tensors as one array per name, and how many rows of it
each one holds."""


def stack(items: Sequence[Mapping[str, Any]]) -> Stacked | None:
    """The tensors of a batch's requests (or of its responses) end to end along their first
    axis, one array per name, to travel as one tensor instead of one per item: a message
    about a batch then costs about what a message about one request costs. None when they
    do not stack: fewer than two items, or items that differ in their names, or an array
    that differs from the first item's in data type or in its shape past the first axis (or
    has no first axis), or one larger than ``STACK_UP_TO`` bytes. Lossless whatever the
    arrays mean (:func:`unstack` gives each item back its own rows), so it needs no batching."""
    if len(items) < 2:
        return None
    if isinstance(items, Rows):  # NOTE: end to end already (an ensemble's step): as they are
        counts = items.rows
        return items.arrays(), {name: counts for name in items.whole}
    first = items[0]
    keys = first.keys()
    if not all(isinstance(item, Mapping) and item.keys() == keys for item in items):
        return None
    arrays: dict[str, np.ndarray] = {}
    rows: dict[str, list[int]] = {}
    for name in keys:
        parts = [item[name] for item in items]
        head = parts[0]
        if not isinstance(head, np.ndarray) or head.ndim == 0:
            return None
        dtype, tail = head.dtype, head.shape[1:]
        for part in parts:
            if (
                not isinstance(part, np.ndarray)
                or part.dtype != dtype
                or part.shape[1:] != tail
                or part.nbytes > STACK_UP_TO
            ):
                return None
        arrays[name] = np.concatenate(parts)
        rows[name] = [len(part) for part in parts]
    return arrays, rows


def unstack(
    arrays: Mapping[str, np.ndarray], rows: Mapping[str, Sequence[int]]
) -> Sequence[Mapping[str, np.ndarray]]:
    """What :func:`stack` stacked, one mapping per item: views of ``arrays``, no copy (a
    ``Rows`` where every array is cut alike, as a batch's outputs are)."""
    counts = None
    for each in rows.values():
        if counts is None:
            counts = each
        elif each != counts:
            counts = None
            break
    if counts is not None:
        layout = Rows.of(arrays, counts)
        if all(len(array) == layout.total for array in arrays.values()):
            return layout
    items: list[dict[str, np.ndarray]] = []
    for name, array in arrays.items():
        counts = rows[name]
        if not items:
            items = [{} for _ in counts]
        start = 0
        for item, count in zip(items, counts, strict=True):
            item[name] = array[start : start + count]
            start += count
    return items
