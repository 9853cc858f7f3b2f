"""Requests to an ensemble, carried through its steps as a data flow on the event loop.

The requests to one ensemble that arrive together (before the scheduler's next dispatch pass,
asking for the same outputs, at the same priority and timeout) form a :class:`Cohort`, which
moves through
the steps as one: a step starts as soon as the tensors it reads exist, as one group of
requests to its member (``SharedScheduler.enqueue_group``), queued and answered as one while
each request still executes as its own request of the member's batch (its own rows, id and
parameters, batched with everyone else's requests) and gets its own result. So a step costs
the core one queue entry per group, not one per request. A request that fails in a step
fails alone; it never holds a worker while it waits. Tensors pass from step to step as they
are (no copy): a member's output slice is the next member's input.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from repoman.config.model import ModelConfig
from repoman.errors import BackendError, InvalidRequest, RepomanError, StepFailed
from repoman.manager import ModelVersion
from repoman.pipeline.columns import Column, whole_inputs
from repoman.pipeline.graph import Plan
from repoman.scheduler import RequestOptions
from repoman.scheduler.pending import Group
from repoman.signature import compatible_dims
from repoman.tensors import Rows


class Handle(Protocol):
    """A request on its way: a queued one (the scheduler's Pending), an ensemble's call, or
    one waiting for its version to load.

    ``on_answer``, when set, is called as soon as the request ends, its future settled
    (answered, failed, timed out), before the future's callbacks (which run an event-loop
    iteration later); a withdrawal by its caller does not call it.
    """

    on_answer: Callable[[], None] | None

    @property
    def future(self) -> asyncio.Future[Mapping[str, np.ndarray]]: ...

    @property
    def compute(self) -> tuple[int, int, int] | None:
        """Once answered: the compute input, infer and output nanoseconds it took (a queued
        request: its batch's; an ensemble's call: the sum of its steps')."""
        ...


StepDone = Callable[[Sequence[Any], list["tuple[int, int, int] | None"]], None]
"""Told once when a step's run ends: one Result (or the exception) per request (a ``Rows``
when one batch answered them all), and each request's compute nanoseconds (None where it
has none)."""


class StepRun(Protocol):
    """A step running for a group of requests."""

    def withdraw(self) -> None:
        """Its requests' callers went away: take back what still waits; ``done`` is not told."""
        ...


class Steps(Protocol):
    """What a cohort needs from the dispatcher that runs it."""

    def route(self, model: str, version: int | None) -> ModelVersion: ...

    def run_step(
        self,
        version: ModelVersion,
        group: Group,
        outputs: tuple[str, ...],
        options: RequestOptions,
        done: StepDone,
    ) -> StepRun:
        """Run ``group``'s requests on ``version``; ``done`` is told once, never before this
        returns."""
        ...

    def between(self, cohort: Cohort, ready: tuple[int, ...]) -> None:
        """``cohort`` finished a step and nothing else of it runs: resume it (``resume``)
        before the next dispatch pass, joined by the cohorts at the same point."""
        ...


class EnsembleCall:
    """One request to an ensemble, what its caller holds: ``future`` gets the outputs asked
    for, or its first failed step's error. Event loop only.

    Its cohort carries it through the steps; ``cancel`` (its caller went away) drops it from
    the cohort, which takes back its steps once none of its requests is left.
    """

    __slots__ = (
        "cohort",
        "compute",
        "future",
        "inputs",
        "launched_ns",
        "on_answer",
        "on_end",
        "options",
        "rows",
        "started_ns",
        "wanted",
    )

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        wanted: tuple[str, ...],
        options: RequestOptions,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.future: asyncio.Future[Mapping[str, np.ndarray]] = loop.create_future()
        self.started_ns = time.perf_counter_ns()
        self.launched_ns = 0
        """When its cohort started (its "queue" time ends)."""
        self.compute: tuple[int, int, int] | None = None
        self.on_answer: Callable[[], None] | None = None
        self.on_end: Callable[[Sequence[EnsembleCall]], None] | None = None
        """Called once, at once, however it ends: answered, failed, or cancelled (what the
        dispatcher counts it by; no future callback, which would take a loop iteration),
        with this call; or with its cohort's calls answered at once (:meth:`answer_all`)."""
        self.inputs = inputs
        self.wanted = wanted
        self.options = options
        self.cohort: Cohort | None = None
        self.rows = 1
        """Its batch rows (set as it joins a cohort)."""

    def cancel(self) -> None:
        """The caller went away: drop it (its cohort's steps go on for the others)."""
        if not self.future.done():
            self.future.cancel()
        cohort = self.cohort
        self._ended()
        if cohort is not None:
            cohort.dropped()

    @staticmethod
    def answer_all(
        calls: Sequence[EnsembleCall], outputs: Sequence[Mapping[str, np.ndarray]]
    ) -> None:
        """Answer each of ``calls`` (a cohort's, whose ``on_end`` is the same: their
        ensemble's) with its outputs, their ending told once, for them all."""
        hook = calls[0].on_end
        for call, answer in zip(calls, outputs, strict=True):
            call.future.set_result(answer)
            call.cohort = None
            call.on_end = None
        if hook is not None:
            hook(calls)
        for call in calls:
            call._told()

    def fail(self, error: BaseException) -> None:
        self.future.set_exception(error)
        self._ended()
        self._told()

    def _ended(self) -> None:
        # NOTE: let go of the cohort: it holds this call (a cycle per request otherwise)
        self.cohort = None
        hook, self.on_end = self.on_end, None
        if hook is not None:
            hook((self,))

    def _told(self) -> None:
        """Tell ``on_answer`` (once), letting go of it first: it holds this call."""
        listener, self.on_answer = self.on_answer, None
        if listener is not None:
            listener()


class Cohort:
    """Requests to one ensemble version that move through its steps together.

    Event loop only. Each tensor is a :class:`Column`: the requests' arrays as they came, or,
    once a member's batch produced it, that batch's output as it is. ``start`` launches the
    steps whose inputs are there; each step that finishes fills its output columns and
    launches the steps now complete, for the requests still in the cohort; a request whose
    step failed fails alone.
    """

    def __init__(
        self,
        steps: Steps,
        version: ModelVersion,
        plan: Plan,
        calls: list[EnsembleCall],
        wanted: tuple[str, ...],
        options: RequestOptions,
    ) -> None:
        self._steps = steps
        self._version = version
        self._plan = plan
        self._calls = calls
        self._wanted = wanted
        self._priority = options.priority
        # NOTE: a member is asked what the ensemble was asked, its own priority level aside;
        # each request's id and parameters travel with it (the group's).
        self._options = RequestOptions(0, options.timeout_us)
        batching = plan.batching
        self._tensors: dict[str, Column] = {
            name: Column.gathered([call.inputs[name] for call in calls], batching)
            for name in calls[0].inputs
        }
        self._needed = plan.needed(wanted)
        self._waiting = {i: plan.waits[i] for i in self._needed}
        self._running: dict[int, StepRun] = {}
        self._compute: tuple[int, int, int] | None = None
        """Compute nanoseconds of the steps every request of it took in one batch, not yet
        added to each request's own (:meth:`_hand_out_compute`)."""
        for call in calls:
            call.cohort = self

    def start(self) -> None:
        now = time.perf_counter_ns()
        for call in self._calls:
            call.launched_ns = now
        if not self._needed:
            self._answer([])  # NOTE: no output asked for: nothing to run
            return
        for index in self._needed:
            if self._waiting[index] == 0:
                self._launch(index)

    @property
    def version(self) -> ModelVersion:
        return self._version

    @property
    def point(self) -> tuple[Any, ...]:
        """Where it stands: cohorts at the same point (same ensemble version, outputs asked
        for, priority, timeout and steps done) may go on as one (:meth:`absorb`)."""
        return (
            self._version,
            self._wanted,
            self._priority,
            self._options.timeout_us,
            tuple(self._waiting.items()),
            frozenset(self._tensors),
        )

    def live_rows(self) -> int:
        return sum(call.rows for call in self._calls if not call.future.done())

    def absorb(self, other: Cohort) -> None:
        """Take ``other``'s requests (a cohort at the same point, between steps): they go on
        as this cohort's. Requests that ended are dropped from both."""
        self._hand_out_compute()
        other._hand_out_compute()
        keep = [pos for pos, call in enumerate(self._calls) if not call.future.done()]
        more = [pos for pos, call in enumerate(other._calls) if not call.future.done()]
        calls = [self._calls[pos] for pos in keep] + [other._calls[pos] for pos in more]
        everyone = len(keep) == len(self._calls) and len(more) == len(other._calls)
        for name, column in self._tensors.items():
            theirs = other._tensors[name]
            joined = column.joined(theirs) if everyone else None
            self._tensors[name] = joined or Column(
                [column[pos] for pos in keep] + [theirs[pos] for pos in more]
            )
        for pos in more:
            other._calls[pos].cohort = self
        self._calls = calls
        other._calls = []

    def resume(self, ready: tuple[int, ...]) -> None:
        """Launch the steps that were ready when it stopped between steps."""
        for index in ready:
            self._launch(index)

    def dropped(self) -> None:
        """A request went away: once none is left, take back the steps still running."""
        if all(call.future.done() for call in self._calls):
            self._stop()

    # ---- steps -----------------------------------------------------------------------

    def _launch(self, index: int) -> None:
        plan, calls = self._plan, self._calls
        live = [pos for pos, call in enumerate(calls) if not call.future.done()]
        if not live:
            return
        member: ModelVersion | None = None
        try:
            member = self._steps.route(plan.steps[index].model_name, plan.versions[index])
        except RepomanError as exc:
            for pos in live:
                self._fail(calls[pos], index, member, exc)
            return
        columns = [(key, self._tensors[tensor]) for key, tensor in plan.input_items[index]]
        config = member.config
        whole = whole_inputs(config, columns) if len(live) == len(calls) else None
        if whole is not None:
            arrays, offsets = whole
            try:
                _member_inputs(config, arrays)  # NOTE: one check (and reshape) for all
            except InvalidRequest as exc:
                for pos in live:
                    self._fail(calls[pos], index, member, exc)
                return
            together = Rows(arrays, offsets)
            self._run(index, member, live, together, together.rows)
            return
        if len(columns) == 1:
            ((key, column),) = columns
            inputs = [{key: column[pos]} for pos in live]
        else:
            inputs = [{key: column[pos] for key, column in columns} for pos in live]
        problems = _check_inputs(config, inputs)
        if problems is not None:
            for pos, problem in zip(list(live), problems, strict=True):
                if problem is not None:
                    self._fail(calls[pos], index, member, problem)
            kept = [j for j, problem in enumerate(problems) if problem is None]
            live = [live[j] for j in kept]
            inputs = [inputs[j] for j in kept]
            if not live:
                return
        if config.max_batch_size > 0:
            first = columns[0][0]
            rows = [len(request[first]) for request in inputs]
        else:
            rows = [1] * len(inputs)
        self._run(index, member, live, inputs, rows)

    def _run(
        self,
        index: int,
        member: ModelVersion,
        live: list[int],
        inputs: Sequence[Mapping[str, np.ndarray]],
        rows: list[int],
    ) -> None:
        """Step ``index`` of the requests at ``live`` (their inputs and rows), on ``member``."""
        calls = self._calls
        options = self._options
        if self._priority:
            options = replace(options, priority=_member_priority(member.config, self._priority))
        group = Group(
            inputs,
            rows,
            [calls[pos].options.request_id for pos in live],
            [calls[pos].options.parameters for pos in live],
        )
        routed = member

        def done(results: Sequence[Any], computes: list[tuple[int, int, int] | None]) -> None:
            self._finished(index, routed, live, results, computes)

        self._running[index] = self._steps.run_step(
            member, group, self._plan.outputs[index], options, done
        )

    def _finished(
        self,
        index: int,
        member: ModelVersion,
        live: list[int],
        results: Sequence[Any],
        computes: list[tuple[int, int, int] | None],
    ) -> None:
        self._running.pop(index, None)
        if not self._took_whole(index, member, live, results, computes):
            self._took_each(index, member, live, results, computes)
        self._next(index)

    def _took_whole(
        self,
        index: int,
        member: ModelVersion,
        live: list[int],
        results: Sequence[Any],
        computes: list[tuple[int, int, int] | None],
    ) -> bool:
        """Take a step's outputs as its batch gave them, one column each, when one batch
        answered every request of the cohort (none failed, none went away meanwhile)."""
        calls = self._calls
        if not isinstance(results, Rows) or len(live) != len(calls):
            return False
        whole = results.whole
        items = self._plan.output_items[index]
        if any(key not in whole for key, _ in items) or any(c.future.done() for c in calls):
            return False
        config = member.config
        reshaped = config.reshaped_outputs
        for key, tensor in items:
            value = whole[key]
            if key in reshaped:
                value = _reshape_out(config, key, value)
            self._tensors[tensor] = Column(whole=value, offsets=results.offsets)
        compute, total = computes[0], self._compute
        if compute is not None:
            self._compute = compute if total is None else _sum_compute(total, compute)
        return True

    def _took_each(
        self,
        index: int,
        member: ModelVersion,
        live: list[int],
        results: Sequence[Any],
        computes: list[tuple[int, int, int] | None],
    ) -> None:
        """Take a step's outputs request by request (a request that failed fails alone)."""
        self._hand_out_compute()
        plan, calls, tensors = self._plan, self._calls, self._tensors
        config = member.config
        reshaped = config.reshaped_outputs
        columns = []
        for key, tensor in plan.output_items[index]:
            column = tensors.get(tensor)
            if column is None:
                column = tensors[tensor] = Column([None] * len(calls))
            columns.append((key, column))
        for pos, result, compute in zip(live, results, computes, strict=True):
            call = calls[pos]
            if call.future.done():
                continue  # NOTE: failed in another step, or its caller went away
            if isinstance(result, BaseException):
                self._fail(call, index, member, result)
                continue
            for key, column in columns:
                value = result.get(key)
                if value is None:
                    error = BackendError(f"model '{member.model}' returned no '{key}'")
                    self._fail(call, index, member, error)
                    break
                if key in reshaped:
                    value = _reshape_out(config, key, value)
                column[pos] = value
            else:
                if compute is not None:
                    _add_compute(call, compute)

    def _next(self, index: int) -> None:
        """Step ``index`` is done: launch the steps it completed, or answer."""
        plan, calls, tensors = self._plan, self._calls, self._tensors
        if all(call.future.done() for call in calls):
            self._stop()
            return
        ready: list[int] = []
        for _, tensor in plan.output_items[index]:
            for consumer in plan.consumers.get(tensor, ()):
                waiting = self._waiting.get(consumer)
                if waiting is None:
                    continue  # NOTE: a step these requests do not need
                self._waiting[consumer] = waiting - 1
                if waiting == 1:
                    ready.append(consumer)
        if ready and not self._running:
            # NOTE: between steps: cohorts at the same point (the others of this member's
            # batch) join this one first, so the next member sees one group, not several.
            self._steps.between(self, tuple(ready))
            return
        for consumer in ready:
            self._launch(consumer)
        if not self._running:
            self._answer([(name, tensors[name]) for name in self._wanted])

    def _answer(self, wanted: list[tuple[str, Column]]) -> None:
        """Answer every request still waiting with its rows of the ``wanted`` columns, their
        ending told once for them all."""
        self._hand_out_compute()
        calls = self._calls
        live = [pos for pos, call in enumerate(calls) if not call.future.done()]
        if live:
            EnsembleCall.answer_all(
                [calls[pos] for pos in live],
                [{name: column[pos] for name, column in wanted} for pos in live],
            )

    def _hand_out_compute(self) -> None:
        """Add the compute of the steps taken whole to each request's own (before they part
        ways: answered, taken one by one, or joined to another cohort)."""
        compute, self._compute = self._compute, None
        if compute is not None:
            for call in self._calls:
                _add_compute(call, compute)

    def _fail(
        self,
        call: EnsembleCall,
        index: int,
        member: ModelVersion | None,
        error: BaseException,
    ) -> None:
        step = self._plan.steps[index]
        version = member.version if member is not None else None
        call.fail(StepFailed(self._version.model, index, step.model_name, version, error))

    def _stop(self) -> None:
        running, self._running = self._running, {}
        for run in running.values():
            run.withdraw()


def _add_compute(call: EnsembleCall, compute: tuple[int, int, int]) -> None:
    """Count a step's compute nanoseconds (input, infer, output) into ``call``'s."""
    total = call.compute
    call.compute = compute if total is None else _sum_compute(total, compute)


def _sum_compute(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def _check_inputs(
    config: ModelConfig, inputs: list[dict[str, np.ndarray]]
) -> list[InvalidRequest | None] | None:
    """A step's requests checked against the member's config (None: every one fits, the
    common case), each input reshaped where the member asks. The wiring was checked against
    the configs; what only a request shows (a variable dimension, a Python member's output)
    is checked here, before it reaches the member: one problem per request, or None."""
    problems: list[InvalidRequest | None] | None = None
    by_name = config.inputs_by_name
    if any(by_name[name].reshape is not None for name in inputs[0]):
        for j, request in enumerate(inputs):  # NOTE: rare: each request reshaped in turn
            try:
                _member_inputs(config, request)
            except InvalidRequest as exc:
                if problems is None:
                    problems = [None] * len(inputs)
                problems[j] = exc
        return problems
    verdicts: dict[tuple[str, Any, tuple[int, ...]], InvalidRequest | None] = {}
    for j, request in enumerate(inputs):
        for name, array in request.items():
            key = (name, array.dtype, array.shape)
            if key not in verdicts:
                try:
                    _member_inputs(config, {name: array})
                    verdicts[key] = None
                except InvalidRequest as exc:
                    verdicts[key] = exc
            problem = verdicts[key]
            if problem is not None:
                if problems is None:
                    problems = [None] * len(inputs)
                problems[j] = problem
                break
    return problems


def _member_inputs(config: ModelConfig, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A step's inputs checked against the member's config, reshaped where it asks.

    The wiring was checked against the configs; what only a request shows (a variable
    dimension, a Python member's output) is checked here, before it reaches the member.
    """
    batching = config.max_batch_size > 0
    for name, array in inputs.items():
        tensor = config.inputs_by_name[name]
        if array.dtype != tensor.data_type.numpy_dtype:
            raise InvalidRequest(
                f"input '{name}' of model '{config.name}': expected datatype "
                f"{tensor.data_type.value}, found numpy {array.dtype}"
            )
        shape = array.shape[1:] if batching else array.shape
        if not compatible_dims(shape, tensor.dims):
            expected = ([-1] if batching else []) + list(tensor.dims)
            raise InvalidRequest(
                f"input '{name}' of model '{config.name}': expected shape {expected}, "
                f"found {list(array.shape)}"
            )
        if tensor.reshape is not None:
            target = ((array.shape[0],) if batching else ()) + tensor.reshape
            inputs[name] = array.reshape(target)
    return inputs


def _member_priority(config: ModelConfig, priority: int) -> int:
    """The ensemble request's priority as a member takes it: a level the member does not
    have means its default level (0), as Triton's requests do."""
    if priority <= 0 or config.is_ensemble:
        return priority  # NOTE: a nested ensemble hands it on to its own members
    dynamic = config.dynamic_batching if config.max_batch_size > 0 else None
    levels = dynamic.priority_levels if dynamic is not None else 0
    return priority if priority <= max(levels, 1) else 0


def _reshape_out(config: ModelConfig, name: str, array: np.ndarray) -> np.ndarray:
    tensor = config.outputs_by_name[name]
    target = ((array.shape[0],) if config.max_batch_size > 0 else ()) + tensor.dims
    return array.reshape(target)
