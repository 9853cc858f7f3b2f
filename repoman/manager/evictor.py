"""Evicting: a READY version unloaded to free its memory (to make room for a load, or after its
idle time), left AVAILABLE so that its next request loads it again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from repoman.manager.budget import MemoryBooks
from repoman.manager.eviction import idle_expired
from repoman.manager.room import Room
from repoman.manager.table import VersionTable
from repoman.manager.version import ModelVersion, State
from repoman.memory import format_size

log = logging.getLogger("repoman.manager.manager")  # NOTE: as the manager's own lines

EVICTED = {"memory_budget": "unloaded: memory budget", "idle": "unloaded: idle"}
"""The reason an AVAILABLE version shows, by why it was unloaded."""

Park = Callable[[ModelVersion, str], None]
"""The manager's: make a fresh AVAILABLE entry for ``mv``'s version, with this reason."""
Unload = Callable[[ModelVersion], Awaitable[None]]
"""The manager's: drain ``mv`` (closed to new requests already) and unload it."""


class Evictor:
    """Loop thread only."""

    def __init__(
        self, table: VersionTable, books: MemoryBooks, room: Room, park: Park, unload: Unload
    ) -> None:
        self._table = table
        self._books = books
        self._room = room
        self._park = park
        self._unload = unload

    async def evict(self, mv: ModelVersion, why: str) -> None:
        """Unload a READY version to free its memory; it stays AVAILABLE (its next request
        loads it again). Its requests in flight finish first, as in any unload; new ones wait
        for its next load. ``why``: memory_budget or idle."""
        if mv.state is not State.READY or mv in self._room.swapping:
            return
        # NOTE: the routing entry becomes AVAILABLE first, in the same step as the state
        # change: a request never finds the version half-gone.
        mv.state, mv.reason = State.UNLOADING, EVICTED[why]
        self._books.evictions[why] += 1
        log.info(
            "model %s version %d: %s (%s)",
            mv.model,
            mv.version,
            EVICTED[why],
            format_size(mv.memory_bytes),
        )
        if self._table.current(mv.model, mv.version) is mv:
            self._park(mv, EVICTED[why])
        await self._unload(mv)
        mv.state = State.UNAVAILABLE

    async def unload_idle(self) -> int:
        """Evict every version unused for longer than its ``idle_unload_seconds``; how many."""
        expired = idle_expired(self._room.residents(), self._books.clock())
        await asyncio.gather(*(self.evict(mv, "idle") for mv in expired))  # type: ignore[arg-type]
        return len(expired)

    async def run_idle_unloads(self, every: float = 1.0) -> None:
        """Look for idle versions every ``every`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.unload_idle()
            except Exception:
                log.exception("unloading idle versions failed")
