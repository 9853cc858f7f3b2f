"""``repoman perf`` from flags to exit code: look up the model, encode, sweep, report."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import aiohttp
import orjson

from repoman.perf.inputs import HEADER_LENGTH, Body, build_bodies
from repoman.perf.loadgen import Step, StepResult, error_message
from repoman.perf.model import Target, fetch_target, server_url
from repoman.perf.options import UsageError, describe
from repoman.perf.processes import Driver, InProcess, ProcessPool
from repoman.perf.progress import ProgressBar
from repoman.perf.report import (
    StepStats,
    error_summary,
    table_header,
    table_row,
    write_csv,
    write_json,
)

DEFAULT_DURATION_S = 5.0
LOOKUP_TIMEOUT_S = 10.0
REDRAW_EVERY_S = 0.2
PROCESS_START_SLACK_S = 0.05  # lets client processes receive a step before its window opens


def run(args: argparse.Namespace) -> int:
    """Run the sweep the parsed flags describe: 0 all answered, 1 some failed, 2 unusable."""
    try:
        target, bodies = asyncio.run(_prepare(args))
        # NOTE: the client processes fork here, between the two event loops, never inside one.
        driver: Driver
        if args.processes > 1:
            driver = ProcessPool(
                args.processes, target.infer_url, bodies, args.timeout, args.client
            )
        else:
            driver = InProcess(target.infer_url, bodies, args.timeout, args.client)
        try:
            return asyncio.run(_sweep(args, target, len(bodies), driver))
        finally:
            driver.close()
    except UsageError as exc:
        print(f"repoman perf: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nrepoman perf: interrupted", file=sys.stderr)
        return 130


def _duration(args: argparse.Namespace) -> float | None:
    return None if args.requests else (args.duration or DEFAULT_DURATION_S)


async def _prepare(args: argparse.Namespace) -> tuple[Target, list[Body]]:
    """Check the flags against the server: the model, its inputs, one decoded answer."""
    server = server_url(args.url)
    for path in (args.csv, args.json):
        if path is not None and not path.resolve().parent.is_dir():
            raise UsageError(f"cannot write {path}: no such directory")
    binary = args.tensor_format == "binary"
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=min(args.timeout, LOOKUP_TIMEOUT_S))
    ) as session:
        target = await fetch_target(session, server, args.model_name, args.model_version)
        bodies = build_bodies(target, args.input_data, args.batch_size, dict(args.shape), binary)
        await _check_first(session, target, bodies[0])
    return target, bodies


async def _check_first(session: aiohttp.ClientSession, target: Target, body: Body) -> None:
    """Send one request and decode its answer, so a wrong setup shows before the sweep."""
    try:
        async with session.post(target.infer_url, data=body.data, headers=body.headers) as resp:
            payload = await resp.read()
            status, length = resp.status, resp.headers.get(HEADER_LENGTH)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise UsageError(f"cannot reach {target.server}: {describe(exc)}") from None
    if status != 200:
        print(
            f"repoman perf: warning: the first request failed ({error_message(status, payload)}); "
            "measuring anyway, failures count as errors",
            file=sys.stderr,
        )
        return
    try:
        answer = orjson.loads(payload[: int(length)] if length else payload)
        if not isinstance(answer["outputs"], list):
            raise TypeError("'outputs' is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        print(f"repoman perf: warning: the first answer is not v2: {exc}", file=sys.stderr)


async def _show(bar: ProgressBar, driver: Driver, label: str, step: Step, warmup_s: float) -> None:
    started = time.perf_counter_ns()
    while True:
        now = time.perf_counter_ns()
        completed, failed = driver.progress()
        counts = f"{completed} done, {failed} errors"
        if now < step.window_start_ns:
            elapsed = (now - started) / 1e9
            bar.draw(label, elapsed / max(warmup_s, 1e-9), f"warm-up {elapsed:.1f}s")
        else:
            measured = (now - step.window_start_ns) / 1e9
            if step.requests:
                fraction = completed / step.requests
                bar.draw(label, fraction, f"{measured:.1f}s  {counts}")
            else:
                duration = step.duration_s or 1.0
                bar.draw(label, measured / duration, f"{measured:.1f}/{duration:g}s  {counts}")
        await asyncio.sleep(REDRAW_EVERY_S)


async def _measure(
    driver: Driver, bar: ProgressBar, label: str, step: Step, warmup_s: float
) -> StepResult:
    drawing = (
        asyncio.create_task(_show(bar, driver, label, step, warmup_s)) if bar.enabled else None
    )
    try:
        return await driver.run(step)
    finally:
        if drawing:
            drawing.cancel()
        bar.clear()


async def _sweep(args: argparse.Namespace, target: Target, distinct: int, driver: Driver) -> int:
    levels: list[int] = args.concurrency or [1]
    requests: int | None = args.requests
    duration = _duration(args)
    version = target.version or "the server's choice of version"
    window = f"{duration:g} s" if duration is not None else f"{requests} requests"
    print(
        f"{target.model} ({version}) at {target.server}: batch {args.batch_size}, "
        f"{args.tensor_format} tensors, {args.input_data} data ({distinct} distinct requests); "
        f"{window} per step after {args.warmup:g} s warm-up",
        flush=True,
    )
    print(table_header(), flush=True)
    bar = ProgressBar(sys.stderr, enabled=not args.no_progress and sys.stderr.isatty())
    steps: list[StepStats] = []
    messages: dict[str, int] = {}
    failed = 0
    for number, concurrency in enumerate(levels, start=1):
        slack = PROCESS_START_SLACK_S if args.processes > 1 else 0.0
        start = time.perf_counter_ns() + int((args.warmup + slack) * 1e9)
        step = Step(concurrency, start, duration, requests)
        label = f"step {number}/{len(levels)} c={concurrency}"
        result = await _measure(driver, bar, label, step, args.warmup)
        stats = StepStats.of(result, args.batch_size)
        steps.append(stats)
        print(table_row(stats), flush=True)
        failed += result.failed + result.failed_unmeasured
        for message, count in result.messages.items():
            messages[message] = messages.get(message, 0) + count

    settings: dict[str, Any] = {
        "model": target.model,
        "version": target.version,
        "url": str(target.server),
        "batch_size": args.batch_size,
        "tensor_format": args.tensor_format,
        "input_data": args.input_data,
        "warmup_s": args.warmup,
        "duration_s": duration,
        "requests_per_step": requests,
        "processes": args.processes,
        "client": args.client,
    }
    try:
        if args.csv:
            write_csv(args.csv, steps)
        if args.json:
            write_json(args.json, settings, steps)
    except OSError as exc:
        raise UsageError(f"cannot write the report: {exc}") from None
    if failed:
        unmeasured = failed - sum(stats.errors for stats in steps)
        aside = f" ({unmeasured} of them in warm-up or after a window)" if unmeasured else ""
        print(f"repoman perf: {failed} requests failed{aside}:", file=sys.stderr)
        print("\n".join(error_summary(messages)), file=sys.stderr)
        return 1
    return 0
