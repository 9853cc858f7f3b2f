"""Which fields auto-complete filled in: the difference between a config before and after it."""

from __future__ import annotations

from typing import Any

TENSOR_LISTS = ("input", "output")


def filled_paths(before: dict[str, Any], after: dict[str, Any]) -> tuple[str, ...]:
    """Dotted paths of what ``after`` adds to or changes in ``before``, sorted.

    A top-level field is named by its key (``max_batch_size``); a tensor by its list and name
    (``input.x``) when it is new, and a tensor's field (``input.x.dims``) when only that changed.
    """
    paths: list[str] = []
    for key, value in after.items():
        if key in before and before[key] == value:
            continue
        if key in TENSOR_LISTS and key in before and isinstance(value, list):
            paths += _tensor_paths(key, before[key], value)
        else:
            paths.append(key)
    return tuple(sorted(paths))


def _tensor_paths(key: str, before: Any, after: list[Any]) -> list[str]:
    given_list = before if isinstance(before, list) else []
    old = {t.get("name"): t for t in given_list if isinstance(t, dict)}
    paths = []
    for tensor in after:
        if not isinstance(tensor, dict):
            continue
        name = tensor.get("name")
        given = old.get(name)
        if given is None:
            paths.append(f"{key}.{name}")
            continue
        paths += [f"{key}.{name}.{f}" for f, v in tensor.items() if given.get(f) != v]
    return paths
