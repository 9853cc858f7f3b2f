"""Turning wanted versions into loaded ones: load, switch, drain, unload, and track their states."""

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

from repoman.backends import Backend, BackendContext, BackendRegistry
from repoman.config.model import ModelConfig
from repoman.errors import ModelNotFound, ModelNotReady, RepomanError
from repoman.repository import ModelEntry, Scan

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
    """One version of one model and its backend instances."""

    model: str
    version: int
    config: ModelConfig
    path: Path
    state: State = State.LOADING
    reason: str = ""
    instances: list[Backend] = field(default_factory=list)
    load_seconds: float = 0.0


class Serving(Protocol):
    """What the manager needs from the scheduler (which sits above it)."""

    def open(self, version: ModelVersion) -> None:
        """Start accepting requests for a READY version."""

    async def drain(self, version: ModelVersion) -> None:
        """Accept nothing new for ``version``; return once every queued request finished."""


StateListener = Callable[[str, int, str, str], None]


class ModelManager:
    """Owns every loaded model version. All methods run on the event loop thread.

    Loading and unloading run on a dedicated thread pool, so a slow load never stalls
    inference (which runs on the scheduler's pool). Transitions preserve availability:
    a new version is loaded and opened before the versions it replaces are drained.
    """

    def __init__(
        self,
        registry: BackendRegistry,
        serving: Serving,
        *,
        load_threads: int = 2,
        on_state: StateListener | None = None,
    ) -> None:
        self._registry = registry
        self._serving = serving
        self._versions: dict[str, dict[int, ModelVersion]] = {}
        self._model_errors: dict[str, str] = {}
        self._pool = ThreadPoolExecutor(load_threads, thread_name_prefix="repoman-load")
        self._on_state = on_state

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
        raise ModelNotReady(model, None, reasons)

    def is_ready(self, model: str, version: int | None = None) -> bool:
        try:
            self.route(model, version)
        except RepomanError:
            return False
        return True

    # ---- transitions -------------------------------------------------------------

    async def apply(self, scan: Scan) -> None:
        """Make the loaded versions match what ``scan`` wants, model by model, concurrently."""
        names = set(scan.models) | set(self._versions) | set(self._model_errors)
        await asyncio.gather(*(self._apply_model(name, scan.models.get(name)) for name in names))

    async def _apply_model(self, name: str, entry: ModelEntry | None) -> None:
        if entry is not None and entry.error is not None:
            if self._model_errors.get(name) != str(entry.error):
                log.error("model %s: cannot be served:\n%s", name, entry.error)
            self._model_errors[name] = str(entry.error)
            return  # NOTE: versions already serving stay up until a valid config arrives
        self._model_errors.pop(name, None)
        if entry is not None and entry.config is not None and name not in self._versions:
            for warning in entry.config.warnings:
                log.warning("model %s: %s", name, warning)
        current = self._versions.setdefault(name, {})
        wanted = set(entry.wanted) if entry is not None else set()
        to_load = [
            v for v in sorted(wanted) if v not in current or current[v].state is State.FAILED
        ]
        if entry is not None and entry.config is not None:
            await asyncio.gather(*(self._load(entry, v) for v in to_load))
        stale = [mv for v, mv in current.items() if v not in wanted]
        await asyncio.gather(*(self._unload(mv) for mv in stale))
        if not current and name in self._versions:
            del self._versions[name]

    async def _load(self, entry: ModelEntry, number: int) -> None:
        assert entry.config is not None
        mv = ModelVersion(entry.name, number, entry.config, entry.path / str(number))
        self._versions[entry.name][number] = mv
        self._set_state(mv, State.LOADING)
        started = time.perf_counter()
        try:
            spec = self._registry.resolve(entry.config)
            filename = entry.config.default_model_filename or spec.default_model_filename
            contexts = _instance_contexts(mv, mv.path / filename if filename else mv.path)
            instances = [spec.factory(context) for context in contexts]
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._pool, _load_all, instances)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, RepomanError) else f"{type(exc).__name__}: {exc}"
            self._set_state(mv, State.FAILED, reason)
            return
        mv.instances = instances
        mv.load_seconds = time.perf_counter() - started
        self._serving.open(mv)
        self._set_state(mv, State.READY)

    async def _unload(self, mv: ModelVersion) -> None:
        if mv.state is State.READY:
            self._set_state(mv, State.UNLOADING)
            await self._serving.drain(mv)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._pool, _unload_all, mv.instances)
            mv.instances = []
        self._versions.get(mv.model, {}).pop(mv.version, None)
        self._set_state(mv, State.UNAVAILABLE)

    async def shutdown(self) -> None:
        """Drain and unload every version."""
        await asyncio.gather(
            *(self._unload(mv) for vs in self._versions.values() for mv in list(vs.values()))
        )
        self._versions.clear()
        self._pool.shutdown(wait=True)

    def _set_state(self, mv: ModelVersion, state: State, reason: str = "") -> None:
        mv.state, mv.reason = state, reason
        if state is State.FAILED:
            log.error("model %s version %d: FAILED: %s", mv.model, mv.version, reason)
        elif state is State.READY:
            log.info(
                "model %s version %d: READY (loaded in %.2fs)",
                mv.model,
                mv.version,
                mv.load_seconds,
            )
        else:
            log.info("model %s version %d: %s", mv.model, mv.version, state.value)
        if self._on_state is not None:
            self._on_state(mv.model, mv.version, state.value, reason)


