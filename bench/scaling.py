"""Front-end process scaling benchmark (issue #14): prints a table; it is not a timed test.

Generates the tiny and heavy models with dynamic batching on (bench/make_models.py) into a
temporary repository, measures raw onnxruntime in-process at batch sizes 1..32, then starts on
127.0.0.1 the bare aiohttp+onnxruntime handler (bench/bare_server.py with a request counter,
tiny only; once in one process and once in N processes sharing the port for every N > 1) and
one `repoman serve --http-workers N` per N (default 1, 2, 4, ... up to the cores), and drives
each with Triton's perf_analyzer (closed loop, binary tensors, 3 time windows) at each
concurrency. Per step it reads the stats endpoint (requests, mean batch) and /proc/<pid>/stat
of the core and of each front-end (the core's child processes), so it reports CPU % per
process kind and a cost model: CPU µs per request in the core and in the front-ends, against
the bare handler's. N=1 is the single-process server: its one process is the "core".
A front-end is judged against the bare handler in as many processes as there are front-ends
(``bare-N``): on a machine with fewer cores than busy processes, a process that is not saturated
wakes up for every few requests, and each wake-up costs CPU one saturated process does not pay;
the ratio to the one-process bare handler is printed beside it.

Progress goes to stderr, the table to stdout.

Usage: .venv/bin/python bench/scaling.py [--quick] [--workers 1 2 4] [--concurrency 64 256]
       [--rounds N] [--default-workers N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _load import PERF_ANALYZER, free_port, log  # noqa: E402  (sibling scripts, not a package)
from _scaling_load import (  # noqa: E402
    LoggedServer,
    children,
    per_request,
    perf,
    step,
)

try:
    from batching import BATCHES, fmt, raw_ort, verdict
except ModuleNotFoundError as missing:  # make_models.py needs onnx: the [models] extra
    sys.exit(f"{missing}: install the models extra (.venv/bin/pip install -e '.[models]')")

MODELS = ("tiny", "heavy")
CORE_TARGET_US = 40.0
CORE_TARGET_BATCH = 8.0
FRONTEND_TARGET = 1.2
REGRESSION_TOLERANCE = 0.95
"""'No regression': the default N's throughput is at least this share of N=1's (noise)."""


def default_workers() -> list[int]:
    cores = os.cpu_count() or 1
    found = [n for n in (2**i for i in range(12)) if n <= cores]
    return found + ([cores] if cores not in found else [])


def serve_default_workers() -> int:
    from repoman.cli.parser import build_parser

    return int(build_parser().parse_args(["serve"]).http_workers)


def make_repository(models: Path) -> None:
    log(f"generating models into {models}")
    cmd = [sys.executable, str(BENCH / "make_models.py"), str(models), "--no-measure"]
    cmd += ["--batching", "on", "--models", *MODELS]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=300)


def start_servers(models: Path, workers: list[int]) -> dict[str, LoggedServer]:
    """The counting bare handler (tiny) and one repoman per N, all ready."""
    servers: dict[str, LoggedServer] = {}
    port = free_port()
    bare_cmd = [sys.executable, str(BENCH / "_scaling_load.py"), str(models / "tiny_batched")]
    servers["bare"] = LoggedServer("bare", [*bare_cmd, str(port)])
    servers["bare"].port = port
    for n in workers:
        if n > 1:  # NOTE: named "bare" too: that is how the step reads its request counter
            port = free_port()
            servers[f"bare-{n}"] = LoggedServer("bare", [*bare_cmd, str(port), str(n)])
            servers[f"bare-{n}"].port = port
    for n in workers:
        cmd = [sys.executable, "-m", "repoman", "serve", "--model-repository", str(models)]
        cmd += ["--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "-1"]
        cmd += ["--http-workers", str(n)]
        servers[f"repoman-{n}"] = LoggedServer(f"repoman-{n}", cmd)
    return servers


def wait_frontends(server: LoggedServer, count: int, timeout: float = 60.0) -> list[int]:
    """The core's front-end pids, once there are ``count`` of them (none for N=1)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = children(server.proc.pid) if count > 1 else []
        if len(pids) >= (count if count > 1 else 0) or time.monotonic() > deadline:
            return pids
        time.sleep(0.2)


