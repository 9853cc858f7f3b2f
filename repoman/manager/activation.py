"""Lazy loading: an AVAILABLE version loads when a request asks for it; the requests that wait
for it share that one load and keep the version from eviction until they reach its queue."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from repoman.aspired import AspiredVersion
from repoman.errors import ModelNotFound, ModelNotReady
from repoman.manager.room import Room
from repoman.manager.table import VersionTable
from repoman.manager.version import ModelVersion, State

LoadNow = Callable[[str, AspiredVersion], Awaitable[str]]
"""The manager's load of one version for a request, with the model's lock held: "" when it
loaded, else why not."""


class Activations:
    """Loop thread only: the lazy loads under way, one per version."""

    def __init__(self, table: VersionTable, room: Room, load: LoadNow) -> None:
        self._table = table
        self._room = room
        self._load = load
        self._activating: dict[ModelVersion, asyncio.Task[ModelVersion]] = {}

    def loaded(self, mv: ModelVersion) -> AbstractAsyncContextManager[ModelVersion]:
        """:meth:`activate` for a request: the READY version, which is not evicted until the
        block (where the request reaches the version's queue) has ended."""
        return self._room.awaiting(mv, self.activate)

    async def activate(self, mv: ModelVersion) -> ModelVersion:
        """Load an AVAILABLE version for a request that waits for it; returns the version that
        serves now (READY). Requests waiting for the same version share its one load, and a
        request that gives up leaves the load going. ModelNotReady (why) when it cannot load:
        it failed, or the memory budget has no room for it now."""
        task = self._activating.get(mv)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._activate(mv))
            self._activating[mv] = task
            task.add_done_callback(lambda _: self._activating.pop(mv, None))
        return await asyncio.shield(task)

    async def _activate(self, mv: ModelVersion) -> ModelVersion:
        name, number = mv.model, mv.version
        async with self._table.lock(name):
            current = self._table.current(name, number)
            if current is None:
                raise ModelNotFound(name, number)
            if current.state is State.AVAILABLE:
                target = AspiredVersion(number, current.config, current.fingerprint, current.path)
                failure = await self._load(name, target)
                current = self._table.current(name, number)
                if current is None:
                    raise ModelNotFound(name, number)
                if current.state is not State.READY:
                    raise ModelNotReady(name, number, failure.partition(": ")[2] or failure)
            if current.state is not State.READY:
                raise ModelNotReady(name, number, current.reason or current.state.value.lower())
            return current
