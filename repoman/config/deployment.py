"""Semantic checks of how a model is deployed: instance groups, version policy, warmup."""

from __future__ import annotations

import math
from typing import Any

from repoman.config.checker import Checker
from repoman.types import DataType

_POLICIES = ("latest", "all", "specific")
_WARMUP_SOURCES = ("zero_data", "random_data", "input_data_file")

MAX_INSTANCES = 64
"""Instances of one model in all its instance groups: each is a loaded copy of the model."""
MAX_WARMUP_BYTES = 64 << 20
"""Bytes of one warm-up sample, all its inputs and batch rows together (BYTES: 8 each)."""


def check_instance_groups(checker: Checker, gpu_count: int) -> None:
    if gpu_count:
        visible = f"an id of a visible GPU, 0 to {gpu_count - 1}"
    else:
        visible = "no gpu ids, as no GPU is visible"
    total = sum(group["count"] for group in checker.doc["instance_group"])
    if total > MAX_INSTANCES:
        checker.fail(
            ("instance_group",),
            f"expected at most {MAX_INSTANCES} instances in all instance groups, found {total}",
            at="key",
        )
    for index, group in enumerate(checker.doc["instance_group"]):
        path = ("instance_group", index)
        label = f"instance group '{group['name']}'"
        if group["count"] < 1:
            checker.fail(
                (*path, "count"), f"expected count >= 1 for {label}, found {group['count']}"
            )
        gpus = group.get("gpus", [])
        if group["kind"] == "KIND_CPU" and gpus:
            checker.fail(
                (*path, "gpus"),
                f"expected no gpus for {label} of kind KIND_CPU, found gpus {gpus}",
                "use kind KIND_GPU to run on those GPUs, or drop `gpus`",
                at="key",
            )
            continue
        for gpu_index, gpu in enumerate(gpus):
            if not 0 <= gpu < gpu_count:
                checker.fail(
                    (*path, "gpus", gpu_index),
                    f"{label} lists gpu id {gpu}; expected {visible}, found {gpu}",
                )


def check_version_policy(checker: Checker) -> None:
    policy = checker.doc["version_policy"]
    chosen = [name for name in _POLICIES if name in policy]
    if len(chosen) != 1:
        found = " and ".join(chosen) or "none"
        checker.fail(
            ("version_policy",),
            f"expected exactly one of latest, all, specific, found {found}",
            at="key",
        )
    latest = policy.get("latest")
    if latest is not None and latest["num_versions"] < 1:
        checker.fail(
            ("version_policy", "latest", "num_versions"),
            f"expected num_versions >= 1, found {latest['num_versions']}",
        )
    specific = policy.get("specific")
    if specific is None:
        return
    versions = specific.get("versions", [])
    if not versions:
        checker.fail(
            ("version_policy", "specific"),
            "expected at least one version in specific.versions, found none",
            at="key",
        )
    for index, version in enumerate(versions):
        if version < 1:
            checker.fail(
                ("version_policy", "specific", "versions", index),
                f"expected a version number >= 1, found {version}",
            )


def check_warmup(checker: Checker) -> None:
    max_batch = checker.doc["max_batch_size"]
    input_names = [tensor["name"] for tensor in checker.doc.get("input", [])]
    for index, warmup in enumerate(checker.doc.get("model_warmup", [])):
        path = ("model_warmup", index)
        if not warmup.get("name"):
            checker.fail(path, "expected a non-empty `name` for the warmup, found none", at="key")
        batch = warmup.get("batch_size", 0)
        limit = max(max_batch, 1)
        if not 1 <= batch <= limit:
            checker.fail(
                (*path, "batch_size"),
                f"expected a warmup batch_size from 1 to {limit} "
                f"(max_batch_size {max_batch}), found {batch}",
            )
        if warmup.get("count", 0) < 0:
            checker.fail((*path, "count"), f"expected count >= 0, found {warmup['count']}")
        inputs = warmup.get("inputs", {})
        if not inputs:
            checker.fail(path, "expected at least one entry in the warmup's inputs, found none")
        for name, spec in inputs.items():
            _check_warmup_input(checker, (*path, "inputs", name), name, spec, input_names)
        size = sum(warmup_bytes(spec, batch if max_batch > 0 else 1) for spec in inputs.values())
        if size > MAX_WARMUP_BYTES:
            checker.fail(
                path,
                f"expected a warm-up sample of at most {MAX_WARMUP_BYTES} bytes "
                f"({MAX_WARMUP_BYTES >> 20} MiB) in all, found {size} bytes",
                "warm up with a smaller sample: its speed-up does not need big tensors",
                at="key",
            )


def warmup_bytes(spec: dict[str, Any], rows: int) -> int:
    """Bytes of one warm-up input of ``rows`` batch rows (0 when its spec is incomplete)."""
    try:
        data_type = DataType.from_config_name(spec["data_type"])
    except (KeyError, ValueError):
        return 0
    dims = spec.get("dims", [])
    return max(rows, 1) * math.prod(max(dim, 0) for dim in dims) * data_type.numpy_dtype.itemsize


def _check_warmup_input(
    checker: Checker, path: tuple[Any, ...], name: str, spec: dict[str, Any], names: list[str]
) -> None:
    if name not in names:
        known = ", ".join(f"'{n}'" for n in names) or "none"
        checker.fail(
            path, f"expected the name of a model input ({known}), found '{name}'", at="key"
        )
    for field in ("data_type", "dims"):
        if field not in spec:
            checker.fail(
                path, f"expected a `{field}` for warmup input '{name}', found none", at="key"
            )
    for index, dim in enumerate(spec.get("dims", [])):
        if dim < 1:
            checker.fail(
                (*path, "dims", index),
                f"expected warmup dimensions >= 1 (warmup data has a fixed shape), found {dim}",
            )
    sources = [source for source in _WARMUP_SOURCES if source in spec]
    if len(sources) != 1:
        checker.fail(
            path,
            "expected exactly one of zero_data, random_data, input_data_file, "
            f"found {' and '.join(sources) or 'none'}",
            at="key",
        )
