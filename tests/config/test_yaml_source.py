"""YAML configs: positions, YAML errors, the natural YAML forms, and equality with pbtxt."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from repoman.config import parse_model_config, yaml_source
from repoman.config.tree import ListValue, Message, Pos, Scalar
from repoman.errors import ConfigError, ConfigIssue

IssuesOf = Callable[..., list[ConfigIssue]]

PBTXT = """
name: "m"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  { name: "x", data_type: TYPE_FP32, dims: [ 3, -1 ] },
  { name: "t", data_type: TYPE_STRING, dims: [ 1 ], optional: true }
]
output { name: "y" data_type: TYPE_INT64 dims: 4 reshape { shape: [ 2, 2 ] } }
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
  priority_levels: 2
  default_priority_level: 1
  priority_queue_policy { key: 2 value { max_queue_size: 5 } }
}
instance_group [ { count: 2 } ]
parameters { key: "threads" value { string_value: "4" } }
parameters { key: "mode" value { string_value: "fast" } }
version_policy { all { } }
"""

YAML = """
name: m
platform: onnxruntime_onnx
max_batch_size: 8
input:
  - {name: x, data_type: FP32, dims: [3, -1]}
  - {name: t, data_type: BYTES, dims: 1, optional: true}
output:
  name: y
  data_type: TYPE_INT64
  dims: [4]
  reshape: {shape: [2, 2]}
dynamic_batching:
  preferred_batch_size: [4, 8]
  max_queue_delay_microseconds: 100
  priority_levels: 2
  default_priority_level: 1
  priority_queue_policy:
    2: {max_queue_size: 5}
instance_group:
  - count: 2
parameters:
  threads: 4
  mode: {string_value: fast}
version_policy:
  all:
"""


def test_yaml_and_pbtxt_of_one_model_normalise_to_equal_dicts() -> None:
    from_pbtxt = parse_model_config(PBTXT, filename="config.pbtxt", fmt="pbtxt")
    from_yaml = parse_model_config(YAML, filename="config.yaml", fmt="yaml")
    assert from_yaml.normalised == from_pbtxt.normalised
    assert from_yaml == from_pbtxt
    assert from_yaml.parameters == {"threads": "4", "mode": "fast"}
    assert from_yaml.inputs[1].data_type.config_name == "TYPE_STRING"


def test_scalars_keep_their_yaml_types_and_positions() -> None:
    tree = yaml_source.parse("a: 1\nb: [x, 2.5, true, ~]\n", filename="c.yaml")
    first, second = tree.fields
    assert (first.name_pos, first.value) == (Pos(1, 1), Scalar(1, "int", Pos(1, 4)))
    assert isinstance(second.value, ListValue)
    assert second.value.items == [
        Scalar("x", "string", Pos(2, 5)),
        Scalar(2.5, "float", Pos(2, 8)),
        Scalar(True, "bool", Pos(2, 13)),
        Scalar(None, "null", Pos(2, 19)),
    ]


def test_an_empty_document_is_an_empty_message() -> None:
    assert yaml_source.parse("# nothing\n", filename="c.yaml") == Message([], Pos(1, 1))


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ("a: [1\n", 2, 1, r"expected valid YAML .*flow sequence.*found"),
        ("a: b: c\n", 1, 5, r"expected valid YAML, found: mapping values are not allowed"),
        ("a: 1\na: 2\n", 2, 1, r"expected each key once per mapping, found `a` again"),
        ("- 1\n", 1, 1, r"expected a mapping of configuration fields .*found a sequence"),
        ("a: 1\n---\nb: 2\n", 2, 1, r"expected valid YAML \(expected a single document"),
        ("? [1]\n: 2\n", 1, 3, r"expected a plain field name as a mapping key"),
    ],
)
def test_yaml_errors_name_position_and_expectation(
    text: str, line: int, column: int, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        yaml_source.parse(text, filename="c.yaml")
    [issue] = info.value.issues
    assert (issue.file, issue.line, issue.column) == ("c.yaml", line, column)
    assert re.search(message, issue.message), issue.message


SEMANTIC_ERROR = """\
name: m
max_batch_size: 4
input:
  - name: x
    data_type: FP32
    dims: [2, 0]
output:
  - {name: y, data_type: FP32, dims: [1]}
