"""The versions a manager holds, by model and number: what the API asks of them (routing, the
state it shows) and every state change, with its log line and listener."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from repoman.errors import ModelNotReady, RepomanError
from repoman.manager.policy import Identity
from repoman.manager.routing import choose
from repoman.manager.version import ModelVersion, State

# NOTE: state changes log under the manager's name, as they always have (filters select on it).
log = logging.getLogger("repoman.manager.manager")

StateListener = Callable[[str, int, str, str], None]

Blocked = Callable[[ModelVersion], str]
"""Why a version cannot serve now ("" when it can): an ensemble whose members are not all
ready or do not fit its wiring (the layer that runs ensembles says; the manager only asks)."""


class VersionTable:
    """Loop thread only. The manager's state: its versions (the routing entries), each model's
    error, the identities (files and config) that failed to load and are not tried again until
    they change, and one lock per model (changes to one model never overlap)."""

    def __init__(self, on_state: StateListener | None, blocked: Blocked | None) -> None:
        self._on_state = on_state
        self._blocked = blocked
        self._versions: dict[str, dict[int, ModelVersion]] = {}
        self._model_errors: dict[str, str] = {}
        self._failed: dict[str, dict[int, Identity]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.load_failures: dict[tuple[str, int], int] = {}
        """Failed load attempts by (model, version), for metrics."""
        self._routes: dict[tuple[str, int | None], ModelVersion] = {}
        """Routing's answers since the last state change of any version (``_routed_at``)."""
        self._routed_at = -1

    def model_names(self) -> list[str]:
        return sorted(set(self._versions) | set(self._model_errors))

    def versions(self, model: str) -> list[ModelVersion]:
        return [self._versions[model][v] for v in sorted(self._versions.get(model, {}))]

    def model_error(self, model: str) -> str:
        return self._model_errors.get(model, "")

    def current(self, model: str, version: int) -> ModelVersion | None:
        """The routing entry for ``model`` ``version``, if there is one."""
        return self._versions.get(model, {}).get(version)

    def lock(self, model: str) -> asyncio.Lock:
        """Held while ``model``'s versions change."""
        return self._locks.setdefault(model, asyncio.Lock())

    def route(self, model: str, version: int | None = None) -> ModelVersion:
        """The version that serves a request: the one named, else the newest READY one;
        ModelNotReady when that one is READY but cannot serve (``blocked`` says why).

        An answer holds until a version changes state (every change to the routing entries
        comes with one, and so does every change to an ensemble's members): it is remembered
        until then, so an ensemble's steps do not each route again."""
        key = (model, version)
        if self._routed_at == ModelVersion.changes:
            found = self._routes.get(key)
            if found is not None:
                return found
        else:
            self._routes.clear()
            self._routed_at = ModelVersion.changes
        mv = choose(model, self._versions.get(model) or {}, self._model_errors.get(model), version)
        if self._blocked is not None:
            reason = self._blocked(mv)
            if reason:
                raise ModelNotReady(model, version, reason)
        self._routes[key] = mv
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

    def _note_model_error(self, name: str, error: str) -> None:
        if not error:
            self._model_errors.pop(name, None)
            return
        if self._model_errors.get(name) != error:
            log.error("model %s: cannot be served:\n%s", name, error)
        self._model_errors[name] = error

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
