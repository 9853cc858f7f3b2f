"""Room under the memory budget: which loaded versions could give way now, and making room for
a load (evicting through the manager) or waiting until versions busy now free up."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from repoman.manager.budget import MemoryBooks
from repoman.manager.eviction import NoRoom, Resident, make_room
from repoman.manager.version import ModelVersion, State

Usage = Callable[[ModelVersion], tuple[float, int, bool, bool]]
"""How a READY version has been used (the scheduler counts; the manager only asks): when it
last answered (the manager's clock, 0: never), how many requests it answered, whether
requests wait for it now (it counts as used now), and whether a batch of it runs now (it is
not evicted then: the batch may be waiting for a call it made, BLS, to the very model the
eviction would make room for, and draining it would wait for that batch)."""

Evict = Callable[[ModelVersion, str], Awaitable[None]]


class Room:
    """Loop thread only. ``lock``: held by a load from making room to its measure, so loads
    under a budget run one at a time and each is measured alone. ``swapping``: versions whose
    replacement is loading (the manager adds and removes them); never evicted."""

    def __init__(self, books: MemoryBooks, usage: Usage | None, wait_limit: float | None) -> None:
        self.books = books
        self.lock = asyncio.Lock()
        self.swapping: set[ModelVersion] = set()
        self.freed = asyncio.Event()
        """Set when memory is released or a version stops being awaited: a load waiting for
        room looks again."""
        self._usage = usage
        self._wait_limit = wait_limit
        self._awaited: dict[tuple[str, int], int] = {}
        """Requests waiting for each (model, version) to load, until they reach its queue:
        the version they wait for is not evicted from under them."""

    def resident(self, mv: ModelVersion, size: int, now: float) -> Resident:
        last, uses, waiting, running = (
            self._usage(mv) if self._usage is not None else (0.0, 0, False, False)
        )
        management = mv.config.management
        return Resident(
            key=mv,
            memory_bytes=size,
            load_seconds=mv.load_seconds,
            last_used=now if waiting else max(last, mv.loaded_at),
            uses=uses,
            pinned=management.pinned,
            busy=mv.state is not State.READY
            or running
            or mv in self.swapping
            or (mv.model, mv.version) in self._awaited,
            idle_unload_seconds=management.idle_unload_seconds,
            label=f"model {mv.model} version {mv.version}",
        )

    def residents(self) -> list[Resident]:
        """Every version holding memory, as the eviction rules see it."""
        now = self.books.clock()
        return [self.resident(mv, size, now) for mv, size in self.books.holding().items()]

    async def make(self, mv: ModelVersion, need: int, evict: Evict) -> None:
        """Evict until ``need`` more bytes (for ``mv``) fit in the budget; NoRoom when they
        cannot. Called with :attr:`lock` held. Versions busy now (awaited, loading, mid-swap)
        free up soon: it waits for them, up to the load time limit; pinned ones never do."""
        limit = self.books.limit
        assert limit is not None
        deadline = None if self._wait_limit is None else time.monotonic() + self._wait_limit
        while True:
            self.freed.clear()
            residents = self.residents()
            try:
                victims = make_room(
                    residents,
                    need=need,
                    budget=limit,
                    now=self.books.clock(),
                    label=f"model {mv.model} version {mv.version}",
                )
            except NoRoom as exc:
                if exc.alone or not any(
                    r.busy and not r.pinned and r.key is not mv for r in residents
                ):
                    raise
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.freed.wait(), left)
                continue
            if not victims:
                return
            await asyncio.gather(*(evict(v, "memory_budget") for v in victims))  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def awaiting(
        self, mv: ModelVersion, activate: Callable[[ModelVersion], Awaitable[ModelVersion]]
    ) -> AsyncIterator[ModelVersion]:
        """``activate(mv)``, with the version it returns kept from eviction until the block
        has ended."""
        key = (mv.model, mv.version)
        self._awaited[key] = self._awaited.get(key, 0) + 1
        try:
            yield await activate(mv)
        finally:
            self._awaited[key] -= 1
            if not self._awaited[key]:
                del self._awaited[key]
                self.freed.set()
