"""Reading a config's string ``parameters`` as typed values, with clear errors (for plugins)."""

from __future__ import annotations

import re
from collections.abc import Mapping

_INTEGER = re.compile(r"-?[0-9]{1,18}", re.ASCII)


def int_parameter(params: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    """``parameters[name]`` as an integer >= 0, or ``default`` when absent or empty.

    Raises ValueError naming the parameter, what was expected and what was found.
    """
    raw = params.get(name)
    if raw is None or raw.strip() == "":
        return default
    # NOTE: not int(raw) alone: it also takes " 4\n", "1_000", "+4" and Unicode digits ("٤").
    if not _INTEGER.fullmatch(raw):
        raise ValueError(f"parameter {name}: expected an integer, found '{raw}'")
    value = int(raw)
    if value < 0:
        raise ValueError(f"parameter {name}: expected an integer >= 0, found {value}")
    return value


def bool_parameter(params: Mapping[str, str], name: str) -> bool | None:
    """``parameters[name]`` as ``true``/``false`` (any case), or None when absent or empty."""
    raw = params.get(name)
    if raw is None or raw.strip() == "":
        return None
    word = raw.strip().lower()
    if word not in ("true", "false"):
        raise ValueError(f"parameter {name}: expected true or false, found '{raw}'")
    return word == "true"
