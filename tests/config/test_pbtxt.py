"""The protobuf text format parser: values, structure, positions and syntax errors."""

from __future__ import annotations

import re
from typing import Any

import pytest

from repoman.config import pbtxt
from repoman.config.tree import ListValue, Message, Node, Pos
from repoman.errors import ConfigError


def plain(node: Node) -> Any:
    """The tree without positions: messages as (name, value) lists, scalars as (kind, value)."""
    if isinstance(node, Message):
        return [(field.name, plain(field.value)) for field in node.fields]
    if isinstance(node, ListValue):
        return [plain(item) for item in node.items]
    return (node.kind, node.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1", [("a", ("int", 1))]),
        ("a: -3", [("a", ("int", -3))]),
        ("a: 0x1F", [("a", ("int", 31))]),
        ("a: 017", [("a", ("int", 15))]),
        ("a: 1.5", [("a", ("float", 1.5))]),
        ("a: 2e3", [("a", ("float", 2000.0))]),
        ("a: .5f", [("a", ("float", 0.5))]),
        ("a: -inf", [("a", ("float", float("-inf")))]),
        ("a: true", [("a", ("ident", "true"))]),
        ("a: TYPE_FP32", [("a", ("ident", "TYPE_FP32"))]),
        ('a: "x"', [("a", ("string", "x"))]),
        ("a: 'x'", [("a", ("string", "x"))]),
        ('a: "x" "y"', [("a", ("string", "xy"))]),
        (r'a: "q\"t\'\\n\n\t"', [("a", ("string", "q\"t'\\n\n\t"))]),
        (r'a: "\x41\101\u00e9"', [("a", ("string", "AAé"))]),
        ("a: [1, 2]", [("a", [("int", 1), ("int", 2)])]),
        ("a: []", [("a", [])]),
        ("a [ ]", [("a", [])]),
        ("a { b: 1 }", [("a", [("b", ("int", 1))])]),
        ("a: { b: 1 }", [("a", [("b", ("int", 1))])]),
        ("a < b: 1 >", [("a", [("b", ("int", 1))])]),
        ("a {}", [("a", [])]),
        ("a [ { b: 1 }, { b: 2 } ]", [("a", [[("b", ("int", 1))], [("b", ("int", 2))]])]),
        ("a: 1, b: 2; c: 3", [("a", ("int", 1)), ("b", ("int", 2)), ("c", ("int", 3))]),
        ("a: 1 a: 2", [("a", ("int", 1)), ("a", ("int", 2))]),
        ("# only a comment\n", []),
        ("a: 1 # trailing\n# whole line\nb: 2", [("a", ("int", 1)), ("b", ("int", 2))]),
        ('a: "# not a comment"', [("a", ("string", "# not a comment"))]),
        (
            'parameters { key: "k" value { string_value: "v" } }',
            [
                (
                    "parameters",
                    [("key", ("string", "k")), ("value", [("string_value", ("string", "v"))])],
                )
            ],
        ),
    ],
)
def test_values_and_structure(text: str, expected: Any) -> None:
    assert plain(pbtxt.parse(text, filename="c.pbtxt")) == expected


def test_positions_of_fields_and_values_are_1_based() -> None:
    text = 'name: "m"\ninput [\n  {\n    dims: [ 4, -1 ]\n  }\n]\n'
    tree = pbtxt.parse(text, filename="c.pbtxt")
    name, inputs = tree.fields
    assert (name.name_pos, name.value.pos) == (Pos(1, 1), Pos(1, 7))
    assert isinstance(inputs.value, ListValue)
    assert inputs.name_pos == Pos(2, 1)
    block = inputs.value.items[0]
    assert isinstance(block, Message)
    assert block.pos == Pos(3, 3)
    dims = block.fields[0]
    assert dims.name_pos == Pos(4, 5)
    assert isinstance(dims.value, ListValue)
    assert [item.pos for item in dims.value.items] == [Pos(4, 13), Pos(4, 16)]


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ("a: ", 1, 4, r"expected a value for `a`, found end of file"),
        ("a {\n  b: 1\n", 3, 1, r"expected '}' to close `a` opened at line 1, column 3"),
        ("a: [1 2]", 1, 7, r"expected ',' or '\]' in the list of `a`, found the number 2"),
        ('a: "x\nb: 1', 1, 4, r"expected a closing \" on the same line"),
        ("a 5", 1, 3, r"expected ':' or '\{' after the field name `a`, found the number 5"),
        ("}", 1, 1, r"expected a field name, found '\}'"),
        ("a { b: 1 ]", 1, 10, r"expected a field name or '\}', found '\]'"),
        ("a: -b", 1, 5, r"expected a number after '-', found the identifier b"),
        ("a: 09", 1, 4, r"expected an octal number after a leading 0, found 09"),
        ("a: 12ab", 1, 4, r"expected a number, found the malformed number 12a"),
        ("a: @", 1, 4, r"found the character '@'"),
        ('a: "\\q"', 1, 4, r"expected a known escape .*found \\q"),
        ("a: [[1]]", 1, 5, r"expected a value for `a`, found '\['"),
        ("a: 1\n\n  b: ]", 3, 6, r"expected a value for `b`, found '\]'"),
    ],
)
def test_syntax_errors_name_position_and_expectation(
    text: str, line: int, column: int, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        pbtxt.parse(text, filename="c.pbtxt")
    [issue] = info.value.issues
    assert (issue.file, issue.line, issue.column) == ("c.pbtxt", line, column)
    assert re.search(message, issue.message), issue.message
    assert "expected" in issue.message and "found" in issue.message


def test_a_triton_config_parses_with_its_licence_header() -> None:
    text = "# Copyright\n#\n" + 'name: "x"\nmax_batch_size: 8\ninstance_group [ { gpus: [ 0 ] } ]\n'
    names = [field.name for field in pbtxt.parse(text, filename="c.pbtxt").fields]
    assert names == ["name", "max_batch_size", "instance_group"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: \u0663", r"found the character '\u0663'"),  # ARABIC-INDIC DIGIT THREE
        ("a: \u00b2", r"found the character '\u00b2'"),  # SUPERSCRIPT TWO
        ("a: \uff11", r"found the character '\uff11'"),  # FULLWIDTH DIGIT ONE
        ("a: 4\u0663", r"found the malformed number 4\u0663"),
        ("a: " + "1" * 5000, r"expected an integer that fits in 64 bits, found 1111"),
        ("a: 18446744073709551616", r"fits in 64 bits, found 18446744073709551616"),
        ("a: 0x1" + "0" * 16, r"fits in 64 bits, found 0x10000000000000000"),
    ],
    ids=["arabic", "superscript", "fullwidth", "trailing", "5000-digits", "2**64", "hex"],
)
def test_numbers_are_ascii_and_fit_in_64_bits(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        pbtxt.parse(text, filename="c.pbtxt")
    [issue] = info.value.issues
    assert re.search(message, issue.message), issue.message


def test_the_largest_64_bit_integer_parses() -> None:
    tree = pbtxt.parse("a: 18446744073709551615 b: -9223372036854775808", filename="c.pbtxt")
    assert plain(tree) == [("a", ("int", 2**64 - 1)), ("b", ("int", -(2**63)))]
