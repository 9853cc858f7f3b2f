"""The semantic checks Triton makes on a model config, as positioned ConfigIssues."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from repoman.config.batching import check_dynamic_batching
from repoman.config.checker import Checker
from repoman.config.deployment import check_instance_groups, check_version_policy, check_warmup
from repoman.config.ensemble import check_ensemble
from repoman.config.files import check_file_names
from repoman.config.tree import Positions
from repoman.errors import ConfigIssue

_GPU_DIR = Path("/proc/driver/nvidia/gpus")


def visible_gpu_count() -> int:
    """GPUs the NVIDIA driver exposes (one folder each under /proc/driver/nvidia/gpus), else 0."""
    try:
        return sum(1 for _ in _GPU_DIR.iterdir())
    except OSError:
        return 0


def check(
    doc: dict[str, Any], positions: Positions, file: str, *, gpu_count: int
) -> list[ConfigIssue]:
    """Every semantic issue in a schema-valid ``doc`` whose defaults are filled."""
    checker = Checker(doc, positions, file)
    batch = doc["max_batch_size"]
    if batch < 0:
        checker.fail(
            ("max_batch_size",),
            f"expected max_batch_size >= 0 (0 turns batching off), found {batch}",
        )
    for kind in ("input", "output"):
        _check_tensors(checker, kind)
    check_dynamic_batching(checker)
    check_instance_groups(checker, gpu_count)
    check_version_policy(checker)
    check_warmup(checker)
    check_file_names(checker)
    check_ensemble(checker)
    _check_model_management(checker)
    return checker.issues


def _check_model_management(checker: Checker) -> None:
    """repoman's own ``model_management`` block: the one bound the schema cannot say."""
    idle = checker.doc.get("model_management", {}).get("idle_unload_seconds", 0)
    if idle < 0:
        checker.fail(
            ("model_management", "idle_unload_seconds"),
            f"expected idle_unload_seconds >= 0 (0: never unloaded for being idle), found {idle}",
        )


def _check_tensors(checker: Checker, kind: str) -> None:
    tensors = checker.doc.get(kind, [])
    if not tensors:
        checker.fail((kind,), f"expected at least one {kind}, found none", at="key")
    first_index: dict[str, int] = {}
    for index, tensor in enumerate(tensors):
        path = (kind, index)
        name = tensor["name"]
        label = f"{kind} '{name}'"
        if not name:
            checker.fail((*path, "name"), f"expected a non-empty {kind} name, found ''")
        elif name in first_index:
            checker.fail(
                (*path, "name"),
                f"expected unique {kind} names, found '{name}' again "
                f"(first as {kind}[{first_index[name]}])",
            )
        first_index.setdefault(name, index)
        dims = tensor["dims"]
        if not dims:
            checker.fail(
                (*path, "dims"), f"expected at least one dimension for {label}, found dims []"
            )
        dims_ok = _check_dims(checker, (*path, "dims"), dims, f"dimension {{}} of {label}")
        if "reshape" in tensor:
            _check_reshape(checker, path, label, dims if dims_ok else None)


def _check_dims(checker: Checker, path: tuple[Any, ...], dims: list[int], what: str) -> bool:
    ok = True
    for index, dim in enumerate(dims):
        if dim < 1 and dim != -1:
            ok = False
            checker.fail(
                (*path, index),
                f"expected {what.format(index)} to be >= 1, or -1 for a variable size; found {dim}",
            )
    return ok


def _check_reshape(
    checker: Checker, path: tuple[Any, ...], label: str, dims: list[int] | None
) -> None:
    reshape_path = (*path, "reshape")
    shape = checker.doc_at(reshape_path).get("shape", [])
    shape_ok = _check_dims(
        checker, (*reshape_path, "shape"), shape, f"reshape dimension {{}} of {label}"
    )
    if not shape and checker.doc["max_batch_size"] == 0:
        checker.fail(
            reshape_path,
            f"expected a non-empty reshape for {label}, found reshape [] (a scalar), "
            "which a model without batching (max_batch_size 0) cannot have",
            at="key",
        )
        return
    if dims is None or not shape_ok:
        return
    # Triton's rule: equal element counts; with variable-size dims (-1), equal counts between them.
    counts = (_element_count(dims), _element_count(shape))
    if counts[0] != counts[1]:
        found = " and ".join("a variable count" if c is None else str(c) for c in counts)
        checker.fail(
            reshape_path,
            f"expected dims {dims} and reshape {shape} of {label} to have the same "
            f"element count, found {found}",
            at="key",
        )
        return
    if counts[0] is not None:
        return
    trunks = (_trunks(dims), _trunks(shape))
    if len(trunks[0]) != len(trunks[1]):
        checker.fail(
            reshape_path,
            f"expected dims {dims} and reshape {shape} of {label} to have the same number "
            f"of variable-size dimensions (-1), found {dims.count(-1)} and {shape.count(-1)}",
            at="key",
        )
    elif trunks[0] != trunks[1]:
        checker.fail(
            reshape_path,
            f"expected dims {dims} and reshape {shape} of {label} to have the same element "
            f"count between variable-size dimensions, found {trunks[0]} and {trunks[1]}",
            at="key",
        )


def _element_count(dims: list[int]) -> int | None:
    return None if -1 in dims else math.prod(dims)


def _trunks(dims: list[int]) -> list[int]:
    """Element counts of the runs of fixed dimensions between variable-size ones."""
    counts = [1]
    for dim in dims:
        if dim == -1:
            counts.append(1)
        else:
            counts[-1] *= dim
    return counts
