"""Where every request to a model version goes: an ensemble's to its steps, any other's to the
shared scheduler. The manager opens and drains versions through it; the data plane, the
front-ends' hub and (later) models calling models submit through it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from repoman.errors import ModelNotReady, RepomanError
from repoman.manager import ModelVersion, State
from repoman.pipeline.graph import Plan, check_members, plan, step_label
from repoman.pipeline.runner import EnsembleCall, Handle
from repoman.pipeline.waiting import Activate, WaitingRequest
from repoman.scheduler import PLAIN, RequestOptions, SharedScheduler
from repoman.scheduler.pending import Pending
from repoman.scheduler.stats import Histogram, VersionStats, failure_reason
from repoman.tensors import batch_rows

log = logging.getLogger(__name__)

LAZY_WAIT_BOUNDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Buckets (seconds) of the time requests wait for a lazy load."""

Route = Callable[[str, "int | None"], ModelVersion]
"""The manager's routing: the version that serves ``model`` (``None``: the newest READY)."""


class Versions(Protocol):
    def model_names(self) -> list[str]: ...

    def versions(self, model: str) -> list[ModelVersion]: ...


@dataclass(eq=False)
class _Ensemble:
    """An open ensemble version: its plan, its statistics and its requests in flight."""

    plan: Plan
    stats: VersionStats = field(default_factory=VersionStats)
    in_flight: int = 0
    closing: bool = False
    drained: asyncio.Event = field(default_factory=asyncio.Event)


