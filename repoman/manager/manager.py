"""Turning wanted versions into served ones: load, warm up, switch, drain, unload; their states."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from repoman.backends import Backend, BackendRegistry
from repoman.config.model import ModelConfig
from repoman.errors import ModelNotFound, ModelNotReady, RepomanError
from repoman.instances import instance_contexts, load_instances, unload_instances
from repoman.source.scan import Fingerprint, ModelEntry, Scan, VersionEntry

log = logging.getLogger(__name__)


class State(enum.Enum):
    """A version's life: LOADING -> READY -> UNLOADING -> UNAVAILABLE, or FAILED."""

    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"
    FAILED = "FAILED"


@dataclass(eq=False)
class ModelVersion:
    """One loaded (or loading, or failed) version of one model and its backend instances."""

    model: str
    version: int
    config: ModelConfig
    path: Path
    state: State = State.LOADING
    reason: str = ""
    instances: list[Backend] = field(default_factory=list)
    load_seconds: float = 0.0
    fingerprint: Fingerprint = ()


class Serving(Protocol):
    """What the manager needs from the scheduler (which sits above it)."""

    def open(self, version: ModelVersion) -> None:
        """Start accepting requests for a READY version."""

    async def drain(self, version: ModelVersion) -> None:
        """Accept nothing new for ``version``; return once every queued request finished."""


StateListener = Callable[[str, int, str, str], None]


