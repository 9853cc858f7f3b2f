"""From the parsed tree to the normalised dict: repeated fields, maps, coercion, unknown fields."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from repoman.config import parse_model_config
from repoman.errors import ConfigIssue

IssuesOf = Callable[..., list[ConfigIssue]]

TENSORS = """
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""


def normalised(extra: str, *, tensors: str = TENSORS) -> dict[str, Any]:
    text = f'name: "m"\nmax_batch_size: 8\n{tensors}{extra}'
    return parse_model_config(text, filename="config.pbtxt", fmt="pbtxt").normalised


@pytest.mark.parametrize(
    ("tensors", "expected_dims"),
    [
        ('input { name: "x" data_type: TYPE_FP32 dims: 4 }', [4]),
        ('input { name: "x" data_type: TYPE_FP32 dims: 4 dims: 5 }', [4, 5]),
        ('input { name: "x" data_type: TYPE_FP32 dims: [4] dims: [5, 6] }', [4, 5, 6]),
        ('input [ { name: "x" data_type: TYPE_FP32 dims: [ 4, -1 ] } ]', [4, -1]),
    ],
)
def test_repeated_fields_wrap_and_flatten(tensors: str, expected_dims: list[int]) -> None:
    doc = normalised("", tensors=tensors + '\noutput { name: "y" data_type: TYPE_FP32 dims: 1 }')
    assert doc["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": expected_dims}]


def test_repeated_blocks_append_in_order() -> None:
    doc = normalised(
        'instance_group { count: 2 }\ninstance_group [ { count: 3 }, { name: "g" } ]',
    )
    assert [(g["name"], g["count"]) for g in doc["instance_group"]] == [
        ("m_0", 2),
        ("m_1", 3),
        ("g", 1),
    ]


def test_map_entries_become_an_object_with_typed_keys() -> None:
    doc = normalised(
        'parameters { key: "a" value { string_value: "1" } }\n'
        'parameters [ { key: "b" value { } } ]\n'
        "dynamic_batching { priority_levels: 3 default_priority_level: 1\n"
        "  priority_queue_policy { key: 3 value { max_queue_size: 2 } } }\n"
    )
    assert doc["parameters"] == {"a": {"string_value": "1"}, "b": {}}
    assert doc["dynamic_batching"]["priority_queue_policy"] == {"3": {"max_queue_size": 2}}


def test_ints_stay_ints_and_bools_are_bools() -> None:
    doc = normalised(
        "dynamic_batching { max_queue_delay_microseconds: 0x10 preserve_ordering: 1 }",
        tensors=TENSORS.replace('"x" ', '"x" optional: True '),
    )
    assert doc["max_batch_size"] == 8
    assert doc["dynamic_batching"] == {
        "max_queue_delay_microseconds": 16,
        "preserve_ordering": True,
    }
    assert doc["input"][0]["optional"] is True


def test_data_type_accepts_the_protocol_name() -> None:
    doc = normalised("", tensors=TENSORS.replace("TYPE_FP32", "FP16", 1))
    assert doc["input"][0]["data_type"] == "TYPE_FP16"


UNKNOWN = "expected a field of dynamic_batching, found unknown field"
STRUCTURAL = [
    ("max_batch_sise: 4", "max_batch_sise", 5, 1, "unknown field `max_batch_sise`", "`max_batch_size`"),
    ("dynamic_batching { prefered_batch_size: 4 }", "dynamic_batching.prefered_batch_size",
     5, 20, UNKNOWN, "`preferred_batch_size`"),
    ("zzz: 1", "zzz", 5, 1, r"unknown field `zzz`", "expected one of: name, platform"),
    ("max_batch_size: 4", "max_batch_size", 5, 1,
     r"expected `max_batch_size` at most once, found it 2 times", ""),
    ("platform: onnx", "platform", 5, 11,
     r"expected a quoted string, found the identifier onnx", 'write "onnx"'),
    ("dynamic_batching: 5", "dynamic_batching", 5, 19,
     r"expected a message \{ ... \}, found the int 5", ""),
    ("max_batch_size [ 1 ]", "max_batch_size", 5, 1, r"at most once", ""),
    ("optimization { graph: [ 1 ] }", "optimization.graph", 5, 23,
     r"expected a message .*found a list", ""),
    ('parameters { key: 1 value { } }', "parameters", 5, 19,
     r"expected a quoted string key, found the int 1", ""),
    ('parameters { key: "a" valeu { } }', "parameters", 5, 23,
     r"found unknown field `valeu`", "`value`"),
    ('parameters { key: "a" } parameters { key: "a" }', "parameters[a]", 5, 43,
     r"each key once, found 'a' again", ""),
    ("dynamic_batching { priority_queue_policy { key: -1 } }",
     "dynamic_batching.priority_queue_policy", 5, 49,
     r"expected a non-negative integer key, found the int -1", ""),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "field", "line", "column", "message", "hint"), STRUCTURAL)
def test_structural_issues(
    issues_of: IssuesOf, extra: str, field: str, line: int, column: int, message: str, hint: str
) -> None:
    text = f'name: "m"\nmax_batch_size: 8\n{TENSORS.strip()}\n{extra}\n'
    issues = issues_of(text)
    assert len(issues) == 1, issues
    [issue] = issues
    assert (issue.field, issue.line, issue.column) == (field, line, column)
    assert re.search(message, issue.message), issue.message
    assert hint in issue.hint


def test_several_structural_issues_are_reported_together(issues_of: IssuesOf) -> None:
    text = f"{TENSORS}\nfoo: 1\nbar: 2\ninstance_group {{ cuont: 2 }}\n"
    issues = issues_of(text)
    assert [issue.field for issue in issues] == ["foo", "bar", "instance_group[0].cuont"]
    assert issues[2].hint == "did you mean `count`?"
