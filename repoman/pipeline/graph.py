"""An ensemble as a data-flow graph: who produces and who reads each tensor, which steps a
request needs, and whether the members serving now fit the wiring. Pure: no I/O, no loop.

The ensemble's own config was checked when it was parsed (``repoman.config.ensemble``: every
tensor produced once and read, no cycle); what needs the members' configs is checked here,
against the member versions that would serve a request now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from repoman.config.model import EnsembleStep, ModelConfig, TensorConfig
from repoman.signature import compatible_dims


@dataclass(frozen=True)
class Plan:
    """The wiring of one ensemble config, computed once per config.

    ``reads[i]``: the distinct tensors step ``i`` waits for; ``consumers[t]``: the steps
    reading tensor ``t``; ``producer[t]``: the step writing it (ensemble inputs have none).
    """

    name: str
    batching: bool
    steps: tuple[EnsembleStep, ...]
    inputs: frozenset[str]
    reads: tuple[frozenset[str], ...]
    producer: dict[str, int]
    consumers: dict[str, tuple[int, ...]]
    waits: tuple[int, ...] = ()
    """Per step: how many of the tensors it reads other steps produce."""
    versions: tuple[int | None, ...] = ()
    """Per step: the member version it names (None: the newest ready one)."""
    input_items: tuple[tuple[tuple[str, str], ...], ...] = ()
    """Per step: (member input, ensemble tensor) pairs."""
    output_items: tuple[tuple[tuple[str, str], ...], ...] = ()
    """Per step: (member output, ensemble tensor) pairs."""
    outputs: tuple[tuple[str, ...], ...] = ()
    """Per step: the member outputs it asks for."""
    _needed: dict[tuple[str, ...], tuple[int, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def needed(self, wanted: tuple[str, ...]) -> tuple[int, ...]:
        """The steps a request asking for ``wanted`` outputs must run (those the outputs
        depend on); the others are skipped. Cached per distinct ``wanted``."""
        found = self._needed.get(wanted)
        if found is None:
            steps: set[int] = set()
            todo = [self.producer[t] for t in wanted if t in self.producer]
            while todo:
                index = todo.pop()
                if index not in steps:
                    steps.add(index)
                    todo += [self.producer[t] for t in self.reads[index] if t in self.producer]
            found = tuple(sorted(steps))
            if len(self._needed) < 64:  # NOTE: bounded: a client choosing outputs at random
                self._needed[wanted] = found
        return found


def plan(config: ModelConfig) -> Plan:
    """The plan of an ensemble config (made once per ensemble version that opens)."""
    steps = config.ensemble_steps
    producer = {t: i for i, s in enumerate(steps) for t in s.output_map.values()}
    consumers: dict[str, list[int]] = {}
    for index, step in enumerate(steps):
        for tensor in dict.fromkeys(step.input_map.values()):
            consumers.setdefault(tensor, []).append(index)
    inputs = frozenset(t.name for t in config.inputs)
    reads = tuple(frozenset(s.input_map.values()) for s in steps)
    # NOTE: what each request needs per step is computed once here, not per request.
    return Plan(
        name=config.name,
        batching=config.max_batch_size > 0,
        steps=steps,
        inputs=inputs,
        reads=reads,
        producer=producer,
        consumers={t: tuple(c) for t, c in consumers.items()},
        waits=tuple(len(r - inputs) for r in reads),
        versions=tuple(None if s.model_version < 0 else s.model_version for s in steps),
        input_items=tuple(tuple(s.input_map.items()) for s in steps),
        output_items=tuple(tuple(s.output_map.items()) for s in steps),
        outputs=tuple(tuple(s.output_map) for s in steps),
    )


def step_label(index: int, step: EnsembleStep) -> str:
    return f"step {index} ('{step.model_name}')"


def check_members(config: ModelConfig, members: Sequence[ModelConfig]) -> list[str]:
    """Each way the members' configs (``members[i]`` serves step ``i``) disagree with the
    ensemble's wiring: batch sizes, tensor names, data types and shapes. Empty: they fit."""
    problems: list[str] = []
    batch = config.max_batch_size
    # what writes each ensemble tensor: (config it belongs to, tensor, how to name it)
    written: dict[str, tuple[ModelConfig, TensorConfig, str]] = {
        t.name: (config, t, f"ensemble input '{t.name}'") for t in config.inputs
    }
    for index, (step, member) in enumerate(zip(config.ensemble_steps, members, strict=True)):
        label = step_label(index, step)
        if batch > 0 and member.max_batch_size == 0:
            problems.append(
                f"{label}: the ensemble takes batches of up to {batch} (max_batch_size {batch}) "
                f"but model '{member.name}' does not batch (max_batch_size 0)"
            )
        elif batch > member.max_batch_size > 0:
            problems.append(
                f"{label}: the ensemble takes batches of up to {batch} but model "
                f"'{member.name}' accepts at most {member.max_batch_size} (max_batch_size); "
                f"expected a member max_batch_size >= {batch}"
            )
        for key in step.input_map:
            if member.input(key) is None:
                known = ", ".join(t.name for t in member.inputs)
                problems.append(
                    f"{label}: input_map names input '{key}', which model '{member.name}' "
                    f"does not have (its inputs: {known})"
                )
        for tensor in member.inputs:
            if tensor.name not in step.input_map and not tensor.optional:
                problems.append(
                    f"{label}: input '{tensor.name}' of model '{member.name}' is not mapped: "
                    "expected input_map to provide every input that is not optional"
                )
        for key, target in step.output_map.items():
            produced = member.output(key)
            if produced is None:
                known = ", ".join(t.name for t in member.outputs)
                problems.append(
                    f"{label}: output_map names output '{key}', which model '{member.name}' "
                    f"does not have (its outputs: {known})"
                )
            else:
                written[target] = (member, produced, f"output '{key}' of {label}")
    readers: list[tuple[ModelConfig, TensorConfig | None, str, str]] = [
        (member, member.input(key), name, f"input '{key}' of {step_label(i, step)}")
        for i, (step, member) in enumerate(zip(config.ensemble_steps, members, strict=True))
        for key, name in step.input_map.items()
    ]
    readers += [(config, t, t.name, f"ensemble output '{t.name}'") for t in config.outputs]
    for reader_config, reader, tensor_name, reader_label in readers:
        if reader is None or tensor_name not in written:
            continue  # NOTE: reported above (an unknown name), or by the config's own checks
        writer_config, writer, writer_label = written[tensor_name]
        if writer.data_type is not reader.data_type:
            problems.append(
                f"ensemble tensor '{tensor_name}': {writer_label} is {writer.data_type.value} but "
                f"{reader_label} expects {reader.data_type.value}"
            )
            continue
        have, want = full_shape(writer_config, writer), full_shape(reader_config, reader)
        if not compatible_dims(have, want):
            problems.append(
                f"ensemble tensor '{tensor_name}': {writer_label} has shape {list(have)} but "
                f"{reader_label} expects {list(want)}"
            )
    return problems


def full_shape(config: ModelConfig, tensor: TensorConfig) -> tuple[int, ...]:
    """A tensor's shape with the batch dimension (-1) when its model batches."""
    return ((-1,) if config.max_batch_size > 0 else ()) + tensor.dims


def members(config: ModelConfig) -> tuple[str, ...]:
    """The models an ensemble's steps use, each once, in step order (none for a plain model)."""
    return tuple(dict.fromkeys(step.model_name for step in config.ensemble_steps))
