"""Write a normalised config dict back out as config.pbtxt text or as YAML."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import yaml

from repoman.config import schema as schemas

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def config_to_pbtxt(config: Mapping[str, Any]) -> str:
    """Protobuf text format that parses back to ``config`` (enums bare, strings quoted)."""
    lines: list[str] = []
    _fields(lines, config, schemas.root(), 0)
    return "\n".join(lines) + "\n"


def config_to_yaml(config: Mapping[str, Any]) -> str:
    """YAML in the natural form: lists of numbers inline, one field per line elsewhere."""
    text: str = yaml.safe_dump(
        dict(config), sort_keys=False, default_flow_style=None, allow_unicode=True
    )
    return text


def _fields(
    lines: list[str], message: Mapping[str, Any], schema: dict[str, Any] | None, depth: int
) -> None:
    for name, value in message.items():
        known = schema is not None and schemas.shape(schema) == "object"
        _field(lines, name, value, schemas.child(schema, name) if schema and known else None, depth)


def _field(
    lines: list[str], name: str, value: Any, schema: dict[str, Any] | None, depth: int
) -> None:
    pad = "  " * depth
    kind = schemas.shape(schema) if schema is not None else "opaque"
    if kind == "map":
        value_schema = schemas.child(schema or {}, "")
        integer_keys = schemas.resolve(schema or {}).get("x-repoman-key") == "integer"
        for key, item in value.items():
            # A protobuf map is written as one `name { key: ... value: ... }` entry per key.
            lines.append(f"{pad}{name} {{")
            lines.append(f"{pad}  key: {key if integer_keys else _quote(str(key))}")
            _field(lines, "value", item, value_schema, depth + 1)
            lines.append(f"{pad}}}")
    elif isinstance(value, list):
        item_schema = schemas.child(schema, 0) if kind == "array" and schema else None
        if value and all(isinstance(item, Mapping) for item in value):
            lines.append(f"{pad}{name} [")
            for index, item in enumerate(value):
                lines.append(f"{pad}  {{")
                _fields(lines, item, item_schema, depth + 2)
                lines.append(f"{pad}  }}" + ("," if index < len(value) - 1 else ""))
            lines.append(f"{pad}]")
        else:
            items = ", ".join(_scalar(item, item_schema) for item in value)
            lines.append(f"{pad}{name}: [ {items} ]" if items else f"{pad}{name}: [ ]")
    elif isinstance(value, Mapping):
        lines.append(f"{pad}{name} {{")
        _fields(lines, value, schema, depth + 1)
        lines.append(f"{pad}}}")
    else:
        lines.append(f"{pad}{name}: {_scalar(value, schema)}")


def _scalar(value: Any, schema: dict[str, Any] | None) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        is_enum = schema is not None and "enum" in schemas.resolve(schema)
        return value if is_enum and _IDENT.match(value) else _quote(value)
    raise ValueError(f"cannot write {value!r} as a protobuf text scalar")


def _quote(text: str) -> str:
    escaped = "".join(
        _ESCAPES.get(char, f"\\x{ord(char):02x}" if ord(char) < 0x20 else char) for char in text
    )
    return f'"{escaped}"'
