"""The memfd arena: ring allocation, reuse only after free, and sharing across processes without a leak."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repoman.ipc.arena import ALIGN, Arena

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def arenas() -> Iterator:
    """``make(size)``: a new arena, closed after the test."""
    made: list[Arena] = []

    def make(size: int, name: str = "repoman-test") -> Arena:
        arena = Arena.create(size, name)
        made.append(arena)
        return arena

    yield make
    for arena in made:
        arena.close()


def fill(arena: Arena, offset: int, nbytes: int, seed: int) -> bytes:
    pattern = random.Random(seed).randbytes(nbytes)
    arena.view(offset, nbytes)[:] = pattern
    return pattern


def whole_blocks(nbytes: int) -> int:
    """``nbytes`` rounded up to whole aligned blocks (at least one)."""
    return max(1, -(-nbytes // ALIGN)) * ALIGN


def unique_name() -> str:
    return f"repoman-test-{uuid.uuid4().hex[:12]}"


# ---- allocation, free and reuse -------------------------------------------------------------


def test_a_new_arena_hands_out_its_whole_size_as_one_block(arenas) -> None:
    arena = arenas(4096)
    assert arena.in_use == 0
    assert arena.alloc(4096) == 0
    assert arena.in_use == 1


def test_a_request_bigger_than_the_arena_gets_none(arenas) -> None:
    arena = arenas(4096)
    assert arena.alloc(4097) is None
    assert arena.in_use == 0
    assert arena.alloc(4096) == 0


def test_every_block_starts_on_a_64_byte_boundary_of_memory(arenas) -> None:
    arena = arenas(1 << 16)
    for nbytes in (1, 63, 64, 65, 100, 0, 3, 129, 7, 1000):
        offset = arena.alloc(nbytes)
        assert offset is not None
        assert offset % ALIGN == 0
        address = np.frombuffer(arena.view(offset, max(nbytes, 1)), np.uint8).ctypes.data
        assert address % ALIGN == 0


def test_blocks_in_use_never_share_an_offset_or_a_byte_zero_byte_blocks_included(arenas) -> None:
    arena = arenas(1 << 16)
    sizes = [0, 1, 63, 64, 65, 0, 200, 0]
    offsets = [arena.alloc(n) for n in sizes]
    assert None not in offsets
    assert len(set(offsets)) == len(offsets)
    extents = sorted((o, o + max(n, 1)) for o, n in zip(offsets, sizes, strict=True))
    for (_, end), (start, _) in itertools.pairwise(extents):
        assert end <= start
    assert arena.in_use == len(sizes)


def test_a_blocks_space_is_reused_only_after_it_is_freed(arenas) -> None:
    arena = arenas(1024)
    a, b, c, d = (arena.alloc(256) for _ in range(4))
    assert (a, b, c, d) == (0, 256, 512, 768)
    assert arena.alloc(64) is None  # full: nothing of a, b, c or d is handed out again
    arena.free(a)
    reused = arena.alloc(64)
    assert reused == a
    assert arena.in_use == 4


def test_the_full_arena_gives_none_then_room_again_once_blocks_are_freed(arenas) -> None:
    arena = arenas(1024)
    blocks = [arena.alloc(128) for _ in range(8)]
    assert None not in blocks
    assert arena.alloc(1) is None
    assert arena.alloc(1) is None  # asking again does not change anything
    for offset in blocks:
        arena.free(offset)
    assert arena.in_use == 0
    assert arena.alloc(1024) == 0


def test_blocks_freed_out_of_order_hold_the_tail_until_the_oldest_is_freed(arenas) -> None:
    arena = arenas(1024)
    a, b, c, d = (arena.alloc(256) for _ in range(4))
    for offset in (d, b, c):
        arena.free(offset)
        assert arena.alloc(64) is None  # a, the oldest, still holds the tail
    assert arena.in_use == 1
    arena.free(a)
    assert arena.in_use == 0
    assert arena.alloc(1024) == 0


def test_freeing_the_oldest_releases_the_already_freed_blocks_behind_it_at_once(arenas) -> None:
    arena = arenas(1024)
    a, b, _c, _d = (arena.alloc(256) for _ in range(4))
    arena.free(b)
    arena.free(a)
    # the tail jumped over b to c: [0, 512) is free again, as one block
    assert arena.alloc(448) == 0
    assert arena.in_use == 3


def test_allocation_wraps_around_to_the_start_when_the_end_has_no_room(arenas) -> None:
    arena = arenas(1024)
    a = arena.alloc(384)
    b = arena.alloc(384)
    assert (a, b) == (0, 384)
    kept = fill(arena, b, 384, seed=1)
    arena.free(a)
    wrapped = arena.alloc(320)  # 256 bytes left at the end: too few, so it goes to the start
    assert wrapped == 0
    written = fill(arena, wrapped, 320, seed=2)
    assert bytes(arena.view(b, 384)) == kept
    assert arena.alloc(64) is None  # between the wrapped block and b: no room
    arena.free(b)
    after = arena.alloc(640)  # the ring continues right after the wrapped block
    assert after == 320
    assert bytes(arena.view(wrapped, 320)) == written
    arena.free(wrapped)
    arena.free(after)
    assert arena.in_use == 0


def test_a_wrapped_ring_keeps_going_round_many_times(arenas) -> None:
    arena = arenas(1000)  # not a multiple of the alignment
    live: list[tuple[int, bytes]] = []
    for seed in range(200):
        offset = arena.alloc(150)
        while offset is None:
            oldest, pattern = live.pop(0)
            assert bytes(arena.view(oldest, 150)) == pattern
            arena.free(oldest)
            offset = arena.alloc(150)
        assert offset + 150 <= 1000
        live.append((offset, fill(arena, offset, 150, seed)))
    assert arena.in_use == len(live)


def test_freeing_an_offset_that_was_never_handed_out_raises(arenas) -> None:
    arena = arenas(1024)
    with pytest.raises(ValueError):
        arena.free(0)  # empty arena
    a = arena.alloc(64)
    for offset in (a + 64, a + 1, 512, -64, 4096):
        with pytest.raises(ValueError):
            arena.free(offset)
    assert arena.in_use == 1


def test_freeing_a_block_twice_raises_whether_or_not_the_tail_has_moved_past_it(arenas) -> None:
    arena = arenas(1024)
    a, b, c = (arena.alloc(64) for _ in range(3))
    arena.free(b)  # held behind a
    with pytest.raises(ValueError):
        arena.free(b)
    arena.free(a)  # the tail moves past a and b
    for offset in (a, b):
        with pytest.raises(ValueError):
            arena.free(offset)
    assert arena.in_use == 1
    arena.free(c)
    with pytest.raises(ValueError):
        arena.free(c)
    assert arena.in_use == 0


def test_a_second_handle_on_the_same_descriptor_sees_the_same_bytes_both_ways(arenas) -> None:
    writer = arenas(4096)
    reader = Arena.attach(os.dup(writer.fd), 4096)
    try:
        offset = writer.alloc(100)
        pattern = fill(writer, offset, 100, seed=7)
        assert bytes(reader.view(offset, 100)) == pattern
        reader.view(offset, 4)[:] = b"back"
        assert bytes(writer.view(offset, 4)) == b"back"
    finally:
        reader.close()


def test_closing_an_arena_twice_leaves_other_descriptors_alone() -> None:
    arena = Arena.create(4096, unique_name())
    arena.close()
    read_end, write_end = os.pipe()  # reuses the lowest free number: the arena's old one
    try:
        with contextlib.suppress(OSError):  # refusing is fine; closing another file is not
            arena.close()
        os.fstat(read_end)
    finally:
        for fd in (read_end, write_end):
            with contextlib.suppress(OSError):
                os.close(fd)


# ---- random sequences -----------------------------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(0, 700)),
        st.tuples(st.just("free"), st.integers(0, 1 << 16)),  # a live block, by index
        st.tuples(st.just("free_oldest"), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.sampled_from([64, 128, 1000, 2048, 4096]), ops=_OPS)
def test_random_alloc_and_free_never_hand_out_overlapping_live_blocks(
    size: int, ops: list[tuple[str, int]]
) -> None:
    arena = Arena.create(size, "repoman-test-random")
    try:
        live: list[tuple[int, int, bytes]] = []  # offset, nbytes, pattern; oldest first
        seed = 0

        def check_and_free(index: int) -> None:
            offset, nbytes, pattern = live.pop(index)
            assert bytes(arena.view(offset, nbytes)) == pattern, "a live block was overwritten"
            arena.free(offset)

        for op, arg in ops:
            if op == "alloc":
                offset = arena.alloc(arg)
                if not live and whole_blocks(arg) <= size:
                    assert offset is not None, "an empty arena refused a block that fits"
                if offset is None:
                    continue
                assert offset % ALIGN == 0
                assert offset >= 0 and offset + arg <= size
                end = offset + max(arg, 1)
                for other, other_n, _ in live:
                    assert end <= other or other + max(other_n, 1) <= offset, "overlapping blocks"
                seed += 1
                live.append((offset, arg, fill(arena, offset, arg, seed)))
            elif live:
                check_and_free(0 if op == "free_oldest" else arg % len(live))
            assert arena.in_use == len(live)
        while live:
            check_and_free(len(live) - 1)  # newest first: the worst order for the ring
        assert arena.in_use == 0
        whole = size - size % ALIGN
        assert arena.alloc(whole) == 0, "the arena is whole again once every block is freed"
    finally:
        arena.close()


# ---- across processes -----------------------------------------------------------------------

_CHILD = r"""
import socket, sys, time
from repoman.ipc.arena import Arena

