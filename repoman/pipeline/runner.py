"""One request to an ensemble, carried through its steps as a data flow on the event loop.

A step starts as soon as the tensors it reads exist, as a request to its member like any
other (the member's queue batches it with everyone else's requests); it never holds a
worker while it waits. Tensors pass from step to step as they are (no copy): a member's
output slice is the next member's input.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Protocol

import numpy as np

from repoman.config.model import ModelConfig
from repoman.errors import BackendError, InvalidRequest, RepomanError, StepFailed
from repoman.manager import ModelVersion
from repoman.pipeline.graph import Plan
from repoman.scheduler import RequestOptions
from repoman.signature import compatible_dims


class Handle(Protocol):
    """A request on its way: a queued one (the scheduler's Pending) or an ensemble's call.

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


class Steps(Protocol):
    """What an ensemble's call needs from the dispatcher that runs it."""

    def route(self, model: str, version: int | None) -> ModelVersion: ...

    def enqueue(
        self,
        version: ModelVersion,
        inputs: Mapping[str, np.ndarray],
        outputs: tuple[str, ...],
        options: RequestOptions,
    ) -> Handle: ...

    def withdraw(self, item: Handle) -> None: ...


class EnsembleCall:
    """One ensemble request: ``future`` gets the outputs asked for, or the first step's error.

    Event loop thread only. ``start`` launches the steps whose inputs are there; each step
    that finishes adds its outputs and launches the steps now complete. A step that fails
    fails the call at once and withdraws the steps still queued; ``cancel`` does the same
    for a client that went away.
    """

    def __init__(
        self,
        steps: Steps,
        version: ModelVersion,
        plan: Plan,
        inputs: Mapping[str, np.ndarray],
        wanted: tuple[str, ...],
        options: RequestOptions,
    ) -> None:
        self.future: asyncio.Future[Mapping[str, np.ndarray]] = (
            asyncio.get_running_loop().create_future()
        )
        self.started_ns = time.perf_counter_ns()
        self.launched_ns = 0
        """When its first steps were handed to the scheduler (its "queue" time ends)."""
        self.compute: tuple[int, int, int] | None = None
        self.on_answer: Callable[[], None] | None = None
        self.on_end: Callable[[EnsembleCall], None] | None = None
        """Called once, at once, however it ends: answered, failed, or cancelled (what the
        dispatcher counts it by; no future callback, which would take a loop iteration)."""
        self._steps = steps
        self._version = version
        self._plan = plan
        self._tensors: dict[str, np.ndarray] = dict(inputs)
        self._wanted = wanted
        self._missing = len(wanted)
        self._priority = options.priority
        # NOTE: a member is asked what the ensemble was asked, its own priority level aside;
        # the calls a model's batches hold (BLS) stay with the ensemble's own request.
        self._options = (
            options
            if not options.priority and not options.callers
            else RequestOptions(0, options.timeout_us, options.request_id, options.parameters)
        )
        self._needed = plan.needed(wanted)
        self._waiting = {i: plan.waits[i] for i in self._needed}
        self._running: dict[int, Handle] = {}

    def start(self) -> None:
        self.launched_ns = time.perf_counter_ns()
        if not self._needed:
            self._answer({})  # NOTE: no output asked for: nothing to run
            return
        for index in self._needed:
            if self._waiting[index] == 0:
                self._launch(index)
                if self.future.done():
                    return

    def cancel(self) -> None:
        """The caller went away: withdraw every step still in flight."""
        self._stop()
        if not self.future.done():
            self.future.cancel()
        self._ended()

    # ---- steps -----------------------------------------------------------------------

    def _launch(self, index: int) -> None:
        plan, tensors = self._plan, self._tensors
        member: ModelVersion | None = None
        try:
            member = self._steps.route(plan.steps[index].model_name, plan.versions[index])
            inputs = _member_inputs(
                member.config, {key: tensors[t] for key, t in plan.input_items[index]}
            )
            options = self._options
            if self._priority:
                options = replace(options, priority=_member_priority(member.config, self._priority))
            item = self._steps.enqueue(member, inputs, plan.outputs[index], options)
        except RepomanError as exc:
            self._fail(index, member, exc)
            return
        self._running[index] = item
        routed = member

        def answered() -> None:
            self._finished(index, routed, item)

        # NOTE: told at once of every ending but a withdrawal (which only _stop makes)
        item.on_answer = answered

    def _finished(self, index: int, member: ModelVersion, item: Handle) -> None:
        if self._running.get(index) is not item:
            return  # NOTE: already handled, or withdrawn
        del self._running[index]
        if self.future.done():
            return  # NOTE: failed or cancelled meanwhile; this step's result is not needed
        done = item.future
        if done.cancelled():
            self._fail(index, member, RepomanError("the step was cancelled"))
            return
        error = done.exception()
        if error is not None:
            self._fail(index, member, error)
            return
        outputs = done.result()
        if item.compute is not None:
            self._add_compute(item.compute)
        config = member.config
        plan, tensors = self._plan, self._tensors
        for key, tensor in plan.output_items[index]:
            value = outputs.get(key)
            if value is None:
                self._fail(
                    index, member, BackendError(f"model '{member.model}' returned no '{key}'")
                )
                return
            if key in config.reshaped_outputs:
                value = _reshape_out(config, key, value)
            tensors[tensor] = value
            for consumer in plan.consumers.get(tensor, ()):
                waiting = self._waiting.get(consumer)
                if waiting is None:
                    continue  # NOTE: a step this request does not need
                self._waiting[consumer] = waiting - 1
                if waiting == 1:
                    self._launch(consumer)
                    if self.future.done():
                        return
        if not self._running and all(name in tensors for name in self._wanted):
            self._answer({name: tensors[name] for name in self._wanted})

    def _answer(self, outputs: Mapping[str, np.ndarray]) -> None:
        self.future.set_result(outputs)
        self._ended()
        self._told()

    def _ended(self) -> None:
        hook, self.on_end = self.on_end, None
        if hook is not None:
            hook(self)

    def _told(self) -> None:
        """Tell ``on_answer`` (once), letting go of it first: it holds this call."""
        listener, self.on_answer = self.on_answer, None
        if listener is not None:
            listener()

    def _add_compute(self, step: tuple[int, int, int]) -> None:
        total = self.compute
        self.compute = (
            step if total is None else (total[0] + step[0], total[1] + step[1], total[2] + step[2])
        )

    def _fail(self, index: int, member: ModelVersion | None, error: BaseException) -> None:
        step = self._plan.steps[index]
        version = member.version if member is not None else None
        self._stop()
        if not self.future.done():
            self.future.set_exception(
                StepFailed(self._version.model, index, step.model_name, version, error)
            )
            self._ended()
            self._told()

    def _stop(self) -> None:
        running, self._running = self._running, {}
        for item in running.values():
            item.on_answer = None  # NOTE: withdrawn: never told, and it holds this call
            self._steps.withdraw(item)
            if not item.future.done():
                item.future.cancel()


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
