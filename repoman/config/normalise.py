"""Turn a parsed tree into the normalised dict, using the schema to know arrays, maps and types."""

from __future__ import annotations

import math
import re
from typing import Any

from repoman.config import schema as schemas
from repoman.config.pbtxt import MAX_INT
from repoman.config.tree import (
    Field,
    KeyPath,
    ListValue,
    Message,
    Node,
    Pos,
    Positions,
    Scalar,
    describe,
    issue_at,
)
from repoman.errors import ConfigIssue
from repoman.types import DataType

_BOOL_WORDS = {"true": True, "True": True, "t": True, "false": False, "False": False, "f": False}
_JSON_INTEGER = re.compile(r"-?[0-9]{1,24}")


def normalise(
    tree: Message, *, fmt: str, filename: str
) -> tuple[dict[str, Any], Positions, list[ConfigIssue]]:
    """Return the normalised dict, where each of its paths came from, and the issues found.

    ``fmt``: "pbtxt", "yaml", or "json" (read as YAML, plus protobuf's JSON mapping: an
    integer or a number may be written as a string, as Triton's JSON writes int64 fields).

    Issues found here are structural (unknown or repeated fields, values of the wrong kind);
    the dict is complete enough to look for unsupported fields even when there are some.
    """
    normaliser = _Normaliser(fmt, filename)
    normaliser.positions.record((), tree.pos, tree.pos)
    doc = normaliser.message(tree, schemas.root(), ())
    return doc, normaliser.positions, normaliser.issues