def _instance_contexts(mv: ModelVersion, model_path: Path) -> list[BackendContext]:
    contexts = []
    for group in mv.config.instance_groups:
        for index in range(group.count):
            device = group.gpus[index % len(group.gpus)] if group.gpus else None
            contexts.append(
                BackendContext(
                    config=mv.config,
                    version=mv.version,
                    version_path=mv.path,
                    model_path=model_path,
                    instance_name=f"{group.name}_{index}",
                    instance_kind=group.kind,
                    device_id=device,
                )
            )
    if not contexts:
        contexts.append(BackendContext(mv.config, mv.version, mv.path, model_path))
    return contexts


def _load_all(instances: list[Backend]) -> None:
    loaded: list[Backend] = []
    try:
        for instance in instances:
            instance.load()
            loaded.append(instance)
            _check_signature(instance)
    except BaseException:
        _unload_all(loaded)
        raise


def _unload_all(instances: list[Backend]) -> None:
    for instance in instances:
        try:
            instance.unload()
        except Exception as exc:
            log.warning("unloading %s failed: %s", instance.context.instance_name, exc)


def _check_signature(instance: Backend) -> None:
    """Refuse a config whose inputs/outputs disagree with what the model file declares."""
    config = instance.context.config
    batching = config.max_batch_size > 0
    for kind, declared, actual in (
        ("input", config.inputs, instance.model_inputs()),
        ("output", config.outputs, instance.model_outputs()),
    ):
        if actual is None:
            continue
        by_name = {tensor.name: tensor for tensor in actual}
        for tensor in declared:
            model_side = by_name.get(tensor.name)
            if model_side is None:
                raise RepomanError(
                    f"config {kind} '{tensor.name}' is not in the model (the model's {kind}s: "
                    f"{', '.join(sorted(by_name))})"
                )
            if model_side.data_type is not tensor.data_type:
                raise RepomanError(
                    f"{kind} '{tensor.name}': config says {tensor.data_type.config_name}, "
                    f"the model says {model_side.data_type.config_name}"
                )
            want = tensor.reshape if tensor.reshape is not None else tensor.dims
            have = model_side.dims[1:] if batching and model_side.dims else model_side.dims
            if model_side.dims and len(have) != len(want):
                shown = ([-1] if batching else []) + list(want)
                raise RepomanError(
                    f"{kind} '{tensor.name}': config shape {shown} does not match "
                    f"the model's {list(model_side.dims)}"
                )
