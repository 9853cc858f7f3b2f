"""Triton fields repoman does not implement: warn for performance-only ones, refuse the rest."""

from __future__ import annotations

from typing import Any

from repoman.config.schema import format_path
from repoman.config.tree import KeyPath, Positions, find_paths, issue_at
from repoman.errors import ConfigIssue

# Fields that only tune speed or bookkeeping: a model behaves the same without them.
_IGNORED: tuple[KeyPath, ...] = (
    ("runtime",),
    ("optimization",),
    ("response_cache",),
    ("model_metrics",),
    ("metric_tags",),
    ("cc_model_filenames",),
    ("model_operations",),
    ("model_repository_agents",),
    ("input", "*", "format"),
    ("output", "*", "label_filename"),
    ("instance_group", "*", "rate_limiter"),
    ("instance_group", "*", "secondary_devices"),
    ("instance_group", "*", "profile"),
    ("instance_group", "*", "passive"),
    ("instance_group", "*", "host_policy"),
)

# Fields that change results or how requests are grouped: serving without them would be wrong.
_REFUSED: dict[KeyPath, str] = {
    ("sequence_batching",): "it schedules each request on its own, with no sequence state",
    ("batch_input",): "it does not synthesise batch tensors from a batch's requests",
    ("batch_output",): "it does not scatter batch outputs by source input shapes",
}

# Boolean fields refused only when true (false is what repoman does anyway).
_REFUSED_IF_TRUE: dict[KeyPath, str] = {
    ("model_transaction_policy", "decoupled"): "it sends exactly one response per request",
    ("input", "*", "is_shape_tensor"): "it has no shape tensors",
    ("output", "*", "is_shape_tensor"): "it has no shape tensors",
    ("input", "*", "allow_ragged_batch"): "it batches only requests of equal shape",
    ("input", "*", "is_non_linear_format_io"): "it passes tensors in linear layout only",
    ("output", "*", "is_non_linear_format_io"): "it passes tensors in linear layout only",
}

_HINT = "remove the field, or serve this model with Triton"


def check(
    doc: dict[str, Any], positions: Positions, file: str
) -> tuple[list[ConfigIssue], list[str]]:
    """Return (issues for refused fields, warning sentences for ignored fields)."""
    issues: list[ConfigIssue] = []
    for pattern, reason in _REFUSED.items():
        for path, _value in find_paths(doc, pattern):
            issues.append(
                issue_at(
                    file,
                    positions.key(path),
                    format_path(path),
                    f"`{format_path(path)}` is not supported by repoman ({reason}); "
                    "expected the field to be absent, found it set",
                    _HINT,
                )
            )
    for pattern, reason in _REFUSED_IF_TRUE.items():
        for path, value in find_paths(doc, pattern):
            if value is True:
                issues.append(
                    issue_at(
                        file,
                        positions.value(path),
                        format_path(path),
                        f"`{format_path(path)}: true` is not supported by repoman ({reason}); "
                        "expected false or no value, found true",
                        _HINT,
                    )
                )
    warnings = [
        f"`{format_path(path)}` is accepted but ignored: repoman does not implement it, "
        "and it does not change inference results"
        for pattern in _IGNORED
        for path, _value in find_paths(doc, pattern)
    ]
    return issues, warnings
