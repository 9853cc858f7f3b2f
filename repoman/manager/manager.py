"""The manager: carries out the policy's actions (load, open, swap, drain, unload) per model."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from repoman.aspired import Aspired, AspiredVersion
from repoman.backends import BackendRegistry
from repoman.errors import ModelNotReady, RepomanError
from repoman.instances import instance_contexts, load_instances, unload_instances
from repoman.manager.policy import Held, Identity, Load, plan
from repoman.manager.routing import choose
from repoman.manager.version import ModelVersion, State
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
    ) -> None:
        self._registry = registry
        self._blocked = blocked
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
        asked for this load and must be told. ``retry_failed``: try again versions that
        failed with these very files (an explicit load asks for that). ``need_members``: an
        ensemble version that cannot serve when it loads (``blocked`` says why: a member
        missing, not ready or not fitting) fails to load, as in Triton's explicit mode;
        without it, it loads and waits for its members (serving once they are ready)."""
        name = aspired.model
        failures: list[str] = [aspired.error] if aspired.error else []
        async with self._locks.setdefault(name, asyncio.Lock()):
            self._note_model_error(name, aspired.error)
            versions = self._versions.setdefault(name, {})
            failed = self._failed.setdefault(name, {})
            if retry_failed:
                failed.clear()
            while True:
                held = {v: Held(mv.state, mv.identity) for v, mv in versions.items()}
                actions = plan(held, aspired, failed)
                if not actions:
                    break
                outcomes = await asyncio.gather(
                    *(
                        self._load(name, a.target, a.replacing, need_members)
                        if isinstance(a, Load)
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
        self, name: str, target: AspiredVersion, replacing: bool, need_members: bool = False
    ) -> str:
        """Load ``target``; on success open it and swap it in ("" returned), else record why
        it failed and return that."""
        versions, failed = self._versions[name], self._failed[name]
        current = versions.get(target.version)
        mv = ModelVersion(
            name, target.version, target.config, target.location, fingerprint=target.fingerprint
        )
        if current is None:
            versions[target.version] = mv  # NOTE: shows as LOADING in the index meanwhile
        reason = target.error or await self._build(mv)
        if not reason and need_members and mv.config.is_ensemble and self._blocked is not None:
            reason = self._blocked(mv)
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
        self._set_state(mv, State.READY)
        if replacing and current is not None:
            await self._retire(current, keep_entry=True)
        return ""

    async def _build(self, mv: ModelVersion) -> str:
        """Build, load and warm up ``mv``'s instances; "" on success, else why it failed."""
        self._set_state(mv, State.LOADING)
        if mv.config.is_ensemble:
            return ""  # NOTE: nothing of its own to load: its steps run on its members
        started = time.perf_counter()
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
                    load_instances, instances, name="repoman-load", deadline=deadline
                )
                try:
                    await asyncio.wait_for(asyncio.shield(loading), self._load_timeout)
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
        return ""

    async def _retire(self, mv: ModelVersion, *, keep_entry: bool = False) -> str:
        """Close, drain and unload ``mv``; drop it from routing unless it was replaced."""
        if mv.state is State.READY:
            self._set_state(mv, State.UNLOADING)
            await self._serving.drain(mv)
            unloading = in_thread(unload_instances, mv.instances, name="repoman-unload")
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
        versions = self._versions.get(mv.model, {})
        if not keep_entry and versions.get(mv.version) is mv:
            del versions[mv.version]
            self._failed.get(mv.model, {}).pop(mv.version, None)
        self._set_state(mv, State.UNAVAILABLE)
        return ""

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
