"""Load a config.yaml (or a JSON config) into the same positioned tree the pbtxt parser produces."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import yaml

from repoman.config.pbtxt import MAX_DEPTH, MAX_INT
from repoman.config.tree import Field, ListValue, Message, Node, Pos, Scalar, issue_at
from repoman.errors import ConfigError, ConfigIssue

# The tags yaml's SafeLoader resolver gives plain scalars, and how each is converted.
_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {
    f"{_TAG}str": "string",
    f"{_TAG}int": "int",
    f"{_TAG}float": "float",
    f"{_TAG}bool": "bool",
    f"{_TAG}null": "null",
}


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader refusing anchors and aliases: a few hundred bytes of nested aliases
    ("billion laughs") expand to billions of values. A config never needs them."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _AnchorFound(event.start_mark, f"the alias *{event.anchor}")
        if getattr(event, "anchor", None) is not None:
            raise _AnchorFound(event.start_mark, f"the anchor &{event.anchor}")
        node: yaml.Node | None = super().compose_node(parent, index)
        return node


class _AnchorFound(Exception):
    def __init__(self, mark: Any, found: str) -> None:
        super().__init__(found)
        self.pos = Pos(mark.line + 1, mark.column + 1)
        self.found = found


def parse_json(text: str, *, filename: str) -> Message:
    """Parse a JSON config (the load API's override): strict JSON, then read as YAML (JSON
    is YAML) so that every value keeps its position. ConfigError for anything else."""
    try:
        json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        _fail(filename, None, f"expected at most {MAX_DEPTH} nested blocks")
    except json.JSONDecodeError as error:
        pos = Pos(error.lineno, error.colno)
        _fail(filename, pos, f"expected JSON, found: {error.msg}", _JSON_HINT)
    except ValueError as error:
        _fail(filename, None, f"expected JSON, found: {error}", _JSON_HINT)
    return parse(text, filename=filename)


_JSON_HINT = "a config sent with a load request is JSON, as Triton's"


def _refuse_constant(word: str) -> NoReturn:
    raise ValueError(f"{word} (not a JSON number)")


def _fail(filename: str, pos: Pos | None, message: str, hint: str = "") -> NoReturn:
    raise ConfigError([issue_at(filename, pos, "", message, hint)]) from None


def parse(text: str, *, filename: str) -> Message:
    """Parse YAML ``text``; raise ConfigError for YAML errors, anchors/aliases and
    duplicate keys.

    Only the composed node graph is used (never constructed Python objects), so every
    value keeps the line and column it was written at.
    """
    try:
        root = yaml.compose(text, Loader=_NoAliasLoader)
    except _AnchorFound as anchor:
        _fail(
            filename,
            anchor.pos,
            f"expected no YAML anchors (&name) or aliases (*name), found {anchor.found}",
            "write each value out in full",
        )
    except RecursionError:
        raise ConfigError(
            [issue_at(filename, None, "", f"expected at most {MAX_DEPTH} nested blocks")]
        ) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        pos = Pos(mark.line + 1, mark.column + 1) if mark else None
        found = error.problem or "malformed YAML"
        expected = f" ({error.context})" if error.context else ""
        raise ConfigError(
            [issue_at(filename, pos, "", f"expected valid YAML{expected}, found: {found}")]
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError([issue_at(filename, None, "", f"expected valid YAML: {error}")]) from None
    if root is None:
        return Message([], Pos(1, 1))
    converter = _Converter(filename)
    tree = converter.node(root)
    if not isinstance(tree, Message):
        converter.issues.append(
            issue_at(
                filename,
                tree.pos,
                "",
                "expected a mapping of configuration fields at the top level, "
                f"found {'a sequence' if isinstance(tree, ListValue) else 'a single value'}",
            )
        )
    if converter.issues:
        raise ConfigError(converter.issues)
    assert isinstance(tree, Message)
    return tree


def _pos(node: yaml.Node) -> Pos:
    return Pos(node.start_mark.line + 1, node.start_mark.column + 1)


class _Converter:
    def __init__(self, file: str) -> None:
        self.file = file
        self.issues: list[ConfigIssue] = []
        # NOTE: yaml's own constructors know YAML 1.1's spellings (0x1f, 1_000, yes, ~).
        self._loader = yaml.SafeLoader("")

    def node(self, node: yaml.Node, depth: int = 0) -> Node:
        if depth >= MAX_DEPTH and not isinstance(node, yaml.ScalarNode):
            # NOTE: also stops an alias cycle (`&a [*a]`), which would otherwise never end.
            raise ConfigError(
                [issue_at(self.file, _pos(node), "", f"expected at most {MAX_DEPTH} nested blocks")]
            )
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, depth)
        if isinstance(node, yaml.SequenceNode):
            return ListValue([self.node(item, depth + 1) for item in node.value], _pos(node))
        return self._scalar(node)

    def _mapping(self, node: yaml.MappingNode, depth: int) -> Message:
        fields: list[Field] = []
        seen: dict[str, Pos] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.issues.append(
                    issue_at(
                        self.file,
                        _pos(key_node),
                        "",
                        "expected a plain field name as a mapping key, found a nested collection",
                    )
                )
                continue
            name = str(key_node.value)
            if name in seen:
                first = seen[name]
                self.issues.append(
                    issue_at(
                        self.file,
                        _pos(key_node),
                        name,
                        f"expected each key once per mapping, found `{name}` again "
                        f"(first at line {first.line}, column {first.column})",
                        "give a repeated field as a YAML list",
                    )
                )
                continue
            seen[name] = _pos(key_node)
            fields.append(Field(name, _pos(key_node), self.node(value_node, depth + 1)))
        return Message(fields, _pos(node))

    def _scalar(self, node: yaml.Node) -> Scalar:
        kind = _SCALAR_TAGS.get(node.tag, "string")
        text = str(node.value)
        value: str | int | float | bool | None = text
        if kind != "string":
            try:
                value = self._loader.construct_object(node, deep=True)
            except ValueError:  # NOTE: int() refuses thousands of decimal digits
                value = MAX_INT + 1
        if kind == "int" and isinstance(value, int) and abs(value) > MAX_INT:
            shown = text if len(text) <= 24 else f"{text[:20]}... ({len(text)} characters)"
            self.issues.append(
                issue_at(
                    self.file,
                    _pos(node),
                    "",
                    f"expected an integer that fits in 64 bits, found {shown}",
                )
            )
        return Scalar(value, kind, _pos(node))
