"""Loading a version's backend instances off the event loop, within the load time limit, and
measuring what they took; unloading them. Under a memory budget, room is made first."""

from __future__ import annotations

import asyncio
import logging
import time

from repoman.backends import BackendRegistry
from repoman.errors import RepomanError
from repoman.instances import instance_contexts, load_measured, unload_instances, unload_released
from repoman.manager.budget import MemoryBooks
from repoman.manager.eviction import NoRoom
from repoman.manager.room import Evict, Room
from repoman.manager.version import ModelVersion
from repoman.memory import format_size
from repoman.threads import in_thread

log = logging.getLogger("repoman.manager.manager")  # NOTE: as the manager's own lines


class Loader:
    """Loop thread only; the loads and unloads themselves run on worker threads, at most
    ``load_threads`` loads at a time."""

    def __init__(
        self,
        registry: BackendRegistry,
        books: MemoryBooks,
        room: Room,
        *,
        load_threads: int,
        load_timeout: float | None,
    ) -> None:
        self._registry = registry
        self._books = books
        self._room = room
        self._loading = asyncio.Semaphore(load_threads)
        self._load_timeout = load_timeout

    async def load(self, mv: ModelVersion, cause: str, evict: Evict) -> str:
        """Build, load and warm up ``mv``'s instances; "" on success, else why it failed.
        Under a memory budget, loads run one at a time, each after making room for what it
        is expected to take (``evict`` unloads the versions chosen; NoRoom raised when there
        is none)."""
        limit = self._books.limit
        if limit is None:
            return await self._measured(mv, cause)
        async with self._room.lock:
            await self._room.make(mv, mv.memory_bytes, evict)
            reason = await self._measured(mv, cause)
            if reason:
                return reason
            try:
                if mv.memory_bytes > limit:
                    raise NoRoom(
                        f"model {mv.model} version {mv.version} took "
                        f"{format_size(mv.memory_bytes)} to load, more than the whole memory "
                        f"budget ({format_size(limit)})",
                        alone=True,
                    )
                # NOTE: it took more than expected: the others make up for it at once.
                await self._room.make(mv, 0, evict)
            except NoRoom:
                instances, mv.instances = mv.instances, []
                self._books.released(mv)
                await in_thread(unload_released, instances, name="repoman-unload")
                raise
            return ""

    async def _measured(self, mv: ModelVersion, cause: str) -> str:
        started = time.perf_counter()
        measured: int = 0
        try:
            spec = self._registry.resolve(mv.config)
            filename = mv.config.default_model_filename or spec.default_model_filename
            assert mv.path is not None
            instances = [
                spec.factory(context)
                for context in instance_contexts(mv.config, mv.version, mv.path, filename)
            ]
            async with self._loading:  # NOTE: a load given up on frees its place at once
                # NOTE: the deadline reaches the backend (repoman.time_left()), so one that
                # starts a process (a python model's stub) ends it when this gives up.
                deadline = (
                    None if self._load_timeout is None else time.monotonic() + self._load_timeout
                )
                loading = in_thread(
                    load_measured, instances, name="repoman-load", deadline=deadline
                )
                try:
                    measured = await asyncio.wait_for(asyncio.shield(loading), self._load_timeout)
                except TimeoutError:
                    # NOTE: a thread cannot be killed: the load goes on alone on its own
                    # thread, and whatever it builds is released when it ends.
                    loading.add_done_callback(lambda _: in_thread(unload_instances, instances))
                    raise RepomanError(
                        f"loading did not finish within {self._load_timeout:g} s "
                        "(--model-load-timeout)"
                    ) from None
        except Exception as exc:  # any load failure is reported, never raised
            return str(exc) if isinstance(exc, RepomanError) else f"{type(exc).__name__}: {exc}"
        mv.instances = instances
        mv.load_seconds = time.perf_counter() - started
        self._books.loaded(mv, measured, mv.load_seconds)
        self._books.loads[cause] += 1
        return ""

    async def unload(self, mv: ModelVersion) -> None:
        """Unload ``mv``'s instances (drained already) and free its memory; an unload that
        outlasts the load time limit is logged and left to finish on its own."""
        unloading = in_thread(unload_released, mv.instances, name="repoman-unload")
        try:
            await asyncio.wait_for(asyncio.shield(unloading), self._load_timeout)
        except TimeoutError:
            log.error(
                "model %s version %d: unloading did not finish within %g s; going on",
                mv.model,
                mv.version,
                self._load_timeout,
            )
        mv.instances = []
        self._books.released(mv)
        self._room.freed.set()
