"""gRPC beside HTTP (issue #17): prints a table; it is not a timed test.

Generates the benchmark models (bench/make_models.py, the dynamically batched ``tiny`` and
``heavy``), starts one repoman serving both protocols on 127.0.0.1, and drives each model
with Triton's perf_analyzer (closed loop, binary tensors) over HTTP and over gRPC at each
concurrency. Rounds interleave the two protocols, so drift on a shared machine falls on both
alike; each number is the median over rounds. The last column is gRPC / HTTP throughput
(target: not below 1.0 at c64). Progress goes to stderr, the table to stdout.

Usage: .venv/bin/python bench/grpc.py [--concurrency 1 64] [--rounds N] [--requests N]
       [--http-workers N] [--models-dir DIR] [--json FILE]
(make the models first where onnx is not installed: PYTHONPATH=<onnx> python
bench/make_models.py DIR --batching on --no-measure, then --models-dir DIR)
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _load import PERF_ANALYZER, Server, log, run_perf  # noqa: E402

MODELS = ("tiny", "heavy")
PROTOCOLS = ("http", "grpc")


class DualServer(Server):
    """repoman with its gRPC port read from the log too."""

    def __init__(self, name: str, cmd: list[str]) -> None:
        self.grpc_port: int | None = None
        super().__init__(name, cmd)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.tail.append(line.rstrip())
            found = re.search(r"listening on (http|grpc)://127\.0\.0\.1:(\d+)", line)
            if found and found.group(1) == "grpc" and self.grpc_port is None:
                self.grpc_port = int(found.group(2))
            elif found and self.port is None:
                self.port = int(found.group(2))


def step(server: DualServer, model: str, protocol: str, conc: int, args) -> dict:
    port = server.grpc_port if protocol == "grpc" else server.port
    cmd = [str(PERF_ANALYZER), "-m", model, "-u", f"127.0.0.1:{port}", "-i", protocol]
    cmd += f"--concurrency-range {conc} --measurement-mode count_windows -s 1000".split()
    cmd += f"--measurement-request-count {args.requests} --max-trials 3".split()
    return run_perf(cmd, args.step_timeout)


def median(found: list[dict], key: str) -> float | None:
    values = [r[key] for r in found if r.get(key) is not None]
    return float(np.median(values)) if values else None


def print_table(rows: list[dict]) -> None:
    print()
    print(f"{'model':6} {'conc':>4}  {'HTTP infer/s':>12} {'gRPC infer/s':>12}  "
          f"{'HTTP p50 ms':>11} {'gRPC p50 ms':>11}  {'HTTP p99 ms':>11} {'gRPC p99 ms':>11}  "
          f"{'gRPC/HTTP':>9}")
    for r in rows:
        def f(key: str, spec: str, r: dict = r) -> str:
            value = r.get(key)
            return "n/a" if value is None else format(value, spec)

        print(f"{r['model']:6} {r['concurrency']:>4}  {f('http_infer_s', '.0f'):>12} "
              f"{f('grpc_infer_s', '.0f'):>12}  {f('http_p50_ms', '.2f'):>11} "
              f"{f('grpc_p50_ms', '.2f'):>11}  {f('http_p99_ms', '.2f'):>11} "
              f"{f('grpc_p99_ms', '.2f'):>11}  {f('ratio', '.2f'):>9}")
    print()
    for r in rows:
        if r["concurrency"] >= 64 and r.get("ratio") is not None:
            verdict = "PASS" if r["ratio"] >= 1.0 else "FAIL"
            print(f"{r['model']:5} c{r['concurrency']}: gRPC / HTTP throughput "
                  f"{r['ratio']:.2f} (target >= 1.0)  {verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--http-workers", type=int, default=1,
                    help="repoman's front-end processes (each serves HTTP and gRPC)")
    ap.add_argument("--requests", type=int, default=1000,
                    help="requests per perf_analyzer measurement window")
    ap.add_argument("--step-timeout", type=float, default=180.0)
    ap.add_argument("--models-dir", type=Path, default=None,
                    help="an existing bench/make_models.py output (else generated)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    if not PERF_ANALYZER.exists():
        sys.exit(f"{PERF_ANALYZER} is missing: `make test` installs it")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the server

    with tempfile.TemporaryDirectory(prefix="repoman-bench-") as tmp:
        models = args.models_dir or Path(tmp) / "models"
        server = None
        try:
            if args.models_dir is None:
                log(f"generating models into {models}")
                subprocess.run(
                    [sys.executable, str(BENCH / "make_models.py"), str(models), "--no-measure",
                     "--batching", "on"],
                    check=True, stdout=subprocess.DEVNULL, timeout=300,
                )
            cmd = [sys.executable, "-m", "repoman", "serve", "--model-repository", str(models)]
            cmd += ["--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0"]
            cmd += ["--http-workers", str(args.http_workers)]
            server = DualServer("repoman", cmd)
            server.wait_ready()
            found: dict[tuple[str, int, str], list[dict]] = {}
            for round_ in range(args.rounds):
                for model in MODELS:
                    for conc in args.concurrency:
                        for protocol in PROTOCOLS if round_ % 2 == 0 else PROTOCOLS[::-1]:
                            log(f"round {round_ + 1}/{args.rounds}: {model} c{conc} {protocol}")
                            row = step(server, f"{model}_batched", protocol, conc, args)
                            found.setdefault((model, conc, protocol), []).append(row)
        finally:
            if server is not None:
                server.stop()
    rows = []
    for model in MODELS:
        for conc in args.concurrency:
            row: dict = {"model": model, "concurrency": conc}
            for protocol in PROTOCOLS:
                for key in ("infer_s", "p50_ms", "p99_ms"):
                    row[f"{protocol}_{key}"] = median(found.get((model, conc, protocol), []), key)
            http, grpc_ = row["http_infer_s"], row["grpc_infer_s"]
            row["ratio"] = grpc_ / http if http and grpc_ else None
            rows.append(row)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
