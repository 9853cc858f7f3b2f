"""The normalised, validated model configuration every layer above `config` works with."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from repoman.types import DataType


@dataclass(frozen=True)
class TensorConfig:
    """One model input or output as the configuration declares it.

    ``dims`` never include the batch dimension; ``-1`` marks a variable-size dimension.
    """

    name: str
    data_type: DataType
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None
    optional: bool = False

    @property
    def element_count(self) -> int | None:
        """Elements per batch row, or None when a dimension is variable."""
        if any(d < 0 for d in self.dims):
            return None
        return math.prod(self.dims)


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model to serve: ``latest`` N, ``all``, or ``specific`` versions."""

    kind: str = "latest"  # "latest" | "all" | "specific"
    num_versions: int = 1
    versions: tuple[int, ...] = ()


@dataclass(frozen=True)
class InstanceGroup:
    name: str
    kind: str = "KIND_CPU"  # KIND_CPU | KIND_GPU | KIND_AUTO | KIND_MODEL
    count: int = 1
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class QueuePolicy:
    timeout_action: str = "REJECT"  # "REJECT" | "DELAY"
    default_timeout_microseconds: int = 0
    allow_timeout_override: bool = False
    max_queue_size: int = 0  # 0 = unbounded


@dataclass(frozen=True)
class DynamicBatching:
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 0
    preserve_ordering: bool = False
    priority_levels: int = 0
    default_priority_level: int = 0
    default_queue_policy: QueuePolicy = field(default_factory=QueuePolicy)
    priority_queue_policy: dict[int, QueuePolicy] = field(default_factory=dict)
    allowed_batch_sizes: tuple[int, ...] = ()  # repoman extension (TF Serving's knob)


@dataclass(frozen=True)
class ModelManagement:
    """repoman's ``model_management`` block: when the version loads and when it may go.

    ``load`` is ``"EAGER"``, ``"LAZY"`` or ``""`` (the server's default, ``--lazy-load``);
    ``pinned`` versions are never unloaded to make room nor for being idle;
    ``idle_unload_seconds`` (0: never) unloads a version unused for that long.
    """

    load: str = ""
    pinned: bool = False
    idle_unload_seconds: int = 0


@dataclass(frozen=True)
class EnsembleStep:
    """One step of an ensemble: a member model and how its tensors map to the ensemble's.

    ``input_map`` maps each member input to the ensemble tensor it reads; ``output_map`` each
    member output to the ensemble tensor it writes. ``model_version`` -1 means the member's
    newest READY version, chosen again for every request.
    """

    model_name: str
    model_version: int = -1
    input_map: dict[str, str] = field(default_factory=dict)
    output_map: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    """A model's configuration after parsing, schema validation, semantic checks and defaults.

    ``as_dict()`` gives the normalised form with Triton's field names: it is what
    ``GET /v2/models/{m}/config`` returns. ``warnings`` lists known Triton fields that
    were accepted but are not implemented (they only tune performance).
    """

    name: str
    platform: str
    backend: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    instance_groups: tuple[InstanceGroup, ...] = ()
    dynamic_batching: DynamicBatching | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    default_model_filename: str = ""
    model_warmup: tuple[dict[str, Any], ...] = ()
    ensemble_steps: tuple[EnsembleStep, ...] = ()
    """The steps of an ensemble (``platform: "ensemble"``); empty for any other model."""
    management: ModelManagement = field(default_factory=ModelManagement)
    source: Path | None = None
    warnings: tuple[str, ...] = ()
    normalised: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    auto_completed: tuple[str, ...] = field(default=(), compare=False)
    """What auto-complete filled in from the model file, as paths into ``as_dict()``
    (``max_batch_size``, ``input.x`` for a whole tensor, ``input.x.dims`` for one field)."""

    def as_dict(self) -> dict[str, Any]:
        return self.normalised

    @property
    def is_ensemble(self) -> bool:
        """A pipeline of other models, run by the server itself (no backend of its own)."""
        return self.platform == "ensemble"

    @property
    def instance_count(self) -> int:
        """Total concurrent executions this model allows (sum over instance groups, at least 1)."""
        return max(1, sum(group.count for group in self.instance_groups))

    def input(self, name: str) -> TensorConfig | None:
        return self.inputs_by_name.get(name)

    def output(self, name: str) -> TensorConfig | None:
        return self.outputs_by_name.get(name)

    # NOTE: cached on first use (a frozen dataclass has no setter to stop cached_property):
    # every request looks tensors up by name, and configs never change once built.
    @cached_property
    def inputs_by_name(self) -> dict[str, TensorConfig]:
        return {tensor.name: tensor for tensor in self.inputs}

    @cached_property
    def outputs_by_name(self) -> dict[str, TensorConfig]:
        return {tensor.name: tensor for tensor in self.outputs}

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(tensor.name for tensor in self.outputs)

    @cached_property
    def reshaped_outputs(self) -> frozenset[str]:
        """Outputs the model produces in another shape than the config declares."""
        return frozenset(
            t.name
            for t in self.outputs
            if t.reshape is not None and sum(d < 0 for d in t.dims) <= 1
        )
