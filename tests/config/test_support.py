"""Known Triton fields repoman does not implement: performance-only ones warn, the rest refuse."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from repoman.config import parse_model_config
from repoman.errors import ConfigIssue

IssuesOf = Callable[..., list[ConfigIssue]]

TENSORS = """input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""


def config(extra: str, *, tensors: str = TENSORS) -> str:
    return f'name: "m"\nmax_batch_size: 8\n{tensors}{extra}\n'


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('runtime: "model.py"', "runtime"),
        ("optimization { input_pinned_memory { enable: true } }", "optimization"),
        ("response_cache { enable: true }", "response_cache"),
        ('model_metrics { metric_control { metric_identifier { family: "f" } } }', "model_metrics"),
        ('metric_tags { key: "team" value: "a" }', "metric_tags"),
        ('cc_model_filenames { key: "8.0" value: "m.plan" }', "cc_model_filenames"),
        ('model_operations { op_library_filename: "ops.so" }', "model_operations"),
        ('model_repository_agents { agents { name: "checksum" } }', "model_repository_agents"),
        ('instance_group { host_policy: "numa0" }', "instance_group[0].host_policy"),
        ('instance_group { profile: "p" }', "instance_group[0].profile"),
        ("instance_group { passive: true }", "instance_group[0].passive"),
        ("instance_group { rate_limiter { priority: 2 } }", "instance_group[0].rate_limiter"),
        (
            "instance_group { secondary_devices { kind: KIND_NVDLA device_id: 0 } }",
            "instance_group[0].secondary_devices",
        ),
    ],
)
def test_performance_only_fields_are_accepted_with_a_warning(extra: str, field: str) -> None:
    parsed = parse_model_config(config(extra), filename="config.pbtxt", fmt="pbtxt")
    assert parsed.warnings == (
        f"`{field}` is accepted but ignored: repoman does not implement it, "
        "and it does not change inference results",
    )


def test_tensor_level_performance_fields_warn_with_their_index() -> None:
    tensors = (
        'input [ { name: "x" format: FORMAT_NHWC data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "l.txt" } ]\n'
    )
    parsed = parse_model_config(config("", tensors=tensors), filename="config.pbtxt", fmt="pbtxt")
    assert [warning.split("`")[1] for warning in parsed.warnings] == [
        "input[0].format",
        "output[0].label_filename",
    ]


def test_a_plain_config_has_no_warnings() -> None:
    assert parse_model_config(config(""), filename="config.pbtxt", fmt="pbtxt").warnings == ()


@pytest.mark.parametrize(
    ("extra", "field", "line", "column"),
    [
        ("sequence_batching { max_sequence_idle_microseconds: 5 }", "sequence_batching", 5, 1),
        ('batch_input { kind: BATCH_ELEMENT_COUNT target_name: "b" }', "batch_input", 5, 1),
        ('batch_output { target_name: "y" }', "batch_output", 5, 1),
        (
            "model_transaction_policy { decoupled: true }",
            "model_transaction_policy.decoupled",
            5,
            39,
        ),
    ],
)
def test_result_changing_fields_are_refused(
    issues_of: IssuesOf, extra: str, field: str, line: int, column: int
) -> None:
    [issue] = issues_of(config(extra))
    assert (issue.field, issue.line, issue.column) == (field, line, column)
    assert re.search(rf"^`{re.escape(field)}(: true)?` is not supported by repoman", issue.message)
    assert "expected" in issue.message and "found" in issue.message


@pytest.mark.parametrize(
    ("flag", "field"),
    [
        ("is_shape_tensor", "input[0].is_shape_tensor"),
        ("allow_ragged_batch", "input[0].allow_ragged_batch"),
        ("is_non_linear_format_io", "input[0].is_non_linear_format_io"),
    ],
)
def test_tensor_flags_are_refused_only_when_true(
    issues_of: IssuesOf, flag: str, field: str
) -> None:
    for value, refused in (("true", True), ("false", False)):
        tensors = TENSORS.replace("dims: [ 4 ] }", f"dims: [ 4 ] {flag}: {value} }}", 1)
        if refused:
            [issue] = issues_of(config("", tensors=tensors))
            assert issue.field == field
            assert f"`{field}: true` is not supported by repoman" in issue.message
        else:
            parse_model_config(config("", tensors=tensors), filename="c.pbtxt", fmt="pbtxt")


def test_refused_fields_come_before_other_checks(issues_of: IssuesOf) -> None:
    text = config("sequence_batching { }\ninstance_group { kind: KIND_GPU gpus: [ 42 ] }")
    text = text.replace("max_batch_size: 8", "max_batch_size: -3")
    issues = issues_of(text)
    assert [issue.field for issue in issues] == ["sequence_batching"]


def test_refused_and_structural_issues_are_reported_together(issues_of: IssuesOf) -> None:
    issues = issues_of(config("batch_output { }\nmax_bach_size: 2"))
    assert [issue.field for issue in issues] == ["batch_output", "max_bach_size"]
