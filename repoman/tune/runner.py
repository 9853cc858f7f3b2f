"""``repoman tune`` from flags to exit code: read the model, time the raw backend, search."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from repoman.backends import BackendRegistry
from repoman.errors import RepomanError
from repoman.perf.progress import ProgressBar
from repoman.plugins import build_backend_registry, make_plugin_manager, plugins_dir_for
from repoman.source.resolve import Resolver
from repoman.source.scan import ScanOptions, read_model
from repoman.tune import search, space
from repoman.tune.finish import Run, finish
from repoman.tune.measure import budget_plan, connect
from repoman.tune.options import parse_shapes
from repoman.tune.report import table
from repoman.tune.roofline import RawModel, measure_roofline
from repoman.tune.server import TuningServer

ROOFLINE_SHARE = 0.12  # of the time budget, at most ROOFLINE_MAX_S
ROOFLINE_MAX_S = 15.0
RESERVE_S = 3.0  # kept back for stopping the server and writing the results
START_TIMEOUT_S = 90.0
PLANNED_TRIALS = 10  # what the window length is sized for; the search may use fewer
MIN_BUDGET_S = 10.0


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
        token = args.control_token or os.environ.get("REPOMAN_CONTROL_TOKEN")
        if url is None:
            server = TuningServer(
                args.repo,
                model.name,
                plugins_dir=plugins_dir,
                num_batch_threads=args.num_batch_threads,
            )
            server.wait_listening(min(START_TIMEOUT_S, deadline - time.monotonic()))
            url, token = server.url, server.token
        asyncio.run(_search(result, url, token, args, deadline, bar, started))
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
    return finish(result, args, plot_path, time.monotonic() - started)


def _read_model(
    repo: Path, name: str, plugins_dir: Path | None
) -> tuple[RawModel, BackendRegistry]:
    model_dir = repo / name
    if not model_dir.is_dir():
        raise RepomanError(f"no model folder {model_dir}")
    pm, report = make_plugin_manager(plugins_dir=plugins_dir)
    registry = build_backend_registry(pm, report)
    folder = read_model(model_dir, ScanOptions(), now=time.time())
    entry = Resolver(registry).resolve(folder)
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
    token: str | None,
    args: argparse.Namespace,
    deadline: float,
    bar: ProgressBar,
    started: float,
) -> None:
    async with connect(url, result.model.name, token) as tuner:
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