def warm_up(server: LoggedServer, model: str, args: argparse.Namespace) -> None:
    """One short window so the first measured window is not the cold one (numbers dropped)."""
    perf(server.port, model, 16, 300, args.step_timeout)


KEYS = (
    "infer_s",
    "p50_ms",
    "p99_ms",
    "mean_batch",
    "core_cpu_pct",
    "fe_cpu_pct",
    "fe_max_pct",
    "pa_cpu_pct",
    "core_us",
    "loop_us",
    "fe_us",
)


def combine(model: str, server: str, conc: int, found: list[dict], raw: dict[int, float]) -> dict:
    """One row from a step's rounds: the median of each number (rounds interleave servers)."""
    row: dict = {"model": model, "server": server, "concurrency": conc, "rounds": len(found)}
    for key in KEYS:
        values = [r[key] for r in found if r.get(key) is not None]
        if values:
            row[key] = float(np.median(values))
    row["failed"] = sum(r.get("failed", 0) for r in found)
    row["errors"] = [r["error"] for r in found if "error" in r]
    row["frontends_changed"] = [r["frontends_changed"] for r in found if "frontends_changed" in r]
    row["pa_exit"] = [r["pa_rc"] for r in found if r.get("pa_rc") not in (0, None)]
    row["workers"] = int(server.split("-")[1]) if server.startswith("repoman") else None
    bs = row.get("mean_batch", 1.0 if server.startswith("bare") else None)
    if bs is not None:
        row["raw_s"] = float(np.interp(bs, BATCHES, list(raw.values())))
        row["ort_us"] = 1e6 / row["raw_s"]  # one sample's compute at this batch size
        if "infer_s" in row:
            row["vs_raw"] = row["infer_s"] / row["raw_s"]
        if "core_us" in row and row["workers"]:
            row["core_net_us"] = row["core_us"] - row["ort_us"]
    return row


def fold_processes(row: dict) -> None:
    """A bare handler in several processes is one server: its CPU is all of theirs (the
    parent only waits; the handlers are its children, which the step counts as front-ends)."""
    for unit in ("us", "cpu_pct"):
        if f"fe_{unit}" in row:
            row[f"core_{unit}"] = row.get(f"core_{unit}", 0.0) + row.pop(f"fe_{unit}")
    row.pop("fe_max_pct", None)


def bare_processes(server: str) -> int:
    """How many processes a bare handler row ran in (``bare``: 1, ``bare-N``: N)."""
    return int(server.split("-")[1]) if server.startswith("bare-") else 1


def find(rows: list[dict], model: str, server: str, conc: int) -> dict:
    for r in rows:
        if (r["model"], r["server"], r["concurrency"]) == (model, server, conc):
            return r
    return {}


def add_ratios(rows: list[dict]) -> None:
    for r in rows:
        one = find(rows, r["model"], "repoman-1", r["concurrency"]).get("infer_s")
        bare = find(rows, "tiny", "bare", r["concurrency"])
        if r.get("infer_s") and one and r["server"] != "bare":
            r["vs_n1"] = r["infer_s"] / one
        if r.get("infer_s") and bare.get("infer_s") and r["model"] == "tiny":
            r["vs_bare"] = r["infer_s"] / bare["infer_s"]
        if r.get("fe_us") and bare.get("core_us"):
            r["fe_vs_bare"] = r["fe_us"] / bare["core_us"]
        alike = find(rows, "tiny", f"bare-{r.get('workers')}", r["concurrency"])
        if r.get("fe_us") and alike.get("core_us"):
            r["fe_vs_bare_n"] = r["fe_us"] / alike["core_us"]
        total = (r.get("core_us") or 0) + (r.get("fe_us") or 0)
        if "core_us" in r and bare.get("core_us"):
            r["total_us"] = total
            r["total_vs_bare"] = total / bare["core_us"]


def has_frontends(row: dict) -> bool:
    return (row.get("workers") or 0) > 1


