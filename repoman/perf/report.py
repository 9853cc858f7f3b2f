"""Per-step statistics and how they are shown: a table on stdout, CSV and JSON files."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from repoman.perf.loadgen import StepResult

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class StepStats:
    """One row of the report. Latencies are of successful measured requests, in milliseconds."""

    concurrency: int
    requests: int
    errors: int
    infer_per_sec: float  # rows per second: successful requests x batch size
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    requests_per_sec: float
    batch_size: int
    window_s: float
    client_cpu_pct: float  # the load generator's CPU over the step, 100 = one core busy

    @classmethod
    def of(cls, result: StepResult, batch_size: int) -> StepStats:
        latencies = result.latencies_ns
        ok = len(latencies)
        if ok:
            p50, p90, p95, p99 = (float(v) / 1e6 for v in np.percentile(latencies, PERCENTILES))
            mean = float(latencies.mean()) / 1e6
        else:  # nothing succeeded: no latency to speak of
            p50 = p90 = p95 = p99 = mean = math.nan
        return cls(
            concurrency=result.concurrency,
            requests=result.completed,
            errors=result.failed,
            infer_per_sec=ok * batch_size / result.window_s,
            p50_ms=p50,
            p90_ms=p90,
            p95_ms=p95,
            p99_ms=p99,
            mean_ms=mean,
            requests_per_sec=ok / result.window_s,
            batch_size=batch_size,
            window_s=result.window_s,
            client_cpu_pct=100 * result.client_cpu_s / max(result.client_wall_s, 1e-9),
        )


# (title, field, width, format) of each table column
_COLUMNS = (
    ("concurrency", "concurrency", 11, "d"),
    ("requests", "requests", 9, "d"),
    ("errors", "errors", 7, "d"),
    ("infer/s", "infer_per_sec", 10, ".1f"),
    ("p50 ms", "p50_ms", 9, ".3f"),
    ("p90 ms", "p90_ms", 9, ".3f"),
    ("p95 ms", "p95_ms", 9, ".3f"),
    ("p99 ms", "p99_ms", 9, ".3f"),
    ("mean ms", "mean_ms", 9, ".3f"),
    ("client cpu%", "client_cpu_pct", 11, ".0f"),
)


def table_header() -> str:
    return "  ".join(f"{title:>{width}}" for title, _, width, _ in _COLUMNS)


def table_row(stats: StepStats) -> str:
    cells = []
    for _, name, width, spec in _COLUMNS:
        value = getattr(stats, name)
        text = "-" if isinstance(value, float) and math.isnan(value) else format(value, spec)
        cells.append(f"{text:>{width}}")
    return "  ".join(cells)


def _plain(value: Any) -> Any:
    """NaN (no successful request) is empty in CSV and null in JSON."""
    return None if isinstance(value, float) and math.isnan(value) else value


def write_csv(path: Path, steps: Sequence[StepStats]) -> None:
    names = [f.name for f in fields(StepStats)]
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(names)
        for stats in steps:
            writer.writerow(["" if _plain(v) is None else v for v in asdict(stats).values()])


def write_json(path: Path, run: dict[str, Any], steps: Sequence[StepStats]) -> None:
    """``{...run settings..., "steps": [{field: value}, ...]}``."""
    document = {
        **run,
        "steps": [{k: _plain(v) for k, v in asdict(stats).items()} for stats in steps],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def error_summary(messages: dict[str, int]) -> list[str]:
    """One line per distinct error, most frequent first."""
    ranked = sorted(messages.items(), key=lambda item: -item[1])
    return [f"  {count:>8} x {message}" for message, count in ranked]
