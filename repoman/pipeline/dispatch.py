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
from functools import partial
from typing import Any, Protocol

import numpy as np

from repoman.errors import ModelNotReady, RepomanError
from repoman.manager import ModelVersion, State
from repoman.pipeline.graph import Plan, check_members, plan, step_label
from repoman.pipeline.runner import Cohort, EnsembleCall, Handle, StepDone, StepRun
from repoman.pipeline.waiting import Activate, WaitingRequest
from repoman.scheduler import PLAIN, RequestOptions, SharedScheduler
from repoman.scheduler.clock import RunningLoop
from repoman.scheduler.pending import Group, Pending
from repoman.scheduler.stats import Histogram, VersionStats, failure_reason
from repoman.tensors import Rows, batch_rows, shape_signature

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

    def ended(self, calls: Sequence[EnsembleCall]) -> None:
        """``calls`` ended (a cohort's answered at once, or one alone), counted as Triton
        counts an ensemble's requests: a success once in success (its whole duration),
        queue (until its first steps went to the scheduler), compute input/infer/output (the
        sum of its steps' compute times) and as one execution of its own batch size; a
        failure only in fail; a cancelled one not at all."""
        stats = self.stats
        now = time.perf_counter_ns()
        answered: list[EnsembleCall] = []
        for call in calls:
            done = call.future
            if done.cancelled():
                continue
            error = done.exception()
            if error is None:
                answered.append(call)
            else:
                stats.record_failure(failure_reason(error), now - call.started_ns)
        if answered:
            stats.record_executions(
                [now - call.started_ns for call in answered],
                [max(0, call.launched_ns - call.started_ns) for call in answered],
                # NOTE: its batch rows, as its cohort counted them (1: no batching)
                [call.rows for call in answered],
                [call.compute or _NO_COMPUTE for call in answered],
            )
        self.in_flight -= len(calls)
        if self.closing and self.in_flight == 0:
            self.drained.set()


_NO_COMPUTE = (0, 0, 0)


