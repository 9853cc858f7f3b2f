"""Build the ModelConfig dataclasses from a validated, normalised config dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repoman.config.model import (
    DynamicBatching,
    EnsembleStep,
    InstanceGroup,
    ModelConfig,
    ModelManagement,
    QueuePolicy,
    TensorConfig,
    VersionPolicy,
)
from repoman.types import DataType


def build(
    doc: dict[str, Any],
    *,
    source: Path | None,
    warnings: tuple[str, ...],
    auto_completed: tuple[str, ...] = (),
) -> ModelConfig:
    """``doc`` must have passed the schema and semantic checks; this step cannot fail."""
    return ModelConfig(
        name=doc["name"],
        platform=doc.get("platform", ""),
        backend=doc.get("backend", ""),
        max_batch_size=doc["max_batch_size"],
        inputs=tuple(_tensor(tensor) for tensor in doc.get("input", [])),
        outputs=tuple(_tensor(tensor) for tensor in doc.get("output", [])),
        version_policy=_version_policy(doc["version_policy"]),
        instance_groups=tuple(
            InstanceGroup(
                name=group["name"],
                kind=group["kind"],
                count=group["count"],
                gpus=tuple(group.get("gpus", ())),
            )
            for group in doc["instance_group"]
        ),
        dynamic_batching=_dynamic_batching(doc.get("dynamic_batching")),
        parameters={
            key: value.get("string_value", "") for key, value in doc.get("parameters", {}).items()
        },
        default_model_filename=doc.get("default_model_filename", ""),
        model_warmup=tuple(doc.get("model_warmup", ())),
        ensemble_steps=tuple(
            EnsembleStep(
                model_name=step["model_name"],
                model_version=step.get("model_version", -1),
                input_map=dict(step["input_map"]),
                output_map=dict(step["output_map"]),
            )
            for step in doc.get("ensemble_scheduling", {}).get("step", ())
        ),
        management=ModelManagement(**doc.get("model_management", {})),
        source=source,
        warnings=warnings,
        normalised=doc,
        auto_completed=auto_completed,
    )


def _tensor(tensor: dict[str, Any]) -> TensorConfig:
    reshape = tensor.get("reshape")
    return TensorConfig(
        name=tensor["name"],
        data_type=DataType.from_config_name(tensor["data_type"]),
        dims=tuple(tensor["dims"]),
        reshape=None if reshape is None else tuple(reshape.get("shape", ())),
        optional=tensor.get("optional", False),
    )


def _version_policy(policy: dict[str, Any]) -> VersionPolicy:
    if "all" in policy:
        return VersionPolicy(kind="all")
    if "specific" in policy:
        return VersionPolicy(kind="specific", versions=tuple(policy["specific"]["versions"]))
    return VersionPolicy(kind="latest", num_versions=policy["latest"]["num_versions"])


def _queue_policy(policy: dict[str, Any] | None) -> QueuePolicy:
    policy = policy or {}
    return QueuePolicy(
        timeout_action=policy.get("timeout_action", "REJECT"),
        default_timeout_microseconds=policy.get("default_timeout_microseconds", 0),
        allow_timeout_override=policy.get("allow_timeout_override", False),
        max_queue_size=policy.get("max_queue_size", 0),
    )


def _dynamic_batching(batching: dict[str, Any] | None) -> DynamicBatching | None:
    if batching is None:
        return None
    return DynamicBatching(
        preferred_batch_size=tuple(batching.get("preferred_batch_size", ())),
        max_queue_delay_microseconds=batching.get("max_queue_delay_microseconds", 0),
        preserve_ordering=batching.get("preserve_ordering", False),
        priority_levels=batching.get("priority_levels", 0),
        default_priority_level=batching.get("default_priority_level", 0),
        default_queue_policy=_queue_policy(batching.get("default_queue_policy")),
        priority_queue_policy={
            int(level): _queue_policy(policy)
            for level, policy in batching.get("priority_queue_policy", {}).items()
        },
        allowed_batch_sizes=tuple(batching.get("allowed_batch_sizes", ())),
    )
