"""The end of a ``repoman tune`` run: the summary, the recommended config, the chart, the JSON."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from repoman.tune import output, search, space
from repoman.tune.measure import Plan
from repoman.tune.plot import PlotPoint, RawPoint, write_plot
from repoman.tune.report import Trial, noise_margin, pareto_front, recommend, table
from repoman.tune.roofline import RawModel


@dataclass
class Run:
    """Everything one tuning run found, in the order it found it."""

    model: RawModel
    budget_ms: float
    roofline: list[space.RooflinePoint] = field(default_factory=list)
    trials: list[Trial] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    plan: Plan | None = None


def finish(result: Run, args: argparse.Namespace, plot_path: Path, elapsed: float) -> int:
    """Print the summary, write the outputs; 0, 1 when nothing was measured, 2 when the config
    could not be written."""
    trials = result.trials
    front = pareto_front(trials)
    untuned = search.incumbent(trials)
    pick = search.pick(trials, result.budget_ms)
    print(f"\nmeasured {len(trials)} configs in {elapsed:.0f} s (budget {args.time_budget:g} s)")
    if trials:
        print("configs tried ('*': on the Pareto front, '!': over the p99 budget):")
        print("\n".join(table(trials, result.budget_ms, front)))
    if result.skipped:
        print(f"not measured, out of time: {', '.join(result.skipped)}")
    if front:
        print("Pareto front (throughput vs p99, by p99):")
        for t in front:
            print(
                f"  #{t.number:<3} {t.settings.describe():<24} {t.throughput:>9.0f} infer/s  "
                f"p99 {t.p99_ms:.2f} ms"
            )
    _write_plot(result, plot_path, front, pick)
    if pick is None:
        print("repoman tune: no configuration could be measured", file=sys.stderr)
        _write_json(result, args, None, front)
        return 1
    off = next((t for t in trials if t.stage == search.OFF), None)
    within = pick.within(result.budget_ms)
    print(
        f"\nrecommended: #{pick.number} {pick.settings.describe()}: {pick.throughput:.0f} infer/s, "
        f"p99 {pick.p99_ms:.2f} ms"
        + (
            ""
            if within
            else f" -- NO config met the {result.budget_ms:g} ms budget: lowest p99 shown"
        )
    )
    plain = untuned is not None and not untuned.settings.batching
    for name, other in (
        ("the untuned config" + (" (batching off)" if plain else ""), untuned),
        ("batching off", off),
    ):
        if other is not None and other.ok and other is not pick and other.throughput:
            spread = max((s.spread for s in pick.samples + other.samples), default=0.0)
            print(
                f"  vs {name} (#{other.number}): {pick.throughput / other.throughput:.2f}x the "
                f"throughput, p99 {other.p99_ms:.2f} -> {pick.p99_ms:.2f} ms "
                f"(repeat spread up to {spread:.0%})"
            )
    best = recommend(trials, result.budget_ms)
    if best is not None and best is not pick and pick is untuned:
        print(
            f"  kept the config as it is: the best other, #{best.number} "
            f"{best.settings.describe()}, measured only "
            f"{best.throughput / pick.throughput - 1:+.0%}, "
            f"within the noise margin of {noise_margin(best, pick):.0%}"
        )
    base = result.model.config.as_dict()
    changed = output.changes(space.settings_of(base), pick.settings)
    print("changes: " + ("; ".join(changed) if changed else "none: the config is already the best"))
    model_dir = result.model.path.parent
    source = output.config_path(model_dir)
    note = [
        f"tuned by repoman tune on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC for a p99 budget of "
        f"{result.budget_ms:g} ms at concurrency {', '.join(map(str, args.concurrency))}:",
        f"{pick.settings.describe()} measured {pick.throughput:.0f} infer/s, "
        f"p99 {pick.p99_ms:.2f} ms" + (f" ({', '.join(changed)})" if changed else ""),
    ]
    text = output.render(pick.settings.apply(base), source, note)
    target = args.output or Path(f"{result.model.name}.tuned{source.suffix}")
    try:
        output.write_atomically(target, text)
        print(f"wrote the recommended config to {target}")
        if args.apply:
            output.write_atomically(source, text)
            print(f"applied it to {source} (a server following the repository reloads it)")
    except OSError as exc:
        print(f"repoman tune: error: cannot write the config: {exc}", file=sys.stderr)
        return 2
    _write_json(result, args, pick, front)
    return 0


def _write_plot(result: Run, path: Path, front: list[Trial], pick: Trial | None) -> None:
    on_front = {t.number for t in front}
    points = [
        PlotPoint(
            label=f"#{t.number} {t.settings.describe()}",
            throughput=t.throughput,
            p99_ms=t.p99_ms,
            recommended=t is pick,
            pareto=t.number in on_front,
            within_budget=t.within(result.budget_ms),
        )
        for t in result.trials
        if t.ok
    ]
    raw = [RawPoint(p.batch_size, p.throughput, p.seconds * 1e3) for p in result.roofline]
    title = f"repoman tune: {result.model.name} version {result.model.version}"
    try:
        write_plot(path, points, raw, title=title, latency_budget_ms=result.budget_ms)
        print(f"wrote the chart to {path}")
    except (OSError, ValueError) as exc:
        print(f"repoman tune: warning: cannot write the chart: {exc}", file=sys.stderr)


def _write_json(
    result: Run, args: argparse.Namespace, pick: Trial | None, front: list[Trial]
) -> None:
    if args.json is None:
        return
    data = {
        "model": result.model.name,
        "version": result.model.version,
        "latency_budget_ms": result.budget_ms,
        "concurrency": args.concurrency,
        "plan": asdict(result.plan) if result.plan else None,
        "roofline": [asdict(p) | {"throughput": p.throughput} for p in result.roofline],
        "trials": [
            {
                "number": t.number,
                "stage": t.stage,
                "settings": asdict(t.settings),
                "describe": t.settings.describe(),
                "error": t.error,
                "throughput": t.throughput,
                "p99_ms": t.p99_ms,
                "samples": [
                    asdict(s) | {"throughput": s.throughput, "spread": s.spread} for s in t.samples
                ],
            }
            for t in result.trials
        ],
        "pareto": [t.number for t in front],
        "recommended": pick.number if pick else None,
        "not_measured": result.skipped,
    }
    try:
        args.json.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    except OSError as exc:
        print(f"repoman tune: warning: cannot write {args.json}: {exc}", file=sys.stderr)
