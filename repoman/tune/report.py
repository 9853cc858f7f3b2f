"""What each configuration measured, the Pareto front, the pick, and the table that shows them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from repoman.tune.space import Settings

MIN_GAIN = 0.05
MAX_MARGIN = 0.20


@dataclass(frozen=True)
class Sample:
    """One configuration at one concurrency: the medians of its repeated windows."""

    concurrency: int
    throughputs: tuple[float, ...]  # infer/s of each repeat
    p50_ms: float
    p99_ms: float
    mean_batch: float | None  # rows per execution on the server (None: no statistics)
    errors: int = 0

    @property
    def throughput(self) -> float:
        return statistics.median(self.throughputs) if self.throughputs else 0.0

    @property
    def spread(self) -> float:
        """(best - worst) / median over the repeats: how much to trust a difference."""
        if len(self.throughputs) < 2 or not self.throughput:
            return 0.0
        return (max(self.throughputs) - min(self.throughputs)) / self.throughput


@dataclass
class Trial:
    """One configuration tried: its settings and what it measured (or why it could not)."""

    number: int
    settings: Settings
    stage: str
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.samples) and not any(s.errors for s in self.samples)

    @property
    def throughput(self) -> float:
        """Mean over the concurrencies measured of the median throughput."""
        return statistics.fmean(s.throughput for s in self.samples) if self.samples else 0.0

    @property
    def p99_ms(self) -> float:
        """The worst p99 over the concurrencies measured (nan when nothing was measured)."""
        return max((s.p99_ms for s in self.samples), default=math.nan)

    def within(self, budget_ms: float) -> bool:
        return self.ok and self.p99_ms <= budget_ms


def pareto_front(trials: Sequence[Trial]) -> list[Trial]:
    """Trials no other trial beats on both throughput (higher) and p99 (lower), by p99."""
    usable = [t for t in trials if t.ok and not math.isnan(t.p99_ms)]
    front = [
        t
        for t in usable
        if not any(
            o.throughput >= t.throughput
            and o.p99_ms <= t.p99_ms
            and (o.throughput > t.throughput or o.p99_ms < t.p99_ms)
            for o in usable
        )
    ]
    return sorted(front, key=lambda t: t.p99_ms)


def recommend(
    trials: Sequence[Trial], budget_ms: float, incumbent: Trial | None = None
) -> Trial | None:
    """The best throughput within the latency budget; failing that, the lowest p99 of all.

    With an ``incumbent`` (the config as it is) within the budget, a change must beat it by
    more than the noise: 5% plus half the larger repeat spread of the two (at most 20%), so
    a tuning run never swaps a good config for one that only measured luckier.
    """
    within = [t for t in trials if t.within(budget_ms)]
    if within:
        best = max(within, key=lambda t: t.throughput)
        if (
            incumbent is not None
            and incumbent is not best
            and incumbent.within(budget_ms)
            and best.throughput < incumbent.throughput * (1 + noise_margin(best, incumbent))
        ):
            return incumbent
        return best
    usable = [t for t in trials if t.ok]
    return min(usable, key=lambda t: t.p99_ms) if usable else None


def noise_margin(a: Trial, b: Trial) -> float:
    spread = max((s.spread for s in a.samples + b.samples), default=0.0)
    return min(MIN_GAIN + spread / 2, MAX_MARGIN)


def table(trials: Sequence[Trial], budget_ms: float, front: Sequence[Trial]) -> list[str]:
    """One line per configuration and concurrency; ``*`` marks the Pareto front, ``!`` a config
    over the budget."""
    on_front = {t.number for t in front}
    lines = [
        f"{'#':>3}  {'settings':<24} {'stage':<10} {'conc':>5} {'infer/s':>9} {'spread':>7} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'mean bs':>8}"
    ]
    for trial in trials:
        mark = "*" if trial.number in on_front else ("!" if not trial.within(budget_ms) else " ")
        head = f"{trial.number:>3}{mark} {trial.settings.describe():<24} {trial.stage:<10}"
        if trial.error is not None:
            lines.append(f"{head} failed: {trial.error}")
            continue
        for k, sample in enumerate(trial.samples):
            prefix = head if k == 0 else " " * len(head)
            batch = f"{sample.mean_batch:.1f}" if sample.mean_batch is not None else "n/a"
            errors = f"  {sample.errors} errors" if sample.errors else ""
            lines.append(
                f"{prefix} {sample.concurrency:>5} {sample.throughput:>9.0f} "
                f"{sample.spread:>6.0%} {sample.p50_ms:>8.2f} {sample.p99_ms:>8.2f} "
                f"{batch:>8}{errors}"
            )
    return lines
