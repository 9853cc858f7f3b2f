"""The manager: carries out the policy's actions (load, open, swap, drain, unload) per model."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from repoman.aspired import Aspired, AspiredVersion
from repoman.backends import BackendRegistry
from repoman.errors import ModelNotFound, ModelNotReady, RepomanError
from repoman.instances import instance_contexts, load_measured, unload_instances, unload_released
from repoman.manager.budget import MemoryBooks
from repoman.manager.eviction import NoRoom, idle_expired
from repoman.manager.policy import Held, Identity, Load, Park, plan
from repoman.manager.room import Room, Usage
from repoman.manager.routing import choose
from repoman.manager.version import ModelVersion, State
from repoman.memory import format_size
from repoman.threads import in_thread

log = logging.getLogger(__name__)


class Serving(Protocol):
    """What the manager needs from the scheduler (which sits above it)."""

    def open(self, version: ModelVersion) -> None:
        """Start accepting requests for a READY version."""

    async def drain(self, version: ModelVersion) -> None:
        """Accept nothing new for ``version``; return once every queued request finished."""


StateListener = Callable[[str, int, str, str], None]

Blocked = Callable[[ModelVersion], str]
"""Why a version cannot serve now ("" when it can): an ensemble whose members are not all
ready or do not fit its wiring (the layer that runs ensembles says; the manager only asks)."""

EVICTED = {"memory_budget": "unloaded: memory budget", "idle": "unloaded: idle"}
"""The reason an AVAILABLE version shows, by why it was unloaded."""
LAZY_REASON = "not loaded: loads on its first request"


class MemoryRefusal(str):
    """A load failure that is the memory budget's doing (the API answers it with 507)."""


