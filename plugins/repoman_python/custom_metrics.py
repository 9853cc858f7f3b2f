"""The python models' custom metrics (``pb_utils.MetricFamily``) as Prometheus text lines.

Each live instance (an :class:`~repoman_python.isolated.IsolatedPythonBackend`) is tracked
here from load to unload; at scrape time :func:`text` asks each for its latest values (what
its stub sent with its last reply, or the registry itself in the server's process) and adds
up the instances of each model version: counters and histograms are summed, and so are
gauges (a gauge of 3 in each of two instances reads 6). Each line carries the model's own
labels plus ``model`` and ``version``. Nothing here runs on the request path.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from typing import Any, Protocol

log = logging.getLogger(__name__)


class _Instance(Protocol):
    @property
    def context(self) -> Any: ...

    def metrics_snapshot(self) -> Any: ...


_lock = threading.Lock()
_instances: weakref.WeakSet[Any] = weakref.WeakSet()


def track(instance: _Instance) -> None:
    with _lock:
        _instances.add(instance)


def forget(instance: _Instance) -> None:
    with _lock:
        _instances.discard(instance)


Labels = tuple[tuple[str, str], ...]


class _Family:
    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name, self.description, self.kind = name, description, kind
        self.values: dict[Labels, Any] = {}  # labels (model and version first) -> total


def text() -> str:
    """Every python model's custom metrics, in the Prometheus text format ("" when none)."""
    with _lock:
        instances = list(_instances)
    families: dict[str, _Family] = {}
    for instance in instances:
        context = instance.context
        own: Labels = (("model", context.config.name), ("version", str(context.version)))
        try:
            snapshot = instance.metrics_snapshot()
        except Exception:
            log.exception("model '%s': reading its custom metrics failed", own[0][1])
            continue
        for name, description, kind, members in snapshot:
            family = families.setdefault(name, _Family(name, description, kind))
            if family.kind != kind:
                log.warning(
                    "custom metric %s is a %s in model '%s' but a %s elsewhere: "
                    "left out for that model",
                    name,
                    kind,
                    own[0][1],
                    family.kind,
                )
                continue
            for labels, value in members:
                _add(family, own + tuple(labels), value, own[0][1])
    lines: list[str] = []
    for family in families.values():
        lines += _lines(family)
    return "\n".join(lines) + "\n" if lines else ""


def _add(family: _Family, labels: Labels, value: Any, model: str) -> None:
    before = family.values.get(labels)
    if family.kind != "histogram":
        family.values[labels] = (before or 0.0) + float(value)
        return
    bounds, counts, total = value
    if before is None:
        family.values[labels] = (tuple(bounds), list(counts), float(total))
    elif tuple(before[0]) != tuple(bounds):
        log.warning(
            "custom metric %s: instances of model '%s' use different buckets; one left out",
            family.name,
            model,
        )
    else:
        summed = [a + b for a, b in zip(before[1], counts, strict=False)]
        family.values[labels] = (before[0], summed, before[2] + float(total))


def _lines(family: _Family) -> list[str]:
    name = family.name
    lines = [f"# HELP {name} {_escape_help(family.description)}", f"# TYPE {name} {family.kind}"]
    for labels, value in family.values.items():
        if family.kind != "histogram":
            lines.append(f"{name}{_labels(labels)} {_number(value)}")
            continue
        bounds, counts, total = value
        running = 0
        for bound, count in zip((*bounds, math.inf), counts, strict=False):
            running += count
            lines.append(f"{name}_bucket{_labels((*labels, ('le', _number(bound))))} {running}")
        lines.append(f"{name}_sum{_labels(labels)} {_number(total)}")
        lines.append(f"{name}_count{_labels(labels)} {running}")
    return lines


def _labels(labels: Labels) -> str:
    return "{" + ",".join(f'{key}="{_escape_value(value)}"' for key, value in labels) + "}"


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))
