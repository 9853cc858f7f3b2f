"""What a model file declares about its tensors, and the one set of rules matching a config to it.

Every place that compares dimensions (auto-complete, the check before a version loads,
request checks, ``repoman validate``, ``repoman perf``) uses :func:`compatible_dims`; every
place that compares a config with a model file uses :func:`compare` or :func:`merge`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from repoman.config.model import ModelConfig, TensorConfig
from repoman.errors import ConfigError, ConfigIssue

DEFAULT_MAX_BATCH_SIZE = 4
"""What a model that can batch gets when its config says nothing (Triton's default too)."""


@dataclass(frozen=True)
class ModelSignature:
    """What a model file itself says about its tensors (a backend's ``describe`` returns it).

    ``inputs``/``outputs`` carry the model's full shapes: when ``batching`` is True their
    first dimension is the (variable) batch dimension, else there is none. Unknown or
    symbolic dimensions are -1.
    """

    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    batching: bool
    max_batch_size: int | None = None
    """The largest batch the model itself suggests, when it says (else repoman's default)."""


Mismatch = tuple[str, str]
"""(field, message): one way a config disagrees with its model file."""


def compatible_dims(have: Sequence[int], want: Sequence[int]) -> bool:
    """Same rank, and every dimension equal where both sides know it (-1 matches any size)."""
    if have == want:
        return True  # NOTE: the common case (fixed dims), one comparison in C
    return len(have) == len(want) and all(
        h == w or h < 0 or w < 0 for h, w in zip(have, want, strict=True)
    )


def config_dims(tensor: TensorConfig, batching: bool) -> tuple[int, ...]:
    """A model-side tensor's dims as a config writes them: without the batch dimension."""
    return tensor.dims[1:] if batching and tensor.dims else tensor.dims


def compare(config: ModelConfig, signature: ModelSignature) -> list[Mismatch]:
    """Each way ``config`` disagrees with what its model file declares (empty: they agree)."""
    problems: list[Mismatch] = []
    batching = config.max_batch_size > 0
    if batching and not signature.batching:
        problems.append(
            (
                "max_batch_size",
                f"expected 0 (the model has no variable batch dimension), "
                f"found {config.max_batch_size}",
            )
        )
    for key, declared, actual in (
        ("input", config.inputs, signature.inputs),
        ("output", config.outputs, signature.outputs),
    ):
        by_name = {t.name: t for t in actual}
        for index, tensor in enumerate(declared):
            model_side = by_name.get(tensor.name)
            if model_side is None:
                names = ", ".join(sorted(by_name))
                problems.append(
                    (
                        f"{key}[{index}].name",
                        f"expected one of the model's {key}s ({names}), found '{tensor.name}'",
                    )
                )
                continue
            if model_side.data_type is not tensor.data_type:
                problems.append(
                    (
                        f"{key}[{index}].data_type",
                        f"the model says {model_side.data_type.config_name}, "
                        f"the config says {tensor.data_type.config_name}",
                    )
                )
            dims = config_dims(model_side, batching and signature.batching)
            want = tensor.reshape if tensor.reshape is not None else tensor.dims
            if not compatible_dims(dims, want):
                problems.append(
                    (
                        f"{key}[{index}].dims",
                        f"the model says {list(dims)}, the config says {list(want)}",
                    )
                )
    undeclared = sorted(
        t.name for t in signature.inputs if not t.optional and config.input(t.name) is None
    )
    if undeclared and config.inputs:
        problems.append(
            (
                "input",
                f"the model needs input(s) {', '.join(undeclared)}, which it does not declare",
            )
        )
    return problems


def needs_completion(doc: dict[str, Any]) -> bool:
    """Whether a config document leaves out something a model file could fill in."""
    if "max_batch_size" not in doc or not doc.get("input") or not doc.get("output"):
        return True
    tensors = list(doc.get("input", [])) + list(doc.get("output", []))
    return any("data_type" not in t or "dims" not in t for t in tensors if isinstance(t, dict))


def tensors_complete(doc: dict[str, Any]) -> bool:
    """Inputs and outputs are all there, each with a data_type and dims."""
    tensors = list(doc.get("input") or []) + list(doc.get("output") or [])
    return (
        bool(doc.get("input"))
        and bool(doc.get("output"))
        and all(isinstance(t, dict) and "data_type" in t and "dims" in t for t in tensors)
    )


def merge(doc: dict[str, Any], signature: ModelSignature, where: str) -> dict[str, Any]:
    """``doc`` with what it leaves out filled from ``signature`` (auto-complete).

    Only what is missing is filled: ``input``/``output`` lists, a tensor's ``data_type`` or
    ``dims``, and ``max_batch_size`` (plus ``dynamic_batching {}`` when it enables batching).
    Where the config is explicit and the model disagrees, that is a ConfigError showing both
    values: the config is never silently overridden.
    """
    completed = copy.deepcopy(doc)
    if "max_batch_size" not in completed:
        suggested = signature.max_batch_size or DEFAULT_MAX_BATCH_SIZE
        completed["max_batch_size"] = suggested if signature.batching else 0
        if signature.batching:
            completed.setdefault("dynamic_batching", {})
    elif completed["max_batch_size"] > 0 and not signature.batching:
        raise completion_error(
            where,
            "max_batch_size",
            "0 (the model has no variable batch dimension)",
            str(completed["max_batch_size"]),
        )
    batching = completed["max_batch_size"] > 0
    for key, tensors in (("input", signature.inputs), ("output", signature.outputs)):
        completed[key] = _merge_tensors(completed.get(key), tensors, key, batching, where)
    return completed


def _merge_tensors(
    given: list[dict[str, Any]] | None,
    tensors: tuple[TensorConfig, ...],
    key: str,
    batching: bool,
    where: str,
) -> list[dict[str, Any]]:
    if not given:
        return [
            {
                "name": t.name,
                "data_type": t.data_type.config_name,
                "dims": list(config_dims(t, batching)),
            }
            for t in tensors
        ]
    model = {t.name: t for t in tensors}
    merged = []
    for index, entry in enumerate(given):
        entry = dict(entry)
        field = f"{key}[{index}]"
        found = model.get(entry.get("name", ""))
        if found is None:
            raise completion_error(
                where,
                f"{field}.name",
                f"one of the model's {key}s ({', '.join(sorted(model))})",
                repr(entry.get("name")),
            )
        model_type = found.data_type.config_name
        if entry.setdefault("data_type", model_type) != model_type:
            raise completion_error(
                where,
                f"{field}.data_type",
                f"{model_type} (what the model says)",
                f"{entry['data_type']} in the config",
            )
        model_dims = list(config_dims(found, batching))
        dims = entry.setdefault("dims", model_dims)
        if not compatible_dims(model_dims, dims):
            raise completion_error(
                where,
                f"{field}.dims",
                f"{model_dims} (what the model says)",
                f"{dims} in the config",
            )
        merged.append(entry)
    return merged


def completion_error(where: str, field: str, expected: str, found: str) -> ConfigError:
    """The ConfigError auto-complete raises: what it expected and what it found."""
    return ConfigError(
        [ConfigIssue(where, None, None, field, f"auto-complete expected {expected}, found {found}")]
    )
