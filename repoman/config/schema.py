"""The JSON Schema of the normalised config: loading, walking by path, validating with positions."""

from __future__ import annotations

import difflib
import functools
import itertools
import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

import jsonschema
import jsonschema.validators

from repoman.config.tree import PathItem, Positions, issue_at
from repoman.errors import ConfigIssue

SCHEMA_FILE = "model_config.schema.json"
"""Shipped inside the package (read with importlib.resources, so a wheel install finds it);
``schemas/`` at the top of the repository holds the same file for people, and a test keeps
the two identical."""

# NOTE: JSON Schema counts 1.0 as an integer; a config that writes dims: [1.0] is a mistake.
_TYPE_CHECKER = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
)
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, type_checker=_TYPE_CHECKER
)
_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a message { ... }",
    "array": "a list",
}


@functools.cache
def root() -> dict[str, Any]:
    """The parsed schema document (read once per process)."""
    with resources.files("repoman.config").joinpath(SCHEMA_FILE).open(encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    return schema


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` ("#/$defs/Name") to the definition it names."""
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        schema = root()["$defs"][name]
    return schema


def shape(schema: dict[str, Any]) -> str:
    """How a schema node is written: ``object``, ``map``, ``array``, ``scalar`` or ``opaque``.

    A map is an object whose keys are free (``additionalProperties`` is a schema); an opaque
    node is one repoman keeps as written without knowing its fields.
    """
    schema = resolve(schema)
    kind = schema.get("type")
    if "properties" in schema:
        return "object"
    if kind == "object":
        return "map" if isinstance(schema.get("additionalProperties"), dict) else "opaque"
    if kind == "array":
        return "array"
    return "scalar" if kind or "enum" in schema else "opaque"


def child(schema: dict[str, Any], item: PathItem) -> dict[str, Any] | None:
    """The schema of ``item`` inside ``schema`` (a field, a list index or a map key)."""
    schema = resolve(schema)
    kind = shape(schema)
    if kind == "object":
        result: dict[str, Any] | None = schema["properties"].get(item)
        return result
    if kind == "map":
        return dict(schema["additionalProperties"])
    if kind == "array":
        return dict(schema["items"])
    return None


def canonical(value: Any, schema: dict[str, Any] | None = None) -> Any:
    """``value`` with every message's fields in schema order (Triton's proto field order)."""
    schema = root() if schema is None else schema
    kind = shape(schema)
    if kind == "object" and isinstance(value, dict):
        order = list(resolve(schema)["properties"])
        keys = sorted(value, key=lambda k: order.index(k) if k in order else len(order))
        return {key: canonical(value[key], child(schema, key) or {}) for key in keys}
    if kind == "map" and isinstance(value, dict):
        return {key: canonical(item, child(schema, key) or {}) for key, item in value.items()}
    if kind == "array" and isinstance(value, list):
        return [canonical(item, child(schema, 0) or {}) for item in value]
    return value


def expected(schema: dict[str, Any]) -> str:
    """A phrase naming what a schema node accepts ("an integer", "one of REJECT, DELAY")."""
    schema = resolve(schema)
    if "enum" in schema:
        return "one of " + ", ".join(schema["enum"])
    return _TYPE_WORDS.get(schema.get("type", ""), "a value")


def format_path(path: Sequence[PathItem]) -> str:
    """``("input", 0, "reshape")`` -> ``input[0].reshape``; map keys print as ``[key]``."""
    text = ""
    schema: dict[str, Any] | None = root()
    for item in path:
        kind = shape(schema) if schema is not None else "opaque"
        if isinstance(item, int) or kind == "map":
            text += f"[{item}]"
        else:
            text += f".{item}" if text else str(item)
        schema = child(schema, item) if schema is not None else None
    return text


def suggest(word: str, choices: Sequence[str]) -> str:
    """A 'did you mean' hint naming the closest choice, or the list of choices when none is."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    return "expected one of: " + ", ".join(choices)


def describe_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "an empty value"
    if isinstance(value, dict):
        return "a message { ... }"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def validate(
    doc: dict[str, Any], positions: Positions, file: str, *, limit: int = 1000
) -> list[ConfigIssue]:
    """Validate ``doc`` against the schema; every error becomes a positioned ConfigIssue.

    At most ``limit`` errors are looked at: a config with a huge list of bad values would
    otherwise be translated error by error (seconds, and megabytes of message).
    """
    validator = _Validator(root())
    errors = itertools.islice(validator.iter_errors(doc), limit)
    issues = []
    for error in sorted(errors, key=lambda e: list(map(str, e.path))):
        issues.extend(_translate(error, positions, file))
    return issues


def _translate(
    error: jsonschema.ValidationError, positions: Positions, file: str
) -> list[ConfigIssue]:
    path = tuple(error.absolute_path)
    schema, instance = error.schema, error.instance
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in instance]
        owner = format_path(path) or "the model configuration"
        if isinstance(instance, dict) and isinstance(instance.get("name"), str):
            owner += f" ('{instance['name']}')"
        return [
            issue_at(
                file,
                positions.key(path),
                format_path((*path, name)),
                f"expected a `{name}` field in {owner}, found none",
            )
            for name in missing
        ]
    if error.validator == "additionalProperties":
        known = list(schema.get("properties", {}))
        return [
            issue_at(
                file,
                positions.key((*path, name)),
                format_path((*path, name)),
                f"expected a known field, found unknown field `{name}`",
                suggest(name, known),
            )
            for name in instance
            if name not in known
        ]
    found = describe_value(instance)
    if error.validator == "enum":
        choices = [str(choice) for choice in error.validator_value]
        hint = suggest(str(instance), choices) if isinstance(instance, str) else ""
        message = f"expected one of {', '.join(choices)}, found {found}"
        return [issue_at(file, positions.value(path), format_path(path), message, hint)]
    if error.validator == "type":
        message = (
            f"expected {_TYPE_WORDS.get(str(error.validator_value), 'a value')}, found {found}"
        )
        return [issue_at(file, positions.value(path), format_path(path), message)]
    if error.validator == "maximum":
        message = f"expected a value <= {error.validator_value}, found {found}"
        hint = str(resolve(schema).get("x-repoman-limit", ""))
        return [issue_at(file, positions.value(path), format_path(path), message, hint)]
    if error.validator == "maxItems":
        message = (
            f"expected at most {error.validator_value} entries in {format_path(path)}, "
            f"found {len(instance)}"
        )
        hint = str(resolve(schema).get("x-repoman-limit", ""))
        return [issue_at(file, positions.value(path), format_path(path), message, hint)]
    if "propertyNames" in error.relative_schema_path:
        # NOTE: only priority_queue_policy constrains its keys: priority levels are integers.
        message = f"expected a non-negative integer key, found {found}"
        return [issue_at(file, positions.key((*path, instance)), format_path(path), message)]
    message = f"expected a value the schema allows, found {found} ({error.message})"
    return [issue_at(file, positions.value(path), format_path(path), message)]
