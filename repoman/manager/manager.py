"""The manager: carries out the policy's actions (load, open, swap, drain, unload) per model."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from repoman.aspired import Aspired, AspiredVersion
from repoman.backends import BackendRegistry
from repoman.manager.activation import Activations
from repoman.manager.budget import MemoryBooks
from repoman.manager.eviction import NoRoom
from repoman.manager.evictor import EVICTED, Evictor
from repoman.manager.loading import Loader
from repoman.manager.policy import Held, Load, Park, plan
from repoman.manager.room import Room, Usage
from repoman.manager.table import Blocked, StateListener, VersionTable
from repoman.manager.version import ModelVersion, State


class Serving(Protocol):
    """What the manager needs from the scheduler (which sits above it)."""

    def open(self, version: ModelVersion) -> None:
        """Start accepting requests for a READY version."""

    async def drain(self, version: ModelVersion) -> None:
        """Accept nothing new for ``version``; return once every queued request finished."""


LAZY_REASON = "not loaded: loads on its first request"


class MemoryRefusal(str):
    """A load failure that is the memory budget's doing (the API answers it with 507)."""


class ModelManager(VersionTable):
    """Owns every model version; all methods run on the event loop thread.

    :meth:`apply` takes one model's aspired versions and runs :func:`~repoman.manager.policy.plan`
    until it has nothing left to do; calls for one model never overlap. Loading runs on its
    own thread pool, so a slow load never stalls inference. The versions and the queries on
    them are :class:`~repoman.manager.table.VersionTable`'s; loading and unloading instances,
    :class:`~repoman.manager.loading.Loader`'s; lazy loads for requests,
    :class:`~repoman.manager.activation.Activations`'; unloading to free memory,
    :class:`~repoman.manager.evictor.Evictor`'s.
    """

    def __init__(
        self,
        registry: BackendRegistry,
        serving: Serving,
        *,
        load_threads: int = 2,
        on_state: StateListener | None = None,
        load_timeout: float | None = None,
        blocked: Blocked | None = None,
        books: MemoryBooks | None = None,
        lazy_default: bool = False,
        usage: Usage | None = None,
    ) -> None:
        super().__init__(on_state, blocked)
        self.books = books or MemoryBooks(None)
        """Each version's memory, the budget, and the counts of loads and evictions."""
        self._lazy_default = lazy_default
        self._room = Room(self.books, usage, load_timeout)
        self._loader = Loader(
            registry, self.books, self._room, load_threads=load_threads, load_timeout=load_timeout
        )
        self._activations = Activations(self, self._room, self._load_for_request)
        self._evictor = Evictor(self, self.books, self._room, self._park_evicted, self._unload)
        self._serving = serving
        self._background: set[asyncio.Task[None]] = set()

    # ---- carrying out the policy -----------------------------------------------------

    async def apply(
        self, aspired: Aspired, *, retry_failed: bool = False, need_members: bool = False
    ) -> list[str]:
        """Make one model match ``aspired`` (``Aspired(name)``: unload it all); returns what
        failed on the way (a model error, versions that failed to load), for a caller that
        asked for this load and must be told. ``retry_failed`` (an explicit load): try again
        versions that failed with these very files, and load parked (AVAILABLE) ones now.
        ``need_members``: an ensemble version that cannot serve when it loads (``blocked``
        says why: a member missing, not ready or not fitting) fails to load, as in Triton's
        explicit mode; without it, it loads and waits for its members (serving once they are
        ready)."""
        name = aspired.model
        failures: list[str] = [aspired.error] if aspired.error else []
        async with self.lock(name):
            self._note_model_error(name, aspired.error)
            versions = self._versions.setdefault(name, {})
            failed = self._failed.setdefault(name, {})
            if retry_failed:
                failed.clear()
            force = retry_failed
            while True:
                held = {v: Held(mv.state, mv.identity) for v, mv in versions.items()}
                # NOTE: forced in the first round only: a load that found no room leaves its
                # version parked, and the next round must take that as the answer.
                actions = plan(held, aspired, failed, lazy_default=self._lazy_default, force=force)
                force = False
                if not actions:
                    break
                outcomes = await asyncio.gather(
                    *(
                        self._load(
                            name,
                            a.target,
                            a.replacing,
                            "explicit" if retry_failed else "eager",
                            need_members,
                        )
                        if isinstance(a, Load)
                        else self._park(name, a.target)
                        if isinstance(a, Park)
                        else self._retire(versions[a.version])
                        for a in actions
                    )
                )
                failures += [outcome for outcome in outcomes if outcome]
            if not versions:
                del self._versions[name]
            if not failed:
                del self._failed[name]
        return failures

    async def _load(
        self,
        name: str,
        target: AspiredVersion,
        replacing: bool,
        cause: str,
        need_members: bool = False,
    ) -> str:
        """Load ``target``; on success open it and swap it in ("" returned), else record why
        it failed and return that. A load the memory budget has no room for leaves the
        version AVAILABLE (or FAILED when it is larger than the whole budget)."""
        versions = self._versions.setdefault(name, {})
        failed = self._failed.setdefault(name, {})
        current = versions.get(target.version)
        mv = self._version(name, target)
        if current is None:
            versions[target.version] = mv  # NOTE: shows as LOADING in the index meanwhile
        elif current.state is State.AVAILABLE:
            # NOTE: it stays the routing entry while it loads: requests wait for the load.
            current.reason = "loading"
        swapped = current if replacing and current is not None else None
        if swapped is not None:
            self._room.swapping.add(swapped)  # NOTE: a version mid-swap is never evicted
        try:
            reason = target.error or await self._build(mv, cause)
            if not reason and need_members and mv.config.is_ensemble and self._blocked:
                reason = self._blocked(mv)
        except NoRoom as exc:
            return self._no_room(mv, target, swapped, exc)
        finally:
            if swapped is not None:
                self._room.swapping.discard(swapped)
        if reason:
            failed[target.version] = target.identity
            self._set_state(mv, State.FAILED, reason)
            if replacing and current is not None:
                current.reason = f"reload failed, still serving the previous files: {reason}"
                return f"version {target.version}: {reason} (the previous files keep serving)"
            versions[target.version] = mv
            return f"version {target.version}: {reason}"
        failed.pop(target.version, None)
        # NOTE: open the new one, then swap the routing entry (one step on the loop thread,
        # so no request sees neither), then drain and unload the old one.
        self._serving.open(mv)
        versions[target.version] = mv
        mv.loaded_at = self.books.clock()
        self._set_state(mv, State.READY)
        if replacing and current is not None:
            await self._retire(current, keep_entry=True)
        return ""

    def _version(
        self, name: str, target: AspiredVersion, state: State = State.LOADING, reason: str = ""
    ) -> ModelVersion:
        mv = ModelVersion(
            name,
            target.version,
            target.config,
            target.location,
            state=state,
            reason=reason,
            fingerprint=target.fingerprint,
        )
        mv.memory_bytes, mv.memory_measured = self.books.expected(mv)
        mv.load_seconds = self.books.expected_load_seconds(mv)
        return mv

    def _no_room(
        self,
        mv: ModelVersion,
        target: AspiredVersion,
        swapped: ModelVersion | None,
        exc: NoRoom,
    ) -> str:
        """A load the budget cannot make room for: what the index shows, and the failure."""
        name, number, versions = mv.model, target.version, self._versions[mv.model]
        reason = str(exc)
        if exc.alone:
            self._failed[name][number] = target.identity
            self._set_state(mv, State.FAILED, reason)
            if swapped is not None:
                swapped.reason = f"reload failed, still serving the previous files: {reason}"
            else:
                versions[number] = mv
            return MemoryRefusal(f"version {number}: {reason}")
        if swapped is not None:
            # NOTE: tried again when its files change, as any failed reload.
            self._failed[name][number] = target.identity
            swapped.reason = f"reload waits for room, still serving the previous files: {reason}"
            return MemoryRefusal(f"version {number}: {reason} (the previous files keep serving)")
        self._hold_available(name, target, f"{EVICTED['memory_budget']} ({reason})")
        return MemoryRefusal(f"version {number}: {reason}")

    async def _park(self, name: str, target: AspiredVersion) -> str:
        """Hold ``target`` as AVAILABLE: its first request loads it."""
        current = self.current(name, target.version)
        reason = LAZY_REASON
        if current is not None and current.state is State.AVAILABLE and current.reason:
            reason = current.reason  # NOTE: "unloaded: ..." says more than "lazy"
        self._failed.get(name, {}).pop(target.version, None)
        self._hold_available(name, target, reason)
        return ""

    def _park_evicted(self, mv: ModelVersion, reason: str) -> None:
        target = AspiredVersion(mv.version, mv.config, mv.fingerprint, mv.path)
        self._hold_available(mv.model, target, reason)

    def _hold_available(self, name: str, target: AspiredVersion, reason: str) -> None:
        """Make ``target`` the routing entry, AVAILABLE (not in memory) for ``reason``."""
        parked = self._version(name, target, State.AVAILABLE, reason)
        self._versions.setdefault(name, {})[target.version] = parked
        self._set_state(parked, State.AVAILABLE, reason)

    # ---- lazy loading ----------------------------------------------------------------

    def loaded(self, mv: ModelVersion) -> AbstractAsyncContextManager[ModelVersion]:
        """:meth:`activate` for a request (:meth:`Activations.loaded
        <repoman.manager.activation.Activations.loaded>`)."""
        return self._activations.loaded(mv)

    async def activate(self, mv: ModelVersion) -> ModelVersion:
        """Load an AVAILABLE version for the requests that wait for it; the READY version
        (:meth:`Activations.activate <repoman.manager.activation.Activations.activate>`)."""
        return await self._activations.activate(mv)

    async def _load_for_request(self, name: str, target: AspiredVersion) -> str:
        return await self._load(name, target, False, "lazy")

    # ---- the memory budget -----------------------------------------------------------

    async def unload_idle(self) -> int:
        """Evict every version unused for longer than its ``idle_unload_seconds``; how many."""
        return await self._evictor.unload_idle()

    async def run_idle_unloads(self, every: float = 1.0) -> None:
        """Look for idle versions every ``every`` seconds, until cancelled."""
        await self._evictor.run_idle_unloads(every)

    async def _build(self, mv: ModelVersion, cause: str) -> str:
        """Load ``mv``'s instances (LOADING meanwhile); "" on success, else why it failed;
        NoRoom when the memory budget has no room for it."""
        self._set_state(mv, State.LOADING)
        if mv.config.is_ensemble:
            return ""  # NOTE: nothing of its own to load: its steps run on its members
        return await self._loader.load(mv, cause, self._evictor.evict)

    async def _retire(self, mv: ModelVersion, *, keep_entry: bool = False) -> str:
        """Close, drain and unload ``mv``; drop it from routing unless it was replaced."""
        if mv.state is State.READY:
            self._set_state(mv, State.UNLOADING)
            await self._unload(mv)
        versions = self._versions.get(mv.model, {})
        if not keep_entry and versions.get(mv.version) is mv:
            del versions[mv.version]
            self._failed.get(mv.model, {}).pop(mv.version, None)
        self._set_state(mv, State.UNAVAILABLE)
        return ""

    async def _unload(self, mv: ModelVersion) -> None:
        """Drain ``mv`` (closed to new requests already), unload its instances, free its memory."""
        await self._serving.drain(mv)
        await self._loader.unload(mv)

    def mark_unhealthy(self, mv: ModelVersion, reason: str) -> None:
        """``mv`` stopped answering (a batch was written off as hung): it serves no more, and is
        not loaded again until its files or config change."""
        current = self._versions.get(mv.model, {}).get(mv.version)
        if current is not mv or mv.state is not State.READY:
            return
        self._failed.setdefault(mv.model, {})[mv.version] = mv.identity
        # NOTE: the stuck instance may still be running: its objects are dropped, not
        # unloaded under it; memory comes back once the call returns, if it ever does.
        mv.instances = []
        self.books.released(mv)
        self._set_state(mv, State.FAILED, reason)
        task = asyncio.get_running_loop().create_task(self._serving.drain(mv))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def shutdown(self) -> None:
        """Drain and unload every version: ensembles before the models their steps use, so
        that their requests in flight finish and no ensemble sees a member go away."""
        left = {name: list(vs.values()) for name, vs in self._versions.items()}
        while left:
            used = {
                step.model_name
                for versions in left.values()
                for mv in versions
                for step in mv.config.ensemble_steps
            }
            # NOTE: ensembles that include each other are never ready: retire them together.
            wave = [name for name in left if name not in used] or list(left)
            await asyncio.gather(*(self._retire(mv) for name in wave for mv in left.pop(name)))
        self._versions.clear()
