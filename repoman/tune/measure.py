"""Talking to the tuning server: load a candidate config, drive load at it, read its statistics."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from repoman.perf.control import ControlClient, control_client
from repoman.perf.inputs import Body, build_bodies
from repoman.perf.loadgen import Step
from repoman.perf.model import Target
from repoman.perf.processes import InProcess
from repoman.tune.report import Sample

REQUEST_TIMEOUT_S = 30.0

Progress = Callable[[int, int, str], None]
"""Called as each window starts: (windows done, windows in all, what runs now)."""


@dataclass(frozen=True)
class Plan:
    """How each configuration is measured: every concurrency, ``repeats`` windows each."""

    concurrencies: tuple[int, ...]
    repeats: int
    warmup_s: float
    window_s: float

    @property
    def windows(self) -> int:
        return len(self.concurrencies) * self.repeats

    @property
    def seconds(self) -> float:
        """Measuring time of one configuration (loading it not included)."""
        return len(self.concurrencies) * (self.warmup_s + self.repeats * self.window_s)


@contextlib.asynccontextmanager
async def connect(url: str, model: str, token: str | None) -> AsyncIterator[Tuner]:
    """A Tuner for ``model`` on the server at ``url``, its HTTP session closed on exit."""
    async with control_client(url, token) as client:
        yield Tuner(client, model)


class Tuner:
    """A client of one server: loads configs of ``model`` and measures them."""

    def __init__(self, client: ControlClient, model: str) -> None:
        self._client = client
        self.model = model
        self._target: Target | None = None
        self._bodies: list[Body] = []

    async def load(self, config: dict[str, Any] | None, timeout_s: float) -> None:
        """Serve ``model`` with ``config`` (the server loads it beside the old one, then
        switches; None: as the repository has it); RepomanError with the server's reason
        when it refuses or fails."""
        await self._client.load(self.model, config, timeout_s)
        self._target = None  # max_batch_size may have changed: build the bodies again

    async def counts(self) -> tuple[int, int] | None:
        """(inference_count, execution_count) of the served version, or None if unavailable."""
        stats = await self._client.statistics(self.model)
        if stats is None:
            return None
        try:
            return (
                sum(int(s["inference_count"]) for s in stats),
                sum(int(s["execution_count"]) for s in stats),
            )
        except (KeyError, TypeError, ValueError):
            return None

    async def _prepare(self) -> tuple[Target, list[Body]]:
        if self._target is None:
            self._target = await self._client.target(self.model)
            self._bodies = build_bodies(self._target, "random", 1, {}, binary=True)
        return self._target, self._bodies

    async def measure(self, plan: Plan, progress: Progress | None = None) -> list[Sample]:
        """Each concurrency of ``plan``: warm up, then ``repeats`` windows back to back."""
        target, bodies = await self._prepare()
        driver = InProcess(target.infer_url, bodies, REQUEST_TIMEOUT_S, "raw")
        samples = []
        done = 0
        for concurrency in plan.concurrencies:
            before = await self.counts()
            throughputs, p50s, p99s, errors = [], [], [], 0
            for repeat in range(plan.repeats):
                if progress is not None:
                    progress(
                        done, plan.windows, f"c{concurrency} window {repeat + 1}/{plan.repeats}"
                    )
                warmup = plan.warmup_s if repeat == 0 else 0.0
                start = time.perf_counter_ns() + int(warmup * 1e9)
                result = await driver.run(Step(concurrency, start, plan.window_s, None))
                done += 1
                ok = result.latencies_ns
                errors += result.failed
                throughputs.append(len(ok) / result.window_s)
                if len(ok):
                    p50, p99 = np.percentile(ok, [50, 99]) / 1e6
                    p50s.append(float(p50))
                    p99s.append(float(p99))
            after = await self.counts()
            samples.append(
                Sample(
                    concurrency=concurrency,
                    throughputs=tuple(throughputs),
                    p50_ms=statistics.median(p50s) if p50s else float("nan"),
                    p99_ms=statistics.median(p99s) if p99s else float("nan"),
                    mean_batch=_mean_batch(before, after),
                    errors=errors,
                )
            )
        return samples


def _mean_batch(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def budget_plan(
    concurrencies: Sequence[int], seconds_per_config: float, *, max_window_s: float = 5.0
) -> Plan:
    """The longest windows (up to ``max_window_s``) that fit ``seconds_per_config``, with
    three repeats when they can each be at least 1 s, else two of at least 0.5 s."""
    warmup = 0.3
    levels = tuple(concurrencies)
    for repeats, shortest in ((3, 1.0), (2, 0.5)):
        window = (seconds_per_config / len(levels) - warmup) / repeats
        if window >= shortest:
            return Plan(levels, repeats, warmup, min(window, max_window_s))
    return Plan(levels, 2, warmup, 0.5)