sock = socket.socket(fileno=int(sys.argv[1]))
sock.settimeout(30)
message, fds, _, _ = socket.recv_fds(sock, 1024, 1)
size, read_at, nbytes, write_at, name = message.decode().split()
size, read_at, nbytes, write_at = int(size), int(read_at), int(nbytes), int(write_at)
arena = Arena.attach(fds[0], size)
seen = bytes(arena.view(read_at, nbytes))
arena.view(write_at, nbytes)[:] = seen[::-1]
mapped = ("memfd:" + name) in open("/proc/self/maps").read()
sock.sendall(seen + (b"mapped\n" if mapped else b"unmapped\n"))
while True:
    command = sock.recv(16)
    if command == b"again":
        sock.sendall(bytes(arena.view(read_at, nbytes)))
    elif command == b"hold":
        sock.sendall(b"holding")
        time.sleep(60)  # holds the mapping until it is killed
    else:
        arena.close()
        break
"""


def recv_exactly(sock: socket.socket, nbytes: int) -> bytes:
    data = bytearray()
    while len(data) < nbytes:
        chunk = sock.recv(nbytes - len(data))
        assert chunk, "the child went away"
        data += chunk
    return bytes(data)


def memfd_links(pid: str, name: str) -> list[str]:
    found = []
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for entry in entries:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue
        if f"memfd:{name}" in target:
            found.append(target)
    return found


def maps_of(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def dev_shm() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.fixture
def child() -> Iterator:
    """``start()`` -> (process, socket): a Python child that attaches to an arena it is sent."""
    started: list[tuple[subprocess.Popen, socket.socket]] = []

    def start() -> tuple[subprocess.Popen, socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.settimeout(30)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            cwd=ROOT,
            env=env,
        )
        theirs.close()
        started.append((process, ours))
        return process, ours

    yield start
    for process, sock in started:
        sock.close()
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_a_child_process_sees_the_parents_bytes_and_the_parent_sees_the_childs(child) -> None:
    name = unique_name()
    shm_before = dev_shm()
    arena = Arena.create(1 << 16, name)
    try:
        read_at, write_at = arena.alloc(5000), arena.alloc(5000)
        pattern = fill(arena, read_at, 5000, seed=11)
        process, sock = child()
        socket.send_fds(sock, [f"{1 << 16} {read_at} 5000 {write_at} {name}".encode()], [arena.fd])

        assert recv_exactly(sock, 5000) == pattern
        assert recv_exactly(sock, len(b"mapped\n")) == b"mapped\n"
        assert bytes(arena.view(write_at, 5000)) == pattern[::-1]

        # a write after the child attached shows there too: one memory, not a copy
        changed = fill(arena, read_at, 5000, seed=12)
        sock.sendall(b"again")
        assert recv_exactly(sock, 5000) == changed

        assert dev_shm() == shm_before, "the arena must not have a name in /dev/shm"
        sock.sendall(b"exit")
        assert process.wait(timeout=20) == 0
    finally:
        arena.close()
    assert dev_shm() == shm_before


def test_nothing_is_left_once_a_child_holding_the_mapping_is_killed_and_the_parent_closes(
    child,
) -> None:
    name = unique_name()
    shm_before = dev_shm()
    arena = Arena.create(1 << 20, name)
    read_at, write_at = arena.alloc(4096), arena.alloc(4096)
    fill(arena, read_at, 4096, seed=21)
    process, sock = child()
    socket.send_fds(sock, [f"{1 << 20} {read_at} 4096 {write_at} {name}".encode()], [arena.fd])
    recv_exactly(sock, 4096)
    assert recv_exactly(sock, len(b"mapped\n")) == b"mapped\n"
    sock.sendall(b"hold")
    assert recv_exactly(sock, len(b"holding")) == b"holding"

    pid = str(process.pid)
    assert f"memfd:{name}" in maps_of(pid), "the child must hold the mapping when it is killed"
    assert memfd_links("self", name), "the parent holds the memfd until it closes the arena"
    assert dev_shm() == shm_before

    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=20) == -signal.SIGKILL
    assert not os.path.exists(f"/proc/{pid}")

    arena.close()
    assert memfd_links("self", name) == []
    assert f"memfd:{name}" not in maps_of("self")
    assert memfd_links("self", "repoman") == [], "no repoman memfd is left open in this process"
    # no process this user can see still holds it either
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            assert memfd_links(entry, name) == [], f"process {entry} still holds the memfd"
    assert dev_shm() == shm_before