class ModelManager:
    """Owns every model version. All methods run on the event loop thread.

    Transitions preserve availability (TF Serving's policy, plus draining): a new or
    changed version is loaded and warmed up in the background, opened, and only then are
    the versions it replaces closed, drained (every queued and running request finishes)
    and unloaded. If it fails, what served before keeps serving and the failure is
    visible with its reason; the same files are not retried until they change. Loading
    runs on its own thread pool, so a slow load never stalls inference.
    """

    def __init__(
        self,
        registry: BackendRegistry,
        serving: Serving,
        *,
        load_threads: int = 2,
        on_state: StateListener | None = None,
        load_timeout: float | None = None,
    ) -> None:
        self._registry = registry
        self._serving = serving
        self._versions: dict[str, dict[int, ModelVersion]] = {}
        self._model_errors: dict[str, str] = {}
        self._failed: dict[tuple[str, int], tuple[Fingerprint, ModelConfig | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pool = ThreadPoolExecutor(load_threads, thread_name_prefix="repoman-load")
        self._on_state = on_state
        self._load_timeout = load_timeout
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
        """The version that serves a request: the one named, else the newest READY one."""
        versions = self._versions.get(model)
        if not versions:
            if model in self._model_errors:
                raise ModelNotReady(model, version, self._model_errors[model])
            raise ModelNotFound(model, version)
        if version is not None:
            found = versions.get(version)
            if found is None:
                raise ModelNotFound(model, version)
            if found.state is not State.READY:
                raise ModelNotReady(model, version, found.reason or found.state.value.lower())
            return found
        for number in sorted(versions, reverse=True):
            if versions[number].state is State.READY:
                return versions[number]
        reasons = "; ".join(
            f"version {v.version} {v.state.value.lower()}" + (f": {v.reason}" if v.reason else "")
            for v in versions.values()
        )
        raise ModelNotReady(model, None, reasons or self._model_errors.get(model, ""))

    def is_ready(self, model: str, version: int | None = None) -> bool:
        try:
            self.route(model, version)
        except RepomanError:
            return False
        return True

    # ---- transitions -------------------------------------------------------------

    async def apply(self, scan: Scan) -> None:
        """Make every model match ``scan``; models absent from it are unloaded."""
        names = set(scan.models) | set(self._versions) | set(self._model_errors)
        await asyncio.gather(*(self.apply_model(name, scan.models.get(name)) for name in names))

    async def apply_model(self, name: str, entry: ModelEntry | None) -> None:
        """Make one model match ``entry`` (None: unload it). Calls for one model never overlap."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            await self._reconcile(name, entry)

    async def _reconcile(self, name: str, entry: ModelEntry | None) -> None:
        if entry is not None and entry.config_settling_for > 0:
            return  # NOTE: its config file is being written: judge it once it is still
        current = self._versions.setdefault(name, {})
        if entry is not None and entry.error is not None:
            if self._model_errors.get(name) != str(entry.error):
                log.error("model %s: cannot be served:\n%s", name, entry.error)
            self._model_errors[name] = str(entry.error)
            # NOTE: versions already serving stay up until a valid config arrives, but a
            # version whose folder is gone is gone.
            gone = [mv for v, mv in current.items() if v not in entry.versions]
            await asyncio.gather(*(self._retire(mv) for mv in gone))
            self._forget_if_empty(name)
            return
        self._model_errors.pop(name, None)
        if entry is not None and entry.config is not None and not current:
            for warning in entry.config.warnings:
                log.warning("model %s: %s", name, warning)
        wanted = [entry.versions[v] for v in entry.wanted] if entry is not None else []
        assert entry is None or entry.config is not None
        model_config = entry.config if entry is not None else None
        await asyncio.gather(*(self._bring_up(name, ve, model_config) for ve in wanted))

        wanted_numbers = {ve.number for ve in wanted}
        serving_wanted = any(
            current[v].state is State.READY for v in wanted_numbers if v in current
        )
        on_disk = entry.versions if entry is not None else {}
        stale = [
            mv
            for v, mv in current.items()
            if v not in wanted_numbers
            # NOTE: availability first: an unwanted version keeps serving until a wanted
            # one is READY, unless its folder is gone or nothing is wanted at all.
            and (
                serving_wanted
                or not wanted_numbers
                or v not in on_disk
                or mv.state is not State.READY
            )
        ]
        await asyncio.gather(*(self._retire(mv) for mv in stale))
        self._forget_if_empty(name)

    async def _bring_up(
        self, name: str, ve: VersionEntry, model_config: ModelConfig | None
    ) -> None:
        """Load a wanted version, or reload it when its files or config changed."""
        current = self._versions[name].get(ve.number)
        unchanged = current is not None and (current.fingerprint, current.config) == (
            ve.fingerprint,
            ve.config,
        )
        if unchanged and current is not None and current.state is State.READY:
            return
        if self._failed.get((name, ve.number)) == (ve.fingerprint, ve.config):
            return  # NOTE: failed with exactly these files and config: retry when they change
        replacement = await self._load(name, ve, model_config)
        if replacement.state is not State.READY:
            self._failed[(name, ve.number)] = (ve.fingerprint, ve.config)
            if current is not None and current.state is State.READY:
                current.reason = (
                    f"reload failed, still serving the previous files: {replacement.reason}"
                )
            else:
                self._versions[name][ve.number] = replacement
            return
        self._failed.pop((name, ve.number), None)
        # NOTE: open the new one, then swap the routing entry (one step on the loop thread,
        # so no request sees neither), then drain and unload the old one.
        self._serving.open(replacement)
        self._versions[name][ve.number] = replacement
        self._set_state(replacement, State.READY)
        if current is not None and current.state is State.READY:
            await self._retire(current, keep_entry=True)

    async def _load(
        self, name: str, ve: VersionEntry, model_config: ModelConfig | None
    ) -> ModelVersion:
        config = ve.config or model_config
        assert config is not None
        mv = ModelVersion(name, ve.number, config, ve.path, fingerprint=ve.fingerprint)
        if ve.config is None:  # the version's own config file is invalid
            self._set_state(mv, State.FAILED, str(ve.error))
            return mv
        if self._versions[name].get(ve.number) is None:
            self._versions[name][ve.number] = mv
        self._set_state(mv, State.LOADING)
        started = time.perf_counter()
        try:
            spec = self._registry.resolve(config)
            filename = config.default_model_filename or spec.default_model_filename
            contexts = instance_contexts(config, ve.number, ve.path, filename)
            instances = [spec.factory(context) for context in contexts]
            loop = asyncio.get_running_loop()
            loading = loop.run_in_executor(self._pool, load_instances, instances)
            try:
                await asyncio.wait_for(asyncio.shield(loading), self._load_timeout)
            except TimeoutError:
                # NOTE: a thread cannot be killed: the load goes on in the background and
                # whatever it builds is released when it ends; the version is not served.
                loading.add_done_callback(lambda _: unload_instances(instances))
                raise RepomanError(
                    f"loading did not finish within {self._load_timeout:g} s (--model-load-timeout)"
                ) from None
        except Exception as exc:  # any load failure is reported, never raised
            reason = str(exc) if isinstance(exc, RepomanError) else f"{type(exc).__name__}: {exc}"
            mv.state = State.FAILED
            self._set_state(mv, State.FAILED, reason)
            return mv
        mv.instances = instances
        mv.load_seconds = time.perf_counter() - started
        mv.state = State.READY  # NOTE: the caller announces READY once routing points at it
        return mv

    async def _retire(self, mv: ModelVersion, *, keep_entry: bool = False) -> None:
        """Close, drain and unload ``mv``; drop it from routing unless it was replaced."""
        if mv.state is State.READY:
            self._set_state(mv, State.UNLOADING)
            await self._serving.drain(mv)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._pool, unload_instances, mv.instances)
            mv.instances = []
        versions = self._versions.get(mv.model, {})
        if not keep_entry and versions.get(mv.version) is mv:
            del versions[mv.version]
            self._failed.pop((mv.model, mv.version), None)
        self._set_state(mv, State.UNAVAILABLE)

    def _forget_if_empty(self, name: str) -> None:
        if not self._versions.get(name) and name in self._versions:
            del self._versions[name]

    async def shutdown(self) -> None:
        """Drain and unload every version."""
        await asyncio.gather(
            *(self._retire(mv) for vs in self._versions.values() for mv in list(vs.values()))
        )
        self._versions.clear()
        self._pool.shutdown(wait=True)

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