class _Normaliser:
    def __init__(self, fmt: str, file: str) -> None:
        self.json = fmt == "json"
        self.fmt = "yaml" if self.json else fmt  # NOTE: JSON is YAML, with the rule below
        self.file = file
        self.positions = Positions()
        self.issues: list[ConfigIssue] = []

    def fail(self, pos: Pos | None, path: KeyPath, message: str, hint: str = "") -> None:
        self.issues.append(issue_at(self.file, pos, schemas.format_path(path), message, hint))

    def message(self, node: Message, schema: dict[str, Any], path: KeyPath) -> dict[str, Any]:
        properties = schemas.resolve(schema)["properties"]
        groups: dict[str, list[Field]] = {}
        for field in node.fields:
            groups.setdefault(field.name, []).append(field)
        out: dict[str, Any] = {}
        for name, fields in groups.items():
            field_path = (*path, name)
            if name not in properties:
                where = schemas.format_path(path) or "the model configuration"
                self.fail(
                    fields[0].name_pos,
                    field_path,
                    f"expected a field of {where}, found unknown field `{name}`",
                    schemas.suggest(name, list(properties)),
                )
                continue
            sub = properties[name]
            self.positions.record(field_path, fields[0].name_pos, fields[0].value.pos)
            kind = schemas.shape(sub)
            if kind == "array":
                out[name] = self._array(fields, sub, field_path)
            elif kind == "map":
                out[name] = self._map(fields, sub, field_path)
            else:
                if len(fields) > 1:
                    self.fail(
                        fields[1].name_pos,
                        field_path,
                        f"expected `{name}` at most once, found it {len(fields)} times",
                        "only repeated fields (lists) may be given more than once",
                    )
                out[name] = self.value(fields[0].value, sub, field_path)
        return {name: out[name] for name in properties if name in out}

    def _array(self, fields: list[Field], schema: dict[str, Any], path: KeyPath) -> list[Any]:
        item_schema = schemas.child(schema, 0) or {}
        out: list[Any] = []
        for field in fields:
            value = field.value
            if isinstance(value, Scalar) and value.kind == "null":
                continue  # NOTE: YAML's `input:` with nothing after it is an empty list
            nodes = value.items if isinstance(value, ListValue) else [value]
            for node in nodes:
                item_path = (*path, len(out))
                key_pos = node.pos if isinstance(value, ListValue) else field.name_pos
                self.positions.record(item_path, key_pos, node.pos)
                out.append(self.value(node, item_schema, item_path))
        return out

    def _map(self, fields: list[Field], schema: dict[str, Any], path: KeyPath) -> dict[str, Any]:
        value_schema = schemas.child(schema, "") or {}
        integer_keys = schemas.resolve(schema).get("x-repoman-key") == "integer"
        entries: list[tuple[Scalar, Node]] = []
        for field in fields:
            node = field.value
            if self.fmt == "yaml" and isinstance(node, Message):
                # YAML writes a map as a mapping: `parameters: {batch: {string_value: "4"}}`.
                entries.extend((Scalar(f.name, "string", f.name_pos), f.value) for f in node.fields)
            elif isinstance(node, ListValue):
                for item in node.items:
                    entries.extend(self._entry(item, path))
            elif isinstance(node, Message):
                entries.extend(self._entry(node, path))
            elif not (isinstance(node, Scalar) and node.kind == "null"):
                self.fail(node.pos, path, f"expected map entries, found {describe(node)}")
        out: dict[str, Any] = {}
        for key_node, value in entries:
            key = self._map_key(key_node, integer_keys, path)
            if key is None:
                continue
            if key in out:
                self.fail(
                    key_node.pos, (*path, key), f"expected each key once, found {key!r} again"
                )
                continue
            self.positions.record((*path, key), key_node.pos, value.pos)
            out[key] = self._map_value(value, value_schema, (*path, key))
        return out

    def _entry(self, node: Node, path: KeyPath) -> list[tuple[Scalar, Node]]:
        if not isinstance(node, Message):
            found = describe(node)
            self.fail(
                node.pos, path, f"expected a map entry {{ key: ... value: ... }}, found {found}"
            )
            return []
        fields = {field.name: field for field in node.fields}
        for field in node.fields:
            if field.name not in ("key", "value"):
                found = f"found unknown field `{field.name}`"
                hint = schemas.suggest(field.name, ["key", "value"])
                self.fail(field.name_pos, path, f"expected `key` or `value`, {found}", hint)
        if "key" not in fields or not isinstance(fields["key"].value, Scalar):
            self.fail(node.pos, path, "expected a map entry with a `key: ...`, found none")
            return []
        value = fields["value"].value if "value" in fields else Message([], node.pos)
        return [(fields["key"].value, value)]

    def _map_key(self, node: Scalar, integer_keys: bool, path: KeyPath) -> str | None:
        value = node.value
        if integer_keys:
            if node.kind == "int" and isinstance(value, int) and value >= 0:
                return str(value)
            # NOTE: isascii: isdigit() and int() also take Unicode digits ("٣", "²").
            if self.fmt == "yaml" and isinstance(value, str) and _ascii_digits(value):
                return str(int(value))
            self.fail(
                node.pos, path, f"expected a non-negative integer key, found {describe(node)}"
            )
            return None
        if node.kind == "string" and isinstance(value, str):
            return value
        self.fail(node.pos, path, f"expected a quoted string key, found {describe(node)}")
        return None

    def _map_value(self, node: Node, schema: dict[str, Any], path: KeyPath) -> Any:
        parameter_like = set(schemas.resolve(schema).get("properties", ())) == {"string_value"}
        if self.fmt == "yaml" and parameter_like and isinstance(node, Scalar):
            # YAML shorthand `parameters: {k: v}` stands for `{k: {string_value: "v"}}`.
            value = node.value
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            return {"string_value": "" if value is None else text}
        return self.value(node, schema, path)

    def value(self, node: Node, schema: dict[str, Any], path: KeyPath) -> Any:
        kind = schemas.shape(schema)
        if kind == "opaque":
            return _generic(node)
        if kind == "object":
            if isinstance(node, Message):
                return self.message(node, schema, path)
            if isinstance(node, Scalar) and node.kind == "null":
                return {}  # `dynamic_batching:` in YAML: an empty message
        elif kind == "scalar" and isinstance(node, Scalar):
            return self._scalar(node, schema, path)
        self.fail(node.pos, path, f"expected {schemas.expected(schema)}, found {describe(node)}")
        return None

    def _scalar(self, node: Scalar, schema: dict[str, Any], path: KeyPath) -> Any:
        resolved = schemas.resolve(schema)
        value, kind = node.value, node.kind
        is_data_type = schema.get("$ref", "").endswith("/DataType") and isinstance(value, str)
        if is_data_type and value in DataType.__members__:
            return DataType(value).config_name  # `FP32` reads as `TYPE_FP32`
        if resolved.get("type") == "boolean":
            if kind == "ident" and isinstance(value, str) and value in _BOOL_WORDS:
                return _BOOL_WORDS[value]
            if kind == "int" and value in (0, 1) and self.fmt == "pbtxt":
                return bool(value)
        if self.json and kind == "string" and isinstance(value, str):
            number = self._json_number(node, resolved.get("type"), path)
            if number is not None:
                return number
        if resolved.get("type") == "string" and kind == "ident":
            self.fail(
                node.pos,
                path,
                f"expected a quoted string, found the identifier {value}",
                f'write "{value}"',
            )
        return value

    def _json_number(self, node: Scalar, wanted: Any, path: KeyPath) -> int | float | None:
        """Protobuf's JSON mapping: a parser takes an integer or a number written as a
        string ("dims": ["4"], "max_queue_delay_microseconds": "500"); its writer spells
        every 64-bit integer so, as tritonclient's ``get_model_config(as_json=True)``
        shows. None: not such a string (the schema says what was expected)."""
        text = str(node.value)
        if wanted == "integer" and _JSON_INTEGER.fullmatch(text):
            value = int(text)
            if abs(value) > MAX_INT:
                self.fail(
                    node.pos, path, f"expected an integer that fits in 64 bits, found {text!r}"
                )
            return value
        if wanted == "number" and text.strip() == text:
            try:
                number = float(text)
            except ValueError:
                return None
            return number if math.isfinite(number) else None
        return None


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 20


def _generic(node: Node) -> Any:
    """A value of a field repoman does not describe: repeated names become lists."""
    if isinstance(node, Scalar):
        return node.value
    if isinstance(node, ListValue):
        return [_generic(item) for item in node.items]
    out: dict[str, Any] = {}
    for field in node.fields:
        value = _generic(field.value)
        if field.name not in out:
            out[field.name] = value
        elif isinstance(out[field.name], list) and not isinstance(field.value, ListValue):
            out[field.name].append(value)
        else:
            out[field.name] = [out[field.name], value]
    return out
