"""Shared memory for tensors between processes: a memfd mapped by both, carved up as a ring.

The memory is a ``memfd`` (Linux): it has no name in ``/dev/shm`` and is freed by the
kernel once the last process holding it exits, however it exits (SIGKILL included), so
nothing can leak. One process writes (allocates), the other reads; the reader says when it
is done with a block and the writer frees it. Blocks are mostly freed in the order they
were taken, so the free space is a ring: the oldest block still in use holds back the tail.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections import OrderedDict

ALIGN = 64
"""Every block starts on a cache line (and so is aligned for every numpy dtype)."""


class Arena:
    """A ring allocator over one shared mapping. Only the writer's side allocates and frees;
    both sides read and write the bytes of a block through :meth:`view`."""

    def __init__(self, fd: int, size: int, *, owner: bool) -> None:
        self.size = size
        self._map = mmap.mmap(fd, size)  # NOTE: the mapping holds a descriptor of its own
        self._view = memoryview(self._map)
        self._owner = owner
        self.fd: int | None = fd
        """The memfd, to pass to the peer (the writer's side); None once released."""
        if not owner:
            self.release_fd()
        self._head = 0  # next free byte
        self._tail = 0  # start of the oldest block in use
        self._used: OrderedDict[int, int] = OrderedDict()  # offset -> end, in allocation order
        self._freed: set[int] = set()
        self._lock = threading.Lock()

    @classmethod
    def create(cls, size: int, name: str = "repoman-tensors") -> Arena:
        """A new arena of ``size`` bytes (the writer's side)."""
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        return cls(fd, size, owner=True)

    @classmethod
    def attach(cls, fd: int, size: int) -> Arena:
        """The reader's side of an arena whose descriptor was passed to this process."""
        return cls(fd, size, owner=False)

    @property
    def in_use(self) -> int:
        """Blocks allocated and not yet freed."""
        with self._lock:
            return len(self._used) - len(self._freed)

    def alloc(self, nbytes: int) -> int | None:
        """The offset of a new block of ``nbytes``, or None when the ring has no room now."""
        size = max(ALIGN, -(-nbytes // ALIGN) * ALIGN)
        with self._lock:
            if not self._used:
                self._head = self._tail = 0
            head, tail = self._head, self._tail
            if head >= tail:  # free: [head, size) and [0, tail)
                if head + size <= self.size:
                    start = head
                elif size < tail:  # NOTE: strictly below: head == tail means empty
                    start = 0
                else:
                    return None
            elif head + size < tail:  # free: [head, tail)
                start = head
            else:
                return None
            self._used[start] = start + size
            self._head = start + size
            return start

    def free(self, offset: int) -> None:
        """Give back the block at ``offset`` (the reader said it is done with it)."""
        with self._lock:
            if offset not in self._used or offset in self._freed:
                raise ValueError(f"no block at offset {offset} to free")
            self._freed.add(offset)
            # NOTE: advance the tail over every freed block at the front of the ring.
            while self._used:
                first = next(iter(self._used))
                if first not in self._freed:
                    self._tail = first
                    break
                self._tail = self._used.pop(first)
                self._freed.discard(first)
            if not self._used:
                self._head = self._tail = 0

    def view(self, offset: int, nbytes: int) -> memoryview:
        return self._view[offset : offset + nbytes]

    def release_fd(self) -> None:
        """Close the descriptor once the peer has its own: the mapping alone keeps the memory,
        and it goes when the last process mapping it does. Safe to call again."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        """Unmap now (BufferError while arrays over it are alive). Safe to call again."""
        self.release_fd()
        if not self._map.closed:
            self._view.release()
            self._map.close()