def print_raw(raw: dict[str, dict[int, float]]) -> None:
    print("\nraw onnxruntime, in-process, 1 intra-op thread (inferences/s):")
    print("  model  " + "".join(f"{'b' + str(b):>9}" for b in BATCHES))
    for model, table in raw.items():
        print(f"  {model:6} " + "".join(f"{table[b]:>9.0f}" for b in BATCHES))


def print_rows(head: tuple, widths: tuple, lines: list[tuple]) -> None:
    print("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    for cells in lines:
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))


def print_throughput(rows: list[dict]) -> None:
    head = ("model", "server", "conc", "infer/s", "p50 ms", "p99 ms", "mean bs", "core CPU")
    head += ("FE CPU", "FE max", "PA CPU", "x N=1", "/bare", "/raw")
    widths = (6, 10, 5, 8, 8, 8, 7, 8, 7, 6, 6, 6, 6, 6)
    lines = [
        (
            r["model"],
            r["server"],
            str(r["concurrency"]),
            fmt(r.get("infer_s"), ".0f"),
            fmt(r.get("p50_ms"), ".2f"),
            fmt(r.get("p99_ms"), ".2f"),
            "1*" if r["server"].startswith("bare") else fmt(r.get("mean_batch"), ".2f"),
            fmt(r.get("core_cpu_pct"), ".0f", "%"),
            fmt(r.get("fe_cpu_pct"), ".0f", "%") if has_frontends(r) else "-",
            fmt(r.get("fe_max_pct"), ".0f", "%") if has_frontends(r) else "-",
            fmt(r.get("pa_cpu_pct"), ".0f", "%"),
            fmt(r.get("vs_n1"), ".2f", "x"),
            fmt(r.get("vs_bare"), ".0%"),
            fmt(r.get("vs_raw"), ".0%"),
        )
        for r in rows
    ]
    print()
    print_rows(head, widths, lines)
    print("* the bare handler runs every request alone (batch 1 by construction)")
    print(
        f"CPU columns: % of one core over the step (this machine has {os.cpu_count()}); "
        "core = the core process (for N=1 and bare: the one process); FE = all front-ends "
        "together, FE max = the busiest one; PA = perf_analyzer. x N=1: throughput against "
        "N=1 (same model, concurrency); /bare: against the bare handler (tiny); /raw: against "
        "raw onnxruntime at the row's mean batch"
    )


def print_cost_model(rows: list[dict]) -> None:
    print("\nCOST MODEL: CPU µs per request served (process CPU delta / requests in the step)")
    head = ("model", "server", "conc", "mean bs", "core µs", "ORT µs", "core-ORT", "loop µs")
    head += ("FE µs", "FE/bare", "FE/bare-N", "total µs", "total/bare")
    widths = (6, 10, 5, 7, 8, 7, 8, 7, 7, 7, 9, 8, 10)
    lines = [
        (
            r["model"],
            r["server"],
            str(r["concurrency"]),
            "1*" if r["server"].startswith("bare") else fmt(r.get("mean_batch"), ".2f"),
            fmt(r.get("core_us"), ".0f"),
            fmt(r.get("ort_us"), ".0f"),
            fmt(r.get("core_net_us"), ".0f"),
            fmt(r.get("loop_us"), ".0f") if not r["server"].startswith("bare") else "-",
            fmt(r.get("fe_us"), ".0f") if has_frontends(r) else "-",
            fmt(r.get("fe_vs_bare"), ".2f", "x"),
            fmt(r.get("fe_vs_bare_n"), ".2f", "x"),
            fmt(r.get("total_us"), ".0f"),
            fmt(r.get("total_vs_bare"), ".2f", "x"),
        )
        for r in rows
    ]
    print_rows(head, widths, lines)
    print(
        "core µs: the core process (N=1, bare: the one process); ORT µs: raw onnxruntime's "
        "time for one sample at the row's mean batch; core-ORT: the core's own overhead; "
        "loop µs: the core's event-loop thread alone (everything but the batches run on worker "
        "threads; a model quick enough to run on the loop has its compute in it); "
        "FE µs: all front-ends' CPU / requests (each request crosses exactly one front-end); "
        "bare = the tiny bare handler at the same concurrency (it includes tiny's compute); "
        "bare-N: the same in N processes sharing the port, all of their CPU (FE/bare-N: a "
        "front-end against it, at the row's N). "
        "ORT µs is measured alone: under load compute runs slower, so core-ORT overstates; "
        "the core's own CPU is judged by the smaller of core-ORT and loop µs (loop µs leaves "
        "out the workers' few µs per batch around onnxruntime)"
    )


