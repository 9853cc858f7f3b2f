"""Semantic checks of an ensemble's own config: its steps wired into one acyclic data flow.

What can be judged from the ensemble's config alone lives here (a tensor produced twice or
never, one nobody consumes, a cycle, an ensemble input nobody uses); what needs the members'
configs (unknown member, data types, shapes, batch sizes) is judged when the ensemble is
served, against the member versions serving then (``repoman.pipeline.graph``).
"""

from __future__ import annotations

from typing import Any

from repoman.config.checker import Checker

ENSEMBLE = "ensemble"
_ES = "ensemble_scheduling"


def check_ensemble(checker: Checker) -> None:
    doc = checker.doc
    name = doc.get("name", "")
    is_ensemble = doc.get("platform") == ENSEMBLE
    if _ES in doc and not is_ensemble:
        checker.fail(
            (_ES,),
            f"ensemble scheduling cannot be set for model '{name}' whose platform is not "
            f'ensemble: expected platform "{ENSEMBLE}", found '
            f"{_describe_platform(doc)}",
            f'set platform: "{ENSEMBLE}", or remove ensemble_scheduling',
            at="key",
        )
        return
    if not is_ensemble:
        return
    if _ES not in doc:
        checker.fail(
            ("platform",),
            f"ensemble scheduling must be set for ensemble {name} whose platform is ensemble: "
            "expected an ensemble_scheduling { step [...] } block, found none",
        )
        return
    steps = doc[_ES].get("step", [])
    if not steps:
        checker.fail(
            (_ES,), "expected at least one step in ensemble_scheduling, found none", at="key"
        )
        return
    if not _check_steps(checker, steps):
        return
    _check_flow(checker, doc, steps)


def _describe_platform(doc: dict[str, Any]) -> str:
    if doc.get("platform"):
        return f'platform "{doc["platform"]}"'
    if doc.get("backend"):
        return f'backend "{doc["backend"]}"'
    return "neither a platform nor a backend"


def _check_steps(checker: Checker, steps: list[dict[str, Any]]) -> bool:
    """Each step on its own: a member named, a version of -1 or more, both maps non-empty."""
    ok = True
    for index, step in enumerate(steps):
        path = (_ES, "step", index)
        if not step.get("model_name"):
            ok = False
            checker.fail(
                (*path, "model_name") if "model_name" in step else path,
                f"expected a model_name for step {index}, found none",
                at="key",
            )
        version = step.get("model_version", -1)
        if version < -1:
            ok = False
            checker.fail(
                (*path, "model_version"),
                f"expected model_version -1 (the newest ready version) or a version >= 0 "
                f"for step {index}, found {version}",
            )
        for field in ("input_map", "output_map"):
            if not step.get(field):
                ok = False
                checker.fail(
                    (*path, field) if field in step else path,
                    f"expected at least one entry in {field} of step {index} "
                    f"('{step.get('model_name', '')}'), found none",
                    at="key",
                )
    return ok


def _check_flow(checker: Checker, doc: dict[str, Any], steps: list[dict[str, Any]]) -> None:
    """The steps wired together: every tensor produced once, consumed, and no cycle."""
    inputs = {tensor["name"] for tensor in doc.get("input", [])}
    outputs = [tensor["name"] for tensor in doc.get("output", [])]
    producer: dict[str, int] = {}
    for index, step in enumerate(steps):
        for key, tensor in step["output_map"].items():
            path = (_ES, "step", index, "output_map", key)
            where = f"step {index} ('{step['model_name']}')"
            if tensor in inputs:
                checker.fail(
                    path,
                    f"ensemble tensor '{tensor}' is produced twice: it is an ensemble input, "
                    f"and {where} writes it too; expected each tensor to have one producer",
                )
            elif tensor in producer:
                first = producer[tensor]
                checker.fail(
                    path,
                    f"ensemble tensor '{tensor}' is produced twice: by step {first} "
                    f"('{steps[first]['model_name']}') and by {where}; expected each tensor "
                    "to have one producer",
                )
            else:
                producer[tensor] = index
    consumed: set[str] = set()
    for index, step in enumerate(steps):
        for key, tensor in step["input_map"].items():
            consumed.add(tensor)
            if tensor not in inputs and tensor not in producer:
                checker.fail(
                    (_ES, "step", index, "input_map", key),
                    f"ensemble tensor '{tensor}' (input '{key}' of step {index}, "
                    f"'{step['model_name']}') is never produced: expected an ensemble input or "
                    "a step's output_map to provide it",
                )
    for index, name in enumerate(outputs):
        if name not in producer:
            checker.fail(
                ("output", index, "name"),
                f"ensemble output '{name}' is never produced: expected a step whose "
                "output_map writes it",
            )
    for index, tensor in enumerate(doc.get("input", [])):
        if tensor["name"] not in consumed:
            checker.fail(
                ("input", index, "name"),
                f"ensemble input '{tensor['name']}' is not used by any step: expected a step "
                "whose input_map reads it",
                "remove the input, or map it to a step's input",
            )
    wanted = consumed | set(outputs)
    for tensor, index in producer.items():
        if tensor not in wanted:
            key = next(k for k, v in steps[index]["output_map"].items() if v == tensor)
            checker.fail(
                (_ES, "step", index, "output_map", key),
                f"ensemble tensor '{tensor}' (output '{key}' of step {index}, "
                f"'{steps[index]['model_name']}') is never consumed: expected a step's "
                "input_map or an ensemble output to read it",
                "remove the entry from output_map",
            )
    if not checker.issues:
        _check_cycle(checker, steps, producer)


def _check_cycle(checker: Checker, steps: list[dict[str, Any]], producer: dict[str, int]) -> None:
    """Kahn's algorithm: the steps left once none can start are in (or behind) a cycle."""
    needs = [{producer[t] for t in step["input_map"].values() if t in producer} for step in steps]
    done: set[int] = set()
    progress = True
    while progress:
        progress = False
        for index, needed in enumerate(needs):
            if index not in done and needed <= done:
                done.add(index)
                progress = True
    stuck = [index for index in range(len(steps)) if index not in done]
    if stuck:
        cycle = _find_cycle(needs, stuck)
        names = " -> ".join(f"step {i} ('{steps[i]['model_name']}')" for i in cycle)
        checker.fail(
            (_ES, "step", cycle[0]),
            f"expected the steps to form a graph without cycles, found the cycle {names}",
            "a step cannot wait, directly or not, for its own output",
            at="key",
        )


def _find_cycle(needs: list[set[int]], stuck: list[int]) -> list[int]:
    """One cycle among ``stuck`` steps, as the path that returns to its start."""
    left = set(stuck)
    path = [stuck[0]]
    while True:
        following = min(needs[path[-1]] & left)
        if following in path:
            return [*path[path.index(following) :], following]
        path.append(following)
