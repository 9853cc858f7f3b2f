"""The JSON Schema of the normalised form, and how its errors map back to file positions."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from repoman.config import schema
from repoman.config.tree import Pos, Positions
from repoman.errors import ConfigIssue
from repoman.types import CONFIG_TYPE_NAMES

IssuesOf = Callable[..., list[ConfigIssue]]

BASE = """name: "m"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""


def test_schema_is_valid_draft_2020_12() -> None:
    document = schema.root()
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(document)


def test_data_types_are_exactly_the_ones_repoman_knows() -> None:
    assert schema.root()["$defs"]["DataType"]["enum"] == list(CONFIG_TYPE_NAMES)


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (("input", 0, "reshape", "shape", 1), "input[0].reshape.shape[1]"),
        (("parameters", "threads", "string_value"), "parameters[threads].string_value"),
        (("dynamic_batching", "priority_queue_policy", "2"),
         "dynamic_batching.priority_queue_policy[2]"),
        (("model_warmup", 0, "inputs", "x", "dims"), "model_warmup[0].inputs[x].dims"),
        (("sequence_batching", "direct"), "sequence_batching.direct"),
        ((), ""),
    ],
)  # fmt: skip
def test_format_path(path: tuple[str | int, ...], text: str) -> None:
    assert schema.format_path(path) == text


@pytest.mark.parametrize(
    ("edit", "field", "line", "column", "message", "hint"),
    [
        (("TYPE_FP32 dims", "TYPE_FP23 dims"), "input[0].data_type", 3, 32,
         r"expected one of TYPE_BOOL, .*TYPE_STRING, found 'TYPE_FP23'",
         "did you mean `TYPE_FP32`?"),
        (("max_batch_size: 8", 'max_batch_size: "8"'), "max_batch_size", 2, 17,
         r"expected an integer, found '8'", ""),
        (("max_batch_size: 8", "max_batch_size: 8.0"), "max_batch_size", 2, 17,
         r"expected an integer, found 8.0", ""),
        (("dims: [ 4 ] } ]\noutput", 'dims: [ 4, "a" ] } ]\noutput'), "input[0].dims[1]", 3, 53,
         r"expected an integer, found 'a'", ""),
        (('name: "x" data_type', "data_type"), "input[0].name", 3, 9,
         r"expected a `name` field in input\[0\], found none", ""),
        (("max_batch_size: 8", "max_batch_size: 8 instance_group { kind: KIND_TPU }"),
         "instance_group[0].kind", 2, 42, r"expected one of KIND_AUTO, .*found 'KIND_TPU'",
         "did you mean `KIND_GPU`?"),
        (("max_batch_size: 8", "max_batch_size: 8 dynamic_batching { preserve_ordering: yes }"),
         "dynamic_batching.preserve_ordering", 2, 57, r"expected true or false, found 'yes'", ""),
    ],
)  # fmt: skip
def test_schema_errors_are_positioned(
    issues_of: IssuesOf,
    edit: tuple[str, str],
    field: str,
    line: int,
    column: int,
    message: str,
    hint: str,
) -> None:
    text = BASE.replace(edit[0], edit[1], 1)
    assert text != BASE
    [issue] = issues_of(text)
    assert (issue.field, issue.line, issue.column) == (field, line, column)
    assert re.search(message, issue.message), issue.message
    assert issue.hint == hint


def test_validate_reports_every_error_of_a_dict_with_nearest_positions() -> None:
    positions = Positions()
    positions.record((), Pos(1, 1), Pos(1, 1))
    positions.record(("input",), Pos(2, 1), Pos(2, 7))
    doc = {"input": [{"name": 1, "dims": [1]}], "extra": True}
    issues = schema.validate(doc, positions, "c.pbtxt")
    found = {(issue.field, issue.line, issue.column) for issue in issues}
    assert found == {
        ("extra", 1, 1),
        ("input[0].name", 2, 7),
        ("input[0].data_type", 2, 1),
    }
    assert all("expected" in issue.message and "found" in issue.message for issue in issues)


def test_the_packaged_schema_is_the_one_in_schemas() -> None:
    """The package reads its own copy (a wheel has no schemas/ folder); the two must agree."""
    packaged = Path(schema.__file__).with_name(schema.SCHEMA_FILE)
    shown = Path(__file__).resolve().parents[2] / "schemas" / "model_config.schema.json"
    assert packaged.read_bytes() == shown.read_bytes(), "copy schemas/ into repoman/config/"
