"""``repoman tune`` from flags to exit code: roofline, staged search, report, config, plot."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from repoman.autocomplete import ConfigCompleter
from repoman.backends import BackendRegistry
from repoman.errors import RepomanError
from repoman.perf.progress import ProgressBar
from repoman.plugins import build_backend_registry, make_plugin_manager, plugins_dir_for
from repoman.repository import ScanOptions, read_model
from repoman.tune import output, search, space
from repoman.tune.measure import Plan, budget_plan, connect
from repoman.tune.options import parse_shapes
from repoman.tune.plot import PlotPoint, RawPoint, write_plot
from repoman.tune.report import Trial, noise_margin, pareto_front, recommend, table
from repoman.tune.roofline import RawModel, measure_roofline
from repoman.tune.server import TuningServer

ROOFLINE_SHARE = 0.12  # of the time budget, at most ROOFLINE_MAX_S
ROOFLINE_MAX_S = 15.0
RESERVE_S = 3.0  # kept back for stopping the server and writing the results
START_TIMEOUT_S = 90.0
PLANNED_TRIALS = 10  # what the window length is sized for; the search may use fewer
MIN_BUDGET_S = 10.0


@dataclass
class Run:
    """Everything one tuning run found, in the order it found it."""

    model: RawModel
    budget_ms: float
    roofline: list[space.RooflinePoint] = field(default_factory=list)
    trials: list[Trial] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    plan: Plan | None = None


def run(args: argparse.Namespace) -> int:
    """0: a config was recommended and written; 1: nothing could be measured; 2: bad input."""
    started = time.monotonic()
    deadline = started + args.time_budget
    try:
        if args.time_budget < MIN_BUDGET_S:
            raise RepomanError(f"--time-budget {args.time_budget:g}: at least {MIN_BUDGET_S:g} s")
        plot_path = args.plot or Path(f"{args.model}.tune.svg")
        if plot_path.suffix != ".svg":
            raise RepomanError(f"--plot {plot_path}: only SVG is written (name it *.svg)")
        shapes = parse_shapes(args.shape)
        plugins_dir = plugins_dir_for(args.plugins_dir, args.repo)
        model, registry = _read_model(args.repo, args.model, plugins_dir)
    except (RepomanError, ValueError) as exc:
        print(f"repoman tune: error: {exc}", file=sys.stderr)
        return 2
    bar = ProgressBar(sys.stderr, enabled=not args.no_progress and sys.stderr.isatty())
    result = Run(model, args.latency_budget_ms)
    print(
        f"tuning {model.name} version {model.version} ({model.path}): p99 budget "
        f"{args.latency_budget_ms:g} ms at concurrency {', '.join(map(str, args.concurrency))}; "
        f"time budget {args.time_budget:g} s",
        flush=True,
    )
    server: TuningServer | None = None
    try:
        if model.config.max_batch_size > 0:
            seconds = min(ROOFLINE_SHARE * args.time_budget, ROOFLINE_MAX_S)
            result.roofline = _roofline(model, registry, args, seconds, shapes, bar, started)
        else:
            print("the model does not batch (max_batch_size 0): tuning instance count only")
        url = args.url
        if url is None:
            server = TuningServer(
                args.repo,
                model.name,
                plugins_dir=plugins_dir,
                num_batch_threads=args.num_batch_threads,
            )
            server.wait_listening(min(START_TIMEOUT_S, deadline - time.monotonic()))
            url = server.url
        asyncio.run(_search(result, url, args, deadline, bar, started))
    except KeyboardInterrupt:
        bar.clear()
        print("\nrepoman tune: interrupted; reporting what was measured", file=sys.stderr)
    except RepomanError as exc:
        bar.clear()
        tail = f"\n{server.log_tail()}" if server is not None else ""
        print(f"repoman tune: error: {exc}{tail}", file=sys.stderr)
        if not result.trials:
            return 2
    finally:
        bar.clear()
        if server is not None:
            server.stop()
    return _finish(result, args, plot_path, time.monotonic() - started)


def _read_model(
    repo: Path, name: str, plugins_dir: Path | None
) -> tuple[RawModel, BackendRegistry]:
    model_dir = repo / name
    if not model_dir.is_dir():
        raise RepomanError(f"no model folder {model_dir}")
    pm, report = make_plugin_manager(plugins_dir=plugins_dir)
    registry = build_backend_registry(pm, report)
    options = ScanOptions(completer=ConfigCompleter(registry))
    entry = read_model(model_dir, options, now=time.time())
    if entry.config is None:
        raise RepomanError(f"model '{name}' cannot be served: {entry.error}")
    if not entry.wanted:
        raise RepomanError(f"model '{name}' has no complete version folder to tune")
    number = max(entry.wanted)
    version = entry.versions[number]
    if version.config is None:
        raise RepomanError(f"model '{name}' version {number}: {version.error}")
    return RawModel(name, number, version.path, version.config), registry


def _roofline(
    model: RawModel,
    registry: BackendRegistry,
    args: argparse.Namespace,
    seconds: float,
    shapes: dict[str, list[int]],
    bar: ProgressBar,
    started: float,
) -> list[space.RooflinePoint]:
    sizes = space.roofline_sizes(max(1, args.max_batch_limit))
    print(
        f"\nraw backend, in this process, {seconds:.0f} s (where does a bigger batch stop helping?)"
    )
    print(f"  {'batch':>6} {'ms/batch':>9} {'infer/s':>9} {'spread':>7}")

    def show(point: space.RooflinePoint) -> None:
        bar.clear()
        print(
            f"  {point.batch_size:>6} {point.seconds * 1e3:>9.3f} {point.throughput:>9.0f} "
            f"{point.spread:>6.0%}",
            flush=True,
        )
        bar.draw("tune", (time.monotonic() - started) / args.time_budget, "raw backend")

    points = measure_roofline(model, registry, sizes, seconds, shapes=shapes, on_point=show)
    knee = space.knee(points)
    cortex = space.cortex_batch(points, args.latency_budget_ms / 2e3)
    print(
        f"  knee: batch {knee} reaches {space.KNEE_FRACTION:.0%} of the best raw throughput; "
        f"Cortex's rule (single-request throughput x half the budget): batch {cortex}"
    )
    return points


async def _search(
    result: Run,
    url: str,
    args: argparse.Namespace,
    deadline: float,
    bar: ProgressBar,
    started: float,
) -> None:
    async with connect(url, result.model.name, args.control_token) as tuner:
        base = result.model.config.as_dict()
        remaining = deadline - time.monotonic() - RESERVE_S
        plan = budget_plan(args.concurrency, remaining / PLANNED_TRIALS - search.LOAD_GUESS_S)
        result.plan = plan
        print(
            f"\neach config: {plan.repeats} windows of {plan.window_s:.1f} s at each concurrency "
            f"after {plan.warmup_s:g} s warm-up ('!': over the p99 budget)"
        )
        policy = search.Search(
            space.settings_of(base),
            result.roofline,
            budget_ms=result.budget_ms,
            max_concurrency=max(args.concurrency),
            cores=os.cpu_count() or 1,
            trial_s=plan.seconds,
        )
        # the same lists: an interrupted run still reports what was measured
        result.trials, result.skipped = policy.trials, policy.skipped
        header_printed = False
        label = ""  # the config being measured

        def progress(done: int, total: int, what: str) -> None:
            elapsed = time.monotonic() - started
            bar.draw("tune", elapsed / args.time_budget, f"{label}: {what}")

        while True:
            left = deadline - time.monotonic() - RESERVE_S
            entry = policy.next(left)
            if entry is None:
                break
            label = f"config {entry.number} {entry.settings.describe()}"
            progress(0, plan.windows, "loading")
            loading = time.monotonic()
            load_s: float | None = None
            try:
                await tuner.load(entry.settings.apply(base), timeout_s=max(left, 1.0))
                load_s = time.monotonic() - loading
                entry.samples = await tuner.measure(plan, progress)
            except RepomanError as exc:
                entry.error = str(exc).splitlines()[0]
            policy.record(entry, load_s)
            bar.clear()
            lines = table([entry], result.budget_ms, [])
            if not header_printed:
                print(lines[0])
                header_printed = True
            print("\n".join(lines[1:]), flush=True)
        if args.url is not None:
            # NOTE: leave the running server serving what the repository holds.
            try:
                await tuner.load(None, timeout_s=max(deadline - time.monotonic(), 5.0))
            except RepomanError as exc:
                print(f"repoman tune: warning: reloading from disk failed: {exc}", file=sys.stderr)


def _finish(result: Run, args: argparse.Namespace, plot_path: Path, elapsed: float) -> int:
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