def targets(rows: list[dict], default: int) -> list[str]:
    lines = []
    for r in rows:
        if not r.get("workers") or r["workers"] < 2:
            continue
        name = f"{r['model']:5} c{r['concurrency']:<3} N={r['workers']:<2}"
        bs = r.get("mean_batch")
        own = [v for v in (r.get("core_net_us"), r.get("loop_us")) if v is not None]
        net = min(own) if own else None
        ok = None if bs is None or net is None or bs < CORE_TARGET_BATCH else net <= CORE_TARGET_US
        why = "" if bs is None or bs >= CORE_TARGET_BATCH else " (mean batch < 8: not judged)"
        lines.append(
            f"{name} core's own CPU/request: {fmt(net, '.0f', ' µs')} (net of ORT "
            f"{fmt(r.get('core_net_us'), '.0f', ' µs')}, loop thread "
            f"{fmt(r.get('loop_us'), '.0f', ' µs')}, gross "
            f"{fmt(r.get('core_us'), '.0f', ' µs')}) at mean batch {fmt(bs, '.1f')} "
            f"(target <= {CORE_TARGET_US:.0f} µs at mean batch >= 8)  {verdict(ok)}{why}"
        )
    for r in rows:
        if not r.get("workers") or r["workers"] < 2:
            continue
        name = f"{r['model']:5} c{r['concurrency']:<3} N={r['workers']:<2}"
        ratio = r.get("fe_vs_bare_n")
        lines.append(
            f"{name} front-end CPU/request / bare handler's in {r['workers']} processes: "
            f"{fmt(ratio, '.2f', 'x')} (one process: {fmt(r.get('fe_vs_bare'), '.2f', 'x')}; "
            f"target <= {FRONTEND_TARGET}x)  "
            f"{verdict(None if ratio is None else ratio <= FRONTEND_TARGET)}"
        )
    if default == 1:
        lines.append(
            "default N (repoman serve --http-workers) is 1: N=1 itself, no regression to judge "
            "(--default-workers N judges another N)  n/a"
        )
        return lines
    for model, conc in dict.fromkeys((r["model"], r["concurrency"]) for r in rows):
        name = f"{model:5} c{conc:<3}"
        ratio = find(rows, model, f"repoman-{default}", conc).get("vs_n1")
        lines.append(
            f"{name} default N={default} / N=1 throughput: {fmt(ratio, '.2f', 'x')} "
            f"(target >= {REGRESSION_TOLERANCE}x: no regression)  "
            f"{verdict(None if ratio is None else ratio >= REGRESSION_TOLERANCE)}"
        )
    return lines


def problems(rows: list[dict], servers: dict[str, LoggedServer]) -> list[str]:
    """What looked wrong: failed requests, perf_analyzer errors, restarts, error log lines."""
    found = []
    for r in rows:
        name = f"{r['model']} {r['server']} c{r['concurrency']}"
        if r["failed"]:
            found.append(f"{name}: {r['failed']} failed requests (stats endpoint)")
        found += [f"{name}: perf_analyzer {e}" for e in r["errors"]]
        found += [f"{name}: perf_analyzer exit {rc} after its report" for rc in r["pa_exit"]]
        found += [f"{name}: front-end pids changed {c}" for c in r["frontends_changed"]]
    for server in servers.values():
        found += [f"{server.name} log: {line}" for line in server.errors[:10]]
        if len(server.errors) > 10:
            found.append(f"{server.name} log: ... {len(server.errors) - 10} more error lines")
    return found