class ModelManager:
    """Owns every model version; all methods run on the event loop thread.

    :meth:`apply` takes one model's aspired versions and runs :func:`~repoman.manager.policy.plan`
    until it has nothing left to do; calls for one model never overlap. Loading runs on its
    own thread pool, so a slow load never stalls inference.
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
        self._registry = registry
        self._blocked = blocked
        self.books = books or MemoryBooks(None)
        """Each version's memory, the budget, and the counts of loads and evictions."""
        self._lazy_default = lazy_default
        self._room = Room(self.books, usage, load_timeout)
        self._activating: dict[ModelVersion, asyncio.Task[ModelVersion]] = {}
        self._serving = serving
        self._versions: dict[str, dict[int, ModelVersion]] = {}
        self._model_errors: dict[str, str] = {}
        self._failed: dict[str, dict[int, Identity]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._loading = asyncio.Semaphore(load_threads)
        self._on_state = on_state
        self._load_timeout = load_timeout
        self._background: set[asyncio.Task[None]] = set()
        self.load_failures: dict[tuple[str, int], int] = {}
        """Failed load attempts by (model, version), for metrics."""

    # ---- queries -----------------------------------------------------------------

    def model_names(self) -> list[str]:
        return sorted(set(self._versions) | set(self._model_errors))

    def versions(self, model: str) -> list[ModelVersion]:
        return [self._versions[model][v] for v in sorted(self._versions.get(model, {}))]

    def model_error(self, model: str) -> str:
        return self._model_errors.get(model, "")

    def route(self, model: str, version: int | None = None) -> ModelVersion:
        """The version that serves a request: the one named, else the newest READY one;
        ModelNotReady when that one is READY but cannot serve (``blocked`` says why)."""
        mv = choose(model, self._versions.get(model) or {}, self._model_errors.get(model), version)
        if self._blocked is not None:
            reason = self._blocked(mv)
            if reason:
                raise ModelNotReady(model, version, reason)
        return mv

    def serving_state(self, mv: ModelVersion) -> tuple[State, str]:
        """The state and reason the API shows: UNAVAILABLE, with why, for a READY version
        that cannot serve now (an ensemble waiting for a member)."""
        if mv.state is State.READY and self._blocked is not None:
            reason = self._blocked(mv)
            if reason:
                return State.UNAVAILABLE, reason
        return mv.state, mv.reason

    def is_ready(self, model: str, version: int | None = None) -> bool:
        try:
            self.route(model, version)
        except RepomanError:
            return False
        return True

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
        async with self._locks.setdefault(name, asyncio.Lock()):
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

    def _note_model_error(self, name: str, error: str) -> None:
        if not error:
            self._model_errors.pop(name, None)
            return
        if self._model_errors.get(name) != error:
            log.error("model %s: cannot be served:\n%s", name, error)
        self._model_errors[name] = error

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
        parked = self._version(
            name, target, State.AVAILABLE, f"{EVICTED['memory_budget']} ({reason})"
        )
        versions[number] = parked
        self._set_state(parked, State.AVAILABLE, parked.reason)
        return MemoryRefusal(f"version {number}: {reason}")

    async def _park(self, name: str, target: AspiredVersion) -> str:
        """Hold ``target`` as AVAILABLE: its first request loads it."""
        versions = self._versions.setdefault(name, {})
        current = versions.get(target.version)
        parked = self._version(name, target, State.AVAILABLE, LAZY_REASON)
        if current is not None and current.state is State.AVAILABLE and current.reason:
            parked.reason = current.reason  # NOTE: "unloaded: ..." says more than "lazy"
        versions[target.version] = parked
        self._failed.get(name, {}).pop(target.version, None)
        self._set_state(parked, State.AVAILABLE, parked.reason)
        return ""

    # ---- lazy loading ----------------------------------------------------------------

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
        async with self._locks.setdefault(name, asyncio.Lock()):
            current = self._versions.get(name, {}).get(number)
            if current is None:
                raise ModelNotFound(name, number)
            if current.state is State.AVAILABLE:
                target = AspiredVersion(number, current.config, current.fingerprint, current.path)
                failure = await self._load(name, target, False, "lazy")
                current = self._versions.get(name, {}).get(number)
                if current is None:
                    raise ModelNotFound(name, number)
                if current.state is not State.READY:
                    raise ModelNotReady(name, number, failure.partition(": ")[2] or failure)
            if current.state is not State.READY:
                raise ModelNotReady(name, number, current.reason or current.state.value.lower())
            return current

    # ---- the memory budget -----------------------------------------------------------

    async def evict(self, mv: ModelVersion, why: str) -> None:
        """Unload a READY version to free its memory; it stays AVAILABLE (its next request
        loads it again). Its requests in flight finish first, as in any unload; new ones wait
        for its next load. ``why``: memory_budget or idle."""
        if mv.state is not State.READY or mv in self._room.swapping:
            return
        # NOTE: the routing entry becomes AVAILABLE first, in the same step as the state
        # change: a request never finds the version half-gone.
        versions = self._versions.get(mv.model, {})
        mv.state, mv.reason = State.UNLOADING, EVICTED[why]
        self.books.evictions[why] += 1
        log.info(
            "model %s version %d: %s (%s)",
            mv.model,
            mv.version,
            EVICTED[why],
            format_size(mv.memory_bytes),
        )
        if versions.get(mv.version) is mv:
            target = AspiredVersion(mv.version, mv.config, mv.fingerprint, mv.path)
            parked = self._version(mv.model, target, State.AVAILABLE, EVICTED[why])
            versions[mv.version] = parked
            self._set_state(parked, State.AVAILABLE, parked.reason)
        await self._unload(mv)
        mv.state = State.UNAVAILABLE

    async def unload_idle(self) -> int:
        """Evict every version unused for longer than its ``idle_unload_seconds``; how many."""
        expired = idle_expired(self._room.residents(), self.books.clock())
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

    async def _build(self, mv: ModelVersion, cause: str) -> str:
        """Build, load and warm up ``mv``'s instances; "" on success, else why it failed.
        Under a memory budget, loads run one at a time, each after making room for what it
        is expected to take (NoRoom raised when there is none)."""
        self._set_state(mv, State.LOADING)
        if mv.config.is_ensemble:
            return ""  # NOTE: nothing of its own to load: its steps run on its members
        if self.books.limit is None:
            return await self._build_measured(mv, cause)
        async with self._room.lock:
            await self._room.make(mv, mv.memory_bytes, self.evict)
            reason = await self._build_measured(mv, cause)
            if reason:
                return reason
            try:
                if mv.memory_bytes > self.books.limit:
                    raise NoRoom(
                        f"model {mv.model} version {mv.version} took "
                        f"{format_size(mv.memory_bytes)} to load, more than the whole memory "
                        f"budget ({format_size(self.books.limit)})",
                        alone=True,
                    )
                # NOTE: it took more than expected: the others make up for it at once.
                await self._room.make(mv, 0, self.evict)
            except NoRoom:
                instances, mv.instances = mv.instances, []
                self.books.released(mv)
                await in_thread(unload_released, instances, name="repoman-unload")
                raise
            return ""

    async def _build_measured(self, mv: ModelVersion, cause: str) -> str:
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
        self.books.loaded(mv, measured, mv.load_seconds)
        self.books.loads[cause] += 1
        return ""

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
        self.books.released(mv)
        self._room.freed.set()

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

    def _set_state(self, mv: ModelVersion, state: State, reason: str = "") -> None:
        mv.state, mv.reason = state, reason
        if state is State.FAILED:
            key = (mv.model, mv.version)
            self.load_failures[key] = self.load_failures.get(key, 0) + 1
            log.error("model %s version %d: FAILED: %s", mv.model, mv.version, reason)
        elif state is State.READY:
            log.info(
                "model %s version %d: READY (loaded in %.3fs)",
                mv.model,
                mv.version,
                mv.load_seconds,
            )
        else:
            log.info("model %s version %d: %s", mv.model, mv.version, state.value)
        if self._on_state is not None:
            self._on_state(mv.model, mv.version, state.value, reason)