class Dispatcher:
    """Runs requests on model versions: the one door to the scheduler for everything above it.

    Event loop thread only. An ensemble's request becomes an :class:`EnsembleCall` whose
    steps are requests to the members, routed per request (a step with ``model_version: -1``
    takes the member's newest READY version at the moment it starts). :meth:`blocked` tells
    the manager's routing why an ensemble cannot serve now (a member not ready, or one whose
    config does not fit the wiring), so an ensemble is ready exactly when its members are.
    """

    def __init__(self, scheduler: SharedScheduler) -> None:
        self._scheduler = scheduler
        self._route: Route | None = None
        self._ensembles: dict[ModelVersion, _Ensemble] = {}
        self._fits: weakref.WeakKeyDictionary[
            ModelVersion, tuple[tuple[ModelVersion, ...], str]
        ] = weakref.WeakKeyDictionary()
        self._said: dict[str, str] = {}
        self._checking: list[str] = []
        self._activate: Activate | None = None
        self.lazy_waits: dict[tuple[str, int], Histogram] = {}
        """Seconds requests waited for a lazy load, by (model, version)."""

    def bind(self, route: Route, activate: Activate | None = None) -> None:
        """Give it the manager's routing and lazy loading (the manager is built after its
        Serving)."""
        self._route = route
        self._activate = activate

    # ---- the Serving protocol the manager calls -----------------------------------

    def open(self, version: ModelVersion) -> None:
        if version.config.is_ensemble:
            self._ensembles[version] = _Ensemble(plan(version.config))
        else:
            self._scheduler.open(version)

    async def drain(self, version: ModelVersion) -> None:
        ensemble = self._ensembles.get(version)
        if ensemble is None:
            await self._scheduler.drain(version)
            return
        ensemble.closing = True
        if ensemble.in_flight:
            await ensemble.drained.wait()
        self._ensembles.pop(version, None)

    # ---- requests ------------------------------------------------------------------

    def route(self, model: str, version: int | None = None) -> ModelVersion:
        assert self._route is not None, "bind() the manager's routing first"
        return self._route(model, version)

    async def submit(
        self,
        version: ModelVersion,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        *,
        priority: int = 0,
        timeout_us: int | None = None,
        request_id: str = "",
        parameters: Mapping[str, Any] | None = None,
        callers: tuple[ModelVersion, ...] = (),
    ) -> Mapping[str, np.ndarray]:
        """Run one request on ``version`` (any model, ensemble or not); return its outputs.

        The same contract as :meth:`SharedScheduler.submit`: raises at once when the version
        refuses it; a caller cancelled while waiting withdraws the request (and an
        ensemble's steps still in flight).
        """
        item = self.enqueue(
            version,
            inputs,
            outputs,
            RequestOptions(priority, timeout_us, request_id, parameters, callers),
        )
        try:
            return await item.future
        finally:
            done = item.future
            if not done.done() or done.cancelled():  # NOTE: its caller gave up: take it back
                self.withdraw(item)

    def enqueue(
        self,
        version: ModelVersion,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        options: RequestOptions = PLAIN,
    ) -> Handle:
        """:meth:`submit` without the waiting: the request on its way, whose ``future`` gets
        the outputs (or the error). A caller that gives up calls :meth:`withdraw`.
        ``options.callers``: for a call a model makes from inside batches (BLS), the
        instances those batches hold (see ``Running.held``)."""
        ensemble = self._ensembles.get(version)
        if ensemble is None:
            if version.config.is_ensemble:
                raise ModelNotReady(version.model, version.version, "it is being unloaded")
            if version.state is State.AVAILABLE and self._activate is not None:
                return WaitingRequest(
                    self, self._activate, version, inputs, tuple(outputs), self._waited, options
                )
            return self._scheduler.enqueue(version, inputs, outputs, options)
        if ensemble.closing:
            raise ModelNotReady(version.model, version.version, "it is being unloaded")
        call = EnsembleCall(self, version, ensemble.plan, inputs, tuple(outputs), options)
        ensemble.in_flight += 1
        call.on_end = lambda ended: self._answered(ensemble, ended, inputs)
        call.start()
        return call

    def withdraw(self, item: Handle) -> None:
        """Take ``item`` back if it is still waiting (its client went away)."""
        if isinstance(item, Pending):
            self._scheduler.withdraw(item)
        elif isinstance(item, EnsembleCall | WaitingRequest):
            item.cancel()

    def _waited(self, version: ModelVersion, seconds: float) -> None:
        key = (version.model, version.version)
        histogram = self.lazy_waits.get(key)
        if histogram is None:
            histogram = self.lazy_waits[key] = Histogram(LAZY_WAIT_BOUNDS)
        histogram.observe(seconds)

    def _answered(
        self, ensemble: _Ensemble, call: EnsembleCall, inputs: Mapping[str, np.ndarray]
    ) -> None:
        # NOTE: Triton's numbers for an ensemble: a successful request counts once in
        # success (its whole duration), queue (until its first steps went to the scheduler),
        # compute input/infer/output (the sum of its steps' compute times) and as one
        # execution of its own batch size; a failed one only in fail.
        stats = ensemble.stats
        done = call.future
        elapsed = time.perf_counter_ns() - call.started_ns
        if not done.cancelled() and done.exception() is None:
            stats.record_success(elapsed)
            stats.record_queued(max(0, call.launched_ns - call.started_ns) / 1e9)
            compute = call.compute or (0, 0, 0)
            stats.record_batch(
                batch_rows(inputs) if ensemble.plan.batching else 1,
                1,
                input_ns=compute[0],
                infer_ns=compute[1],
                output_ns=compute[2],
            )
        elif (error := None if done.cancelled() else done.exception()) is not None:
            stats.record_failure(failure_reason(error), elapsed)
        ensemble.in_flight -= 1
        if ensemble.closing and ensemble.in_flight == 0:
            ensemble.drained.set()

    # ---- statistics ----------------------------------------------------------------

    def stats(self, version: ModelVersion) -> VersionStats:
        ensemble = self._ensembles.get(version)
        return ensemble.stats if ensemble is not None else self._scheduler.stats(version)

    def queued(self, version: ModelVersion) -> int:
        """Requests of ``version`` waiting (an ensemble's: those in flight through its steps)."""
        ensemble = self._ensembles.get(version)
        return ensemble.in_flight if ensemble is not None else self._scheduler.queued(version)

    def executing(self, version: ModelVersion) -> int:
        """Batches of ``version`` on a worker now (0 for an ensemble: it runs none)."""
        return self._scheduler.executing(version)

    # ---- readiness -----------------------------------------------------------------

    def recheck(self, manager: Versions) -> None:
        """Judge every READY ensemble again (a version changed state): logs each ensemble
        whose readiness changed, with the reason, at once rather than at its next request."""
        for name in manager.model_names():
            for version in manager.versions(name):
                if version.config.is_ensemble and version.state is State.READY:
                    self.blocked(version)

    def blocked(self, version: ModelVersion) -> str:
        """Why a READY ``version`` cannot serve now ("" when it can): for an ensemble, a
        member that is not ready or whose config does not fit the wiring."""
        if not version.config.is_ensemble:
            return ""
        model = version.model
        if model in self._checking:
            cycle = " -> ".join([*self._checking[self._checking.index(model) :], model])
            return f"ensembles include each other ({cycle})"
        self._checking.append(model)
        try:
            reason = self._check(version)
        finally:
            self._checking.pop()
        # NOTE: only a READY version "cannot serve"; a load that checks its members says
        # why it failed itself.
        if version.state is State.READY and self._said.get(model) != reason:
            self._said[model] = reason
            if reason:
                log.warning(
                    "ensemble %s version %d cannot serve: %s", model, version.version, reason
                )
            elif not self._checking:
                log.info("ensemble %s version %d: every member is ready", model, version.version)
        return reason

    def _check(self, version: ModelVersion) -> str:
        members: list[ModelVersion] = []
        for index, step in enumerate(version.config.ensemble_steps):
            wanted = None if step.model_version < 0 else step.model_version
            try:
                members.append(self.route(step.model_name, wanted))
            except RepomanError as exc:
                return f"{step_label(index, step)}: {exc}"
        cached = self._fits.get(version)
        if cached is not None and all(a is b for a, b in zip(cached[0], members, strict=True)):
            return cached[1]
        problems = check_members(version.config, [member.config for member in members])
        reason = "; ".join(problems)
        self._fits[version] = (tuple(members), reason)
        return reason