"""


@pytest.mark.parametrize(
    ("text", "field", "line", "column"),
    [
        (SEMANTIC_ERROR, "input[0].dims[1]", 6, 15),
        (SEMANTIC_ERROR.replace("dims: [2, 0]", "dims: [2, 1]\n    shape: [1]"), "", 7, 5),
        (SEMANTIC_ERROR.replace("FP32\n", "FP23\n", 1), "input[0].data_type", 5, 16),
        (SEMANTIC_ERROR.replace("max_batch_size: 4", "max_batch_size: four"), "", 2, 17),
    ],
)
def test_yaml_issue_positions(
    issues_of: IssuesOf, text: str, field: str, line: int, column: int
) -> None:
    [issue] = issues_of(text, fmt="yaml")
    assert (issue.line, issue.column) == (line, column)
    assert issue.field.startswith(field)


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ("{k: v}", {"k": {"string_value": "v"}}),
        ("{k: 3}", {"k": {"string_value": "3"}}),
        ("{k: true}", {"k": {"string_value": "true"}}),
        ("{k: {string_value: v}}", {"k": {"string_value": "v"}}),
        ("[{key: k, value: {string_value: v}}]", {"k": {"string_value": "v"}}),
    ],
)
def test_yaml_parameters_accept_the_shorthand(parameters: str, expected: dict[str, Any]) -> None:
    text = SEMANTIC_ERROR.replace("[2, 0]", "[2]") + f"parameters: {parameters}\n"
    config = parse_model_config(text, filename="config.yaml", fmt="yaml")
    assert config.normalised["parameters"] == expected


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


@pytest.mark.timeout(10)
def test_yaml_anchors_and_aliases_are_refused_before_anything_expands() -> None:
    assert len(BILLION_LAUGHS) < 400  # 9**9 elements once expanded
    with pytest.raises(ConfigError) as info:
        yaml_source.parse(BILLION_LAUGHS, filename="config.yaml")
    (issue,) = info.value.issues
    assert (issue.line, issue.column) == (1, 4)
    assert "expected no YAML anchors (&name) or aliases (*name), found the anchor &a" in str(issue)


@pytest.mark.parametrize(
    ("text", "found", "pos"),
    [
        ("max_batch_size: &n 8\n", "the anchor &n", (1, 17)),
        ("input: []\noutput: *nothing\n", "the alias *nothing", (2, 9)),
        ("base: &b {max_batch_size: 8}\n<<: *b\n", "the anchor &b", (1, 7)),
    ],
)
def test_every_anchor_or_alias_is_refused_with_its_position(
    text: str, found: str, pos: tuple[int, int]
) -> None:
    with pytest.raises(ConfigError) as info:
        yaml_source.parse(text, filename="config.yaml")
    (issue,) = info.value.issues
    assert found in issue.message and (issue.line, issue.column) == pos


JSON_CONFIG = (
    '{"max_batch_size": 8, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],'
    '\n "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}]}'
)


def test_json_configs_parse_with_positions() -> None:
    config = parse_model_config(JSON_CONFIG, filename="<load>", fmt="json", model_name="m")
    assert config.max_batch_size == 8 and config.outputs[0].name == "y"
    with pytest.raises(ConfigError) as info:
        parse_model_config(
            JSON_CONFIG.replace('"dims": [4]}]}', '"dims": [0]}]}'),
            filename="<load>",
            fmt="json",
            model_name="m",
        )
    assert (info.value.issues[0].line, info.value.issues[0].field) == (2, "output[0].dims[0]")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_size: 8\n", "<load>:1:1: error: expected JSON, found: Expecting value"),
        ('{"max_batch_size": 8,}', "expected JSON, found: Expecting property name"),
        ('{"max_batch_size": NaN}', "expected JSON, found: NaN"),
        ("[" * 100_000 + "]" * 100_000, "expected at most 100 nested blocks"),
        ('{"a": ' * 50_000 + "1" + "}" * 50_000, "expected at most 100 nested blocks"),
        ("[1, 2]", "expected a mapping of configuration fields at the top level"),
    ],
    ids=["yaml", "trailing-comma", "nan", "deep-lists", "deep-objects", "top-list"],
)
def test_a_json_config_must_be_plain_json(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model_config(text, filename="<load>", fmt="json", model_name="m")
    assert message in str(info.value)


@pytest.mark.parametrize(
    "key", ["\u0663", "\u00b2", "1\n", " 1"], ids=["arabic", "superscript", "newline", "space"]
)
def test_priority_levels_written_as_yaml_strings_are_ascii_digits(key: str) -> None:
    text = (
        "max_batch_size: 8\ninput: [{name: x, data_type: FP32, dims: [4]}]\n"
        "output: [{name: y, data_type: FP32, dims: [4]}]\n"
        "dynamic_batching: {priority_levels: 3, default_priority_level: 1, "
        f"priority_queue_policy: {{{json.dumps(key)}: {{max_queue_size: 1}}}}}}\n"
    )
    with pytest.raises(ConfigError, match="expected a non-negative integer key"):
        parse_model_config(text, filename="config.yaml", fmt="yaml", model_name="m")


def test_a_yaml_integer_with_thousands_of_digits_is_a_config_error() -> None:
    text = "max_batch_size: " + "1" * 5000 + "\n"
    with pytest.raises(ConfigError, match="expected an integer that fits in 64 bits"):
        yaml_source.parse(text, filename="config.yaml")


# ---- protobuf's JSON mapping: numbers written as strings ------------------------------------

# What tritonclient.grpc's get_model_config(as_json=True) gives back: every 64-bit integer
# (dims, delays, an ensemble step's model_version) written as a string.
PROTOBUF_JSON = {
    "name": "m",
    "backend": "python",
    "max_batch_size": "8",
    "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": ["-1", "4"]}],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": ["4"]}],
    "dynamic_batching": {
        "max_queue_delay_microseconds": "500",
        "preferred_batch_size": ["4"],
        "priority_levels": "2",
        "default_priority_level": "1",
        "priority_queue_policy": {"2": {"max_queue_size": "3"}},
    },
    "instance_group": [{"count": "2", "kind": "KIND_CPU"}],
}


def test_a_json_config_takes_integers_written_as_strings() -> None:
    config = parse_model_config(
        json.dumps(PROTOBUF_JSON), filename="<load>", fmt="json", model_name="m"
    )
    assert config.max_batch_size == 8
    assert config.inputs[0].dims == (-1, 4) and config.outputs[0].dims == (4,)
    dynamic = config.dynamic_batching
    assert dynamic is not None
    assert dynamic.max_queue_delay_microseconds == 500
    assert dynamic.preferred_batch_size == (4,)
    assert dynamic.priority_queue_policy[2].max_queue_size == 3
    assert config.instance_groups[0].count == 2


def test_an_ensemble_step_s_model_version_may_be_a_string() -> None:
    doc = {
        "platform": "ensemble",
        "max_batch_size": 8,
        "input": [{"name": "IN", "data_type": "TYPE_FP32", "dims": ["4"]}],
        "output": [{"name": "OUT", "data_type": "TYPE_FP32", "dims": ["4"]}],
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": "a",
                    "model_version": "-1",
                    "input_map": {"X": "IN"},
                    "output_map": {"Y": "OUT"},
                }
            ]
        },
    }
    config = parse_model_config(json.dumps(doc), filename="<load>", fmt="json", model_name="e")
    assert config.ensemble_steps[0].model_version == -1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"four"', "expected an integer, found 'four'"),
        ('"4.0"', "expected an integer, found '4.0'"),
        ('" 4"', "expected an integer, found ' 4'"),
        ('"+4"', "expected an integer, found '+4'"),
        ('""', "expected an integer, found ''"),
        ('"' + "9" * 21 + '"', "expected an integer that fits in 64 bits"),
    ],
)
def test_only_a_decimal_integer_string_stands_for_an_integer(value: str, message: str) -> None:
    text = JSON_CONFIG.replace('"max_batch_size": 8', f'"max_batch_size": {value}')
    with pytest.raises(ConfigError) as info:
        parse_model_config(text, filename="<load>", fmt="json", model_name="m")
    assert message in str(info.value)


def test_a_yaml_config_still_refuses_a_quoted_integer() -> None:
    text = (
        'max_batch_size: "8"\ninput: [{name: x, data_type: FP32, dims: [4]}]\n'
        "output: [{name: y, data_type: FP32, dims: [4]}]\n"
    )
    with pytest.raises(ConfigError, match="expected an integer, found '8'"):
        parse_model_config(text, filename="config.yaml", fmt="yaml", model_name="m")
