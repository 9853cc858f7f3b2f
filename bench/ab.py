"""A/B benchmark: repoman from two (or more) checkouts side by side, and the bare handler.

Each variant is ``NAME=CHECKOUT[:HTTP_WORKERS]``: the server is that checkout's code (its
``repoman/`` and ``plugins/`` first on the path, run with ``python -P`` so the current
directory cannot shadow them), started on 127.0.0.1 with the generated tiny and heavy models
(bench/make_models.py, with and without dynamic batching). Every round drives each server in
turn with Triton's perf_analyzer (closed loop, binary tensors), so drift on a shared machine
falls on all of them alike; the table gives the median of the rounds: throughput, p50, CPU µs
per request of the core and of the front-ends (from /proc), and the ratios to the bare
handler (bench/bare_server.py with a counter) measured in the same rounds.

``--bare-processes N`` runs the bare handler in N processes sharing the port, the fair yardstick
for N front-ends: on a machine with fewer cores than busy processes, a process that is not
saturated wakes up for every few requests, and every wake-up costs CPU that one saturated
process does not pay.

Usage: .venv/bin/python bench/ab.py base=../main new=. [--model tiny] [--concurrency 64]
       [--rounds 3] [--window-ms 3000] [--no-bare] [--bare-processes 1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _load import free_port, log  # noqa: E402  (sibling scripts, not a package)
from _scaling_load import LoggedServer, per_request, perf, step  # noqa: E402

NUMBERS = ("infer_s", "p50_ms", "core_us", "fe_us")


class Variant:
    def __init__(self, name: str, server: LoggedServer, workers: int, bare: bool = False) -> None:
        self.name, self.server, self.workers, self.bare = name, server, workers, bare
        self.rows: list[dict] = []


def start_repoman(name: str, spec: str, models: Path) -> Variant:
    checkout, _, workers = spec.partition(":")
    root = Path(checkout).resolve()
    if not (root / "repoman" / "__init__.py").is_file():
        raise SystemExit(f"{name}={spec}: {root} is not a repoman checkout")
    count = int(workers or 1)
    cmd = [
        "env",
        f"PYTHONPATH={root}:{root / 'plugins'}",
        sys.executable,
        "-P",
        "-m",
        "repoman",
        "serve",
        "--model-repository",
        str(models),
        "--host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--grpc-port",
        str(free_port()),
        "--http-workers",
        str(count),
    ]
    # NOTE: run from the checkout: a front-end of a checkout from before front-ends were
    # started with -P imports repoman from its current folder (python -m), which must be its own
    return Variant(name, LoggedServer(name, cmd, cwd=root), count)


def start_bare(models: Path, model: str, processes: int) -> Variant:
    port = free_port()
    script = str(BENCH / "_scaling_load.py")
    cmd = [sys.executable, script, str(models / model), str(port), str(processes)]
    server = LoggedServer("bare", cmd)
    server.port = port
    # NOTE: in several processes, the handlers are the parent's children (counted as FE)
    return Variant("bare" if processes == 1 else f"bare-x{processes}", server, processes, True)


def median(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if row.get(key) is not None]
    return statistics.median(values) if values else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", help="NAME=CHECKOUT[:HTTP_WORKERS]")
    ap.add_argument("--model", default="tiny", help="tiny, heavy, tiny_batched, heavy_batched")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window-ms", type=int, default=3000)
    ap.add_argument("--no-bare", action="store_true", help="no bare handler (it serves tiny)")
    ap.add_argument(
        "--bare-processes",
        type=int,
        nargs="+",
        default=[1],
        help="the bare handler's processes (several: one bare variant each)",
    )
    args = ap.parse_args()
    bare_model = args.model.removesuffix("_batched")
    with tempfile.TemporaryDirectory(prefix="repoman-ab-") as tmp:
        models = Path(tmp)
        log("generating the models")
        subprocess.run(
            [sys.executable, str(BENCH / "make_models.py"), str(models), "--no-measure"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        variants = [start_repoman(*v.split("=", 1), models) for v in args.variants]
        if not args.no_bare and bare_model == "tiny":
            variants += [start_bare(models, bare_model, n) for n in args.bare_processes]
        try:
            for variant in variants:
                variant.server.wait_ready()
            for variant in variants:  # NOTE: warm-up, not measured
                perf(variant.server.port, bare_model if variant.bare else args.model, 16, 1000, 60)
            for number in range(args.rounds):
                for variant in variants:
                    model = bare_model if variant.bare else args.model
                    row = step(
                        variant.server,
                        variant.workers,
                        model,
                        args.concurrency,
                        args.window_ms,
                        120,
                    )
                    per_request(row)
                    variant.rows.append(row)
                    log(
                        f"round {number + 1}/{args.rounds} {variant.name}: "
                        f"{row.get('infer_s')} infer/s, core {row.get('core_us')} µs/request"
                    )
        finally:
            for variant in variants:
                variant.server.stop()
    report(variants, args)
    return 0


def report(variants: list[Variant], args: argparse.Namespace) -> None:
    print(
        f"\n{args.model} at c{args.concurrency}, binary tensors; medians of {args.rounds} "
        "rounds (each round drives every server in turn)"
    )
    print(
        f"{'variant':>10} {'infer/s':>9} {'p50 ms':>8} {'core µs':>8} {'FE µs':>7} "
        f"{'/bare thr':>9} {'/bare CPU':>9}"
    )
    bares = {v.workers: v for v in variants if v.bare}
    first = next(iter(bares.values()), None)

    def total_cpu(variant: Variant) -> float:
        return (median(variant.rows, "core_us") or 0) + (median(variant.rows, "fe_us") or 0)

    for variant in variants:
        m = {key: median(variant.rows, key) for key in NUMBERS}
        total = total_cpu(variant)
        # NOTE: against the bare handler in as many processes, where there is one
        bare = bares.get(variant.workers, first)
        base_thr = median(bare.rows, "infer_s") if bare else None
        base_cpu = total_cpu(bare) if bare else None

        def cell(value: float | None, fmt: str) -> str:
            width = int(fmt.split(".")[0])
            return format(value, fmt) if value is not None else f"{'n/a':>{width}}"

        thr_ratio = m["infer_s"] / base_thr if base_thr and m["infer_s"] else None
        cpu_ratio = total / base_cpu if base_cpu and total else None
        print(
            f"{variant.name:>10} {cell(m['infer_s'], '9.0f')} {cell(m['p50_ms'], '8.2f')} "
            f"{cell(m['core_us'], '8.1f')} {cell(m['fe_us'], '7.1f')} "
            f"{cell(thr_ratio, '9.0%')} {cell(cpu_ratio, '8.2f')}x"
        )
    if first:
        print(
            "/bare: against the bare handler (tiny, one request per run) in the same rounds, "
            "in as many processes as the variant has front-ends where it ran so (else the first)"
        )


if __name__ == "__main__":
    sys.exit(main())
