"""The parsed, schema-agnostic configuration tree both source formats produce, with positions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from repoman.errors import ConfigIssue

PathItem: TypeAlias = str | int
KeyPath: TypeAlias = tuple[PathItem, ...]

ANY_INDEX = "*"
"""In a pattern for :func:`find_paths`: any index of a list."""
ANY_KEY = "*key"
"""In a pattern for :func:`find_paths`: any key of a map."""


def find_paths(value: Any, pattern: KeyPath, prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    """Every concrete path in ``value`` matching ``pattern``, with the value found there."""
    if not pattern:
        yield prefix, value
        return
    head, rest = pattern[0], pattern[1:]
    if head == ANY_INDEX and isinstance(value, list):
        for index, item in enumerate(value):
            yield from find_paths(item, rest, (*prefix, index))
    elif head == ANY_KEY and isinstance(value, dict):
        for key, item in value.items():
            yield from find_paths(item, rest, (*prefix, key))
    elif isinstance(value, dict) and head in value:
        yield from find_paths(value[head], rest, (*prefix, head))


@dataclass(frozen=True)
class Pos:
    """A 1-based line and column in a source file."""

    line: int
    column: int


@dataclass
class Scalar:
    """A leaf value. ``kind`` is how the source spelled it.

    pbtxt kinds: ``string``, ``int``, ``float``, ``ident`` (true/false and enum names).
    YAML kinds: ``string``, ``int``, ``float``, ``bool``, ``null``.
    """

    value: str | int | float | bool | None
    kind: str
    pos: Pos


@dataclass
class Message:
    """A ``{ ... }`` block (pbtxt) or a mapping (YAML): fields in source order, names may repeat."""

    fields: list[Field]
    pos: Pos


@dataclass
class ListValue:
    """A ``[ ... ]`` list (pbtxt) or a sequence (YAML)."""

    items: list[Node]
    pos: Pos


Node: TypeAlias = Scalar | Message | ListValue


@dataclass
class Field:
    """One occurrence of ``name: value`` (or ``name { ... }``)."""

    name: str
    name_pos: Pos
    value: Node


def describe(node: Node) -> str:
    """A short phrase naming what a node is, for 'expected X, found Y' messages."""
    if isinstance(node, Message):
        return "a message { ... }"
    if isinstance(node, ListValue):
        return "a list [ ... ]"
    if node.kind == "string":
        return f"the string {node.value!r}"
    if node.kind == "ident":
        return f"the identifier {node.value}"
    if node.kind == "null":
        return "an empty value"
    if node.kind == "bool":
        return f"the boolean {'true' if node.value else 'false'}"
    return f"the {node.kind} {node.value!r}"


@dataclass
class Positions:
    """Where each path of the normalised dict came from.

    ``key`` is where a field's name stands (or a list element starts), ``value`` where its
    value starts. Lookups walk up to the nearest recorded ancestor so that a value filled in
    by a default still points at the block that holds it.
    """

    keys: dict[KeyPath, Pos] = field(default_factory=dict)
    values: dict[KeyPath, Pos] = field(default_factory=dict)

    def record(self, path: KeyPath, key: Pos, value: Pos) -> None:
        self.keys.setdefault(path, key)
        self.values.setdefault(path, value)

    def key(self, path: Sequence[PathItem]) -> Pos | None:
        return self._nearest(self.keys, tuple(path))

    def value(self, path: Sequence[PathItem]) -> Pos | None:
        return self._nearest(self.values, tuple(path))

    @staticmethod
    def _nearest(table: dict[KeyPath, Pos], path: KeyPath) -> Pos | None:
        while True:
            if path in table:
                return table[path]
            if not path:
                return None
            path = path[:-1]


def issue_at(
    file: str, pos: Pos | None, field_path: str, message: str, hint: str = ""
) -> ConfigIssue:
    """A ConfigIssue located at ``pos`` (None when the value has no source position)."""
    return ConfigIssue(
        file=file,
        line=pos.line if pos else None,
        column=pos.column if pos else None,
        field=field_path,
        message=message,
        hint=hint,
    )
