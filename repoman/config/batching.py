"""Semantic checks of dynamic_batching: batch sizes, priority levels and queue policies."""

from __future__ import annotations

from typing import Any

from repoman.config.checker import Checker

_DB = "dynamic_batching"


def check_dynamic_batching(checker: Checker) -> None:
    batching = checker.doc.get(_DB)
    if batching is None:
        return
    max_batch = checker.doc["max_batch_size"]
    if max_batch == 0:
        checker.fail(
            (_DB,),
            "expected max_batch_size > 0 for dynamic_batching to form batches, "
            "found max_batch_size 0",
            "set max_batch_size, or remove dynamic_batching",
            at="key",
        )
    for index, size in enumerate(batching.get("preferred_batch_size", [])):
        path = (_DB, "preferred_batch_size", index)
        if size < 1:
            checker.fail(path, f"expected a preferred batch size >= 1, found {size}")
        elif max_batch > 0 and size > max_batch:
            checker.fail(
                path, f"expected a preferred batch size <= max_batch_size {max_batch}, found {size}"
            )
    delay = batching.get("max_queue_delay_microseconds", 0)
    if delay < 0:
        checker.fail(
            (_DB, "max_queue_delay_microseconds"),
            f"expected max_queue_delay_microseconds >= 0, found {delay}",
        )
    _check_priorities(checker, batching)
    _check_allowed_batch_sizes(checker, batching, max_batch)


def _check_priorities(checker: Checker, batching: dict[str, Any]) -> None:
    levels = batching.get("priority_levels", 0)
    default = batching.get("default_priority_level", 0)
    policies = batching.get("priority_queue_policy", {})
    if levels < 0:
        checker.fail((_DB, "priority_levels"), f"expected priority_levels >= 0, found {levels}")
    elif levels > 0 and not 1 <= default <= levels:
        checker.fail(
            (_DB, "default_priority_level"),
            f"default_priority_level {default} is outside [1, {levels}]: expected a level "
            f"from 1 to priority_levels ({levels}), found {default}",
            "an unset default_priority_level is 0"
            if "default_priority_level" not in batching
            else "",
        )
    for key in policies:
        level = int(key)
        if levels <= 0:
            message = (
                f"expected priority_levels >= 1 for priority_queue_policy level {level}, "
                f"found priority_levels {levels}"
            )
        elif not 1 <= level <= levels:
            message = (
                f"priority_queue_policy level {level} is outside [1, {levels}]: "
                f"expected a level from 1 to priority_levels ({levels}), found {level}"
            )
        else:
            continue
        checker.fail((_DB, "priority_queue_policy", key), message, at="key")
    named: list[tuple[tuple[str, ...], Any]] = [
        (("default_queue_policy",), batching.get("default_queue_policy"))
    ]
    named += [(("priority_queue_policy", key), policy) for key, policy in policies.items()]
    ordered = batching.get("preserve_ordering", False)
    if ordered and levels > 1:
        checker.fail(
            (_DB, "priority_levels"),
            f"expected at most one priority level when preserve_ordering is true, "
            f"found priority_levels {levels}",
        )
    for subpath, policy in named:
        if policy is not None:
            _check_queue_policy(checker, (_DB, *subpath), policy, ordered)


def _check_queue_policy(
    checker: Checker, path: tuple[str, ...], policy: dict[str, Any], ordered: bool
) -> None:
    if ordered and policy.get("timeout_action") == "DELAY":
        checker.fail(
            (*path, "timeout_action"),
            "expected timeout_action REJECT when preserve_ordering is true (a delayed request "
            "would be answered out of order), found DELAY",
        )
    for name in ("default_timeout_microseconds", "max_queue_size"):
        value = policy.get(name, 0)
        if value < 0:
            checker.fail((*path, name), f"expected {name} >= 0, found {value}")


def _check_allowed_batch_sizes(checker: Checker, batching: dict[str, Any], max_batch: int) -> None:
    sizes = batching.get("allowed_batch_sizes", [])
    path = (_DB, "allowed_batch_sizes")
    for index, size in enumerate(sizes):
        if size < 1:
            checker.fail((*path, index), f"expected an allowed batch size >= 1, found {size}")
        elif index and size <= sizes[index - 1]:
            checker.fail(
                (*path, index),
                "expected allowed_batch_sizes in strictly ascending order, "
                f"found {size} after {sizes[index - 1]}",
            )
    if sizes and sizes[-1] != max_batch:
        checker.fail(
            (*path, len(sizes) - 1),
            f"expected the last allowed batch size to equal max_batch_size {max_batch}, "
            f"found {sizes[-1]}",
        )