class Dispatcher:
    """Runs requests on model versions: the one door to the scheduler for everything above it.

    Event loop thread only. An ensemble's request becomes an :class:`EnsembleCall`; those
    that arrive before the scheduler's next dispatch pass, alike in outputs, priority and
    timeout, form a :class:`Cohort`, whose steps are groups of requests to the members (each
    request still its own request of the member's batch), routed per step (a step with
    ``model_version: -1`` takes the member's newest READY version at the moment it starts).
    :meth:`blocked` tells
    the manager's routing why an ensemble cannot serve now (a member not ready, or one whose
    config does not fit the wiring), so an ensemble is ready exactly when its members are.
    """

    def __init__(self, scheduler: SharedScheduler) -> None:
        self._scheduler = scheduler
        self._loop = RunningLoop()
        self._route: Route | None = None
        self._ensembles: dict[ModelVersion, _Ensemble] = {}
        self._fits: weakref.WeakKeyDictionary[
            ModelVersion, tuple[tuple[ModelVersion, ...], str]
        ] = weakref.WeakKeyDictionary()
        self._said: dict[str, str] = {}
        self._checking: list[str] = []
        self._activate: Activate | None = None
        self._arrivals: dict[tuple[Any, ...], list[EnsembleCall]] = {}
        self._between: dict[tuple[Any, ...], list[tuple[Cohort, tuple[int, ...]]]] = {}
        self._flush_due = False
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
        call = EnsembleCall(inputs, tuple(outputs), options, self._loop())
        ensemble.in_flight += 1
        call.on_end = ensemble.ended
        # NOTE: the requests that arrive before the next dispatch pass, alike in what they
        # ask, go through the steps together (a Cohort): one group per step, not one each.
        key = (version, call.wanted, tuple(inputs), options.priority, options.timeout_us)
        arrived = self._arrivals.get(key)
        if arrived is None:
            self._arrivals[key] = [call]
            self._start_cohorts_soon()
        else:
            arrived.append(call)
        return call

    def _start_cohorts_soon(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            self._scheduler.before_dispatch(self._start_cohorts)

    def _start_cohorts(self) -> None:
        """The requests that arrived since the last pass, as cohorts of up to the
        ensemble's batch each (a cohort's steps may start more, nested ensembles)."""
        self._flush_due = False
        while self._arrivals or self._between:
            between, self._between = self._between, {}
            for cohorts in between.values():
                self._resume(cohorts)
            arrivals, self._arrivals = self._arrivals, {}
            for (version, wanted, _, priority, timeout_us), calls in arrivals.items():
                ensemble = self._ensembles.get(version)
                if ensemble is None:
                    # NOTE: drained meanwhile, which only happens once none of its requests
                    # is left: these all went away before they could start
                    continue
                limit = max(1, version.config.max_batch_size)
                batching = ensemble.plan.batching
                cohort: list[EnsembleCall] = []
                rows = 0
                for call in calls:
                    if call.future.done():
                        continue  # NOTE: its caller went away already
                    count = call.rows = batch_rows(call.inputs) if batching else 1
                    if cohort and rows + count > limit:
                        self._start(version, ensemble, cohort, wanted, priority, timeout_us)
                        cohort, rows = [], 0
                    cohort.append(call)
                    rows += count
                if cohort:
                    self._start(version, ensemble, cohort, wanted, priority, timeout_us)

    def between(self, cohort: Cohort, ready: tuple[int, ...]) -> None:
        key = (cohort.point, ready)
        waiting = self._between.get(key)
        if waiting is None:
            self._between[key] = [(cohort, ready)]
            self._start_cohorts_soon()
        else:
            waiting.append((cohort, ready))

    @staticmethod
    def _resume(cohorts: list[tuple[Cohort, tuple[int, ...]]]) -> None:
        """Cohorts at one point between steps, joined up to the ensemble's batch, resumed."""
        first, ready = cohorts[0]
        if len(cohorts) == 1:
            first.resume(ready)
            return
        limit = max(1, first.version.config.max_batch_size)
        current, rows = first, first.live_rows()
        for cohort, _ in cohorts[1:]:
            count = cohort.live_rows()
            if count == 0:
                continue  # NOTE: every request of it went away
            if rows + count > limit:
                current.resume(ready)
                current, rows = cohort, count
                continue
            current.absorb(cohort)
            rows += count
        current.resume(ready)

    def _start(
        self,
        version: ModelVersion,
        ensemble: _Ensemble,
        calls: list[EnsembleCall],
        wanted: tuple[str, ...],
        priority: int,
        timeout_us: int | None,
    ) -> None:
        options = RequestOptions(priority, timeout_us)
        Cohort(self, version, ensemble.plan, calls, wanted, options).start()

    def run_step(
        self,
        version: ModelVersion,
        group: Group,
        outputs: tuple[str, ...],
        options: RequestOptions,
        done: StepDone,
    ) -> StepRun:
        """One ensemble step for a cohort's requests: as groups of up to a batch when the
        member batches dynamically, else each request on its own (a member without dynamic
        batching, an ensemble, a version not in memory)."""
        lazy = version.state is State.AVAILABLE and self._activate is not None
        if not (version.config.is_ensemble or lazy):
            most = self._scheduler.group_rows(version)
            if most:
                return _GroupRun(self._scheduler, version, group, outputs, options, done, most)
        return _EachRun(self, version, group, outputs, options, done)

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


class _Run:
    """A step's run for a cohort's requests: each one's result (or error) and compute times,
    told to ``done`` once every part of the run has ended (never before it was started)."""

    grouped = False
    """Its parts are groups (one result per request) rather than single requests."""

    def __init__(self, count: int, done: StepDone) -> None:
        self._done: StepDone | None = done
        self._results: list[Any] = [None] * count
        self._computes: list[tuple[int, int, int] | None] = [None] * count
        self._whole: Rows | None = None
        """Every request's outputs from one batch's ``Rows``, handed on as they are."""
        self._left = 0

    def _settled(self, item: Handle, start: int, end: int) -> None:
        """``item`` (the requests from ``start`` to ``end``) ended: its results are in."""
        done = item.future
        if done.cancelled():
            self._results[start:end] = [RepomanError("the step was cancelled")] * (end - start)
        elif (error := done.exception()) is not None:
            self._results[start:end] = [error] * (end - start)
        else:
            outcome = done.result()
            if self.grouped and isinstance(outcome, Rows) and end - start == len(self._results):
                self._whole = outcome  # NOTE: the whole step in one batch, the common case
            else:
                # NOTE: a group's result is one per request; a single request's is its outputs
                self._results[start:end] = outcome if self.grouped else [outcome]
            self._computes[start:end] = [item.compute] * (end - start)
        self._left -= 1
        if not self._left:
            self._end()

    def _started(self) -> None:
        if not self._left:  # NOTE: nothing was queued: told later, never before it returns
            asyncio.get_running_loop().call_soon(self._end)

    def _end(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done(self._results if self._whole is None else self._whole, self._computes)


class _GroupRun(_Run):
    """A step's requests queued as groups of at most ``most`` rows and one shape signature."""

    grouped = True

    def __init__(
        self,
        scheduler: SharedScheduler,
        version: ModelVersion,
        group: Group,
        outputs: tuple[str, ...],
        options: RequestOptions,
        done: StepDone,
        most: int,
    ) -> None:
        count = len(group.inputs)
        super().__init__(count, done)
        self._scheduler = scheduler
        self._items: list[Pending] = []
        # NOTE: requests held end to end share their shapes past the batch axis
        inputs = group.inputs
        signatures = None if isinstance(inputs, Rows) else [shape_signature(r) for r in inputs]
        start = 0
        while start < count:
            end, rows = start + 1, group.rows[start]
            while (
                end < count
                and rows + group.rows[end] <= most
                and (signatures is None or signatures[end] == signatures[start])
            ):
                rows += group.rows[end]
                end += 1
            try:
                item = scheduler.enqueue_group(version, group.part(start, end), outputs, options)
            except RepomanError as exc:
                self._results[start:end] = [exc] * (end - start)
            else:
                item.on_answer = partial(self._answered, item, start, end)
                item.on_split = partial(self._split, item, start, end)
                self._items.append(item)
                self._left += 1
            start = end
        self._started()

    def withdraw(self) -> None:
        self._done = None
        for item in self._items:
            item.on_answer = item.on_split = None
            self._scheduler.withdraw(item)

    def _split(self, item: Pending, start: int, end: int, head: Pending) -> None:
        """The scheduler took ``item``'s leading requests into ``head`` to fill a batch."""
        middle = start + head.count
        head.on_answer = partial(self._answered, head, start, middle)
        item.on_answer = partial(self._answered, item, middle, end)
        item.on_split = partial(self._split, item, middle, end)
        self._items.append(head)
        self._left += 1

    def _answered(self, item: Pending, start: int, end: int) -> None:
        item.on_split = None  # NOTE: it holds this run
        self._settled(item, start, end)


class _EachRun(_Run):
    """A step's requests sent one by one (a member that takes no groups)."""

    def __init__(
        self,
        door: Dispatcher,
        version: ModelVersion,
        group: Group,
        outputs: tuple[str, ...],
        options: RequestOptions,
        done: StepDone,
    ) -> None:
        super().__init__(len(group.inputs), done)
        self._door = door
        self._items: list[Handle] = []
        for index, inputs in enumerate(group.inputs):
            asked = RequestOptions(
                options.priority,
                options.timeout_us,
                group.request_ids[index],
                group.parameters[index],
            )
            try:
                item = door.enqueue(version, inputs, outputs, asked)
            except RepomanError as exc:
                self._results[index] = exc
                continue
            item.on_answer = partial(self._settled, item, index, index + 1)
            self._items.append(item)
            self._left += 1
        self._started()

    def withdraw(self) -> None:
        self._done = None
        for item in self._items:
            item.on_answer = None
            self._door.withdraw(item)
            if not item.future.done():
                item.future.cancel()