def measure_all(servers: dict[str, LoggedServer], args: argparse.Namespace) -> dict:
    measured: dict[tuple[str, str, int], list[dict]] = {}
    for round_number in range(1, args.rounds + 1):
        for model in MODELS:
            for conc in args.concurrency:
                plan = [("bare", 0)] if model == "tiny" else []
                plan += [(f"bare-{n}", n) for n in args.workers if n > 1 and model == "tiny"]
                plan += [(f"repoman-{n}", n) for n in args.workers]
                for name, workers in plan:
                    log(f"round {round_number}/{args.rounds}: {model} {name} c{conc} ...")
                    server = servers[name]
                    row = step(
                        server, workers, f"{model}_batched", conc, args.window_ms, args.step_timeout
                    )
                    per_request(row)
                    if name.startswith("bare"):
                        fold_processes(row)
                    log(
                        f"  {fmt(row.get('infer_s'), '.0f')} infer/s, p50 "
                        f"{fmt(row.get('p50_ms'), '.2f')} ms, mean batch "
                        f"{fmt(row.get('mean_batch'), '.2f')}, core "
                        f"{fmt(row.get('core_cpu_pct'), '.0f', '%')}, front-ends "
                        f"{row.get('fe_each_pct', '-')} %"
                    )
                    measured.setdefault((model, name, conc), []).append(row)
    return measured


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=default_workers())
    ap.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--quick", action="store_true", help="short smoke run (1 s windows)")
    ap.add_argument("--window-ms", type=int, help="perf_analyzer window (default 5000, quick 1000)")
    ap.add_argument(
        "--rounds", type=int, default=1, help="repeat every step N times, interleaved; medians"
    )
    ap.add_argument(
        "--default-workers",
        type=int,
        help="the N judged for 'no regression' (default: repoman serve's --http-workers default)",
    )
    ap.add_argument("--step-timeout", type=float, help="seconds per step (default 4 windows + 60)")
    ap.add_argument("--json", type=Path, help="also dump the raw numbers here")
    args = ap.parse_args()
    args.window_ms = args.window_ms or (1000 if args.quick else 5000)
    args.step_timeout = args.step_timeout or 4 * args.window_ms / 1000 + 60
    args.workers = sorted(set(args.workers) | {1})  # N=1 is every ratio's reference
    if args.default_workers is None:
        args.default_workers = serve_default_workers()
    return args


def run(args: argparse.Namespace, models: Path) -> tuple[list[dict], dict, list[str]]:
    make_repository(models)
    raw = {}
    for model in MODELS:
        log(f"raw onnxruntime throughput: {model}, batch {BATCHES}")
        raw[model] = raw_ort(models / f"{model}_batched", 0.1 if args.quick else 0.5)
    servers = start_servers(models, args.workers)
    try:
        for name, server in servers.items():
            server.wait_ready()
            bare = name.startswith("bare")
            workers = bare_processes(name) if bare else int(name.split("-")[1])
            pids = wait_frontends(server, workers)
            log(f"{name} on :{server.port} (pid {server.proc.pid}, front-ends {pids or '-'})")
            for model in ("tiny",) if bare else MODELS:
                warm_up(server, f"{model}_batched", args)
        measured = measure_all(servers, args)
        rows = [
            combine(model, name, conc, found, raw[model])
            for (model, name, conc), found in measured.items()
        ]
    finally:
        log("stopping servers")
        for server in servers.values():
            server.stop()
    add_ratios(rows)
    return rows, raw, problems(rows, servers)


def main() -> None:
    args = parse_args()
    if not PERF_ANALYZER.exists():
        sys.exit(f"{PERF_ANALYZER} is missing: `make test` installs it")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the servers
    with tempfile.TemporaryDirectory(prefix="repoman-scaling-") as tmp:
        rows, raw, trouble = run(args, Path(tmp) / "models")
    print_raw(raw)
    print_throughput(rows)
    print_cost_model(rows)
    print(f"\nTARGETS (default --http-workers: {args.default_workers})")
    print("\n".join(targets(rows, args.default_workers)))
    print("\nPROBLEMS SEEN: " + ("none" if not trouble else ""))
    for line in trouble:
        print(f"  {line}")
    if args.json:
        settings = {k: str(v) for k, v in vars(args).items()}
        dump = {"settings": settings, "raw_ort": raw, "rows": rows, "problems": trouble}
        dump["targets"] = targets(rows, args.default_workers)
        args.json.write_text(json.dumps(dump, indent=2))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted (servers stopped)")
        sys.exit(130)
