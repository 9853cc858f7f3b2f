"""gRPC beside HTTP (issue #17): prints a table; it is not a timed test.

Generates the benchmark models (bench/make_models.py, the dynamically batched ``tiny`` and
``heavy``), starts one repoman serving both protocols on 127.0.0.1 and, beside it, the bare
baselines of bench/bare_grpc_server.py (a grpcio asyncio server answering a fixed response;
awaiting a future a worker thread resolves; running the model in the smallest batcher) and
bench/bare_batching_server.py (the same batcher behind aiohttp). perf_analyzer (closed loop,
binary tensors) drives each at each concurrency; rounds interleave the variants, so drift on
a shared machine falls on all alike, and each number is the median over rounds. Besides the
client's numbers, each row shows the mean batch the server ran and the server's own time per
request, from perf_analyzer's statistics report over the same windows. The last column is
throughput / repoman's HTTP in the same run (gRPC's target: not below 1.0 at c64). Progress
goes to stderr, the table to stdout.

perf_analyzer's gRPC client shares one connection among up to 6 of its concurrent workers
(TRITON_CLIENT_GRPC_CHANNEL_MAX_SHARE_COUNT, default 6: 11 connections at c64); --share sets it.

``cpu ms`` is the server process's CPU time per answered request over the step (client ramp
included, alike for all rows; with --http-workers > 1 it counts the core process only, so it
is left out). ``--compare NAME=DIR[@VAR=VALUE...]`` also runs repoman from another checkout
(a ``git worktree`` of another commit, say), with those variables set, in the same rounds:
its rows are ``NAME HTTP`` and ``NAME gRPC``; it is how issue #17's transports were weighed.

Usage: .venv/bin/python bench/grpc_vs_http.py [--concurrency 1 64] [--rounds N] [--requests N]
       [--http-workers N] [--no-baselines] [--share N] [--compare NAME=DIR[@VAR=VALUE...]]
       [--models-dir DIR] [--json FILE]
(make the models first where onnx is not installed: PYTHONPATH=<onnx> python
bench/make_models.py DIR --batching on --no-measure, then --models-dir DIR)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _load import PERF_ANALYZER, Server, free_port, log, run_perf  # noqa: E402

MODELS = ("tiny", "heavy")
BARE_GRPC = ("fixed", "thread", "batch")
"""bench/bare_grpc_server.py's modes, each a row (bare-fixed, bare-thread, bare-batch)."""


@dataclass(frozen=True)
class Variant:
    name: str
    protocol: str
    server: str
    """A key of the servers started for the model (repoman's serves every model)."""


REPOMAN = (Variant("repoman", "http", "repoman"), Variant("repoman", "grpc", "repoman"))
COMPARED: list[Variant] = []
"""--compare's repomans, each over both protocols."""
BASELINES = (
    *(Variant(f"bare-{mode}", "grpc", f"bare-{mode}") for mode in BARE_GRPC),
    Variant("bare-batch", "http", "bare-batch-http"),
)


class DualServer(Server):
    """A server with its gRPC port read from the log too."""

    def __init__(self, name: str, cmd: list[str], **how) -> None:
        self.grpc_port: int | None = None
        super().__init__(name, cmd, **how)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.tail.append(line.rstrip())
            found = re.search(r"listening on (http|grpc)://127\.0\.0\.1:(\d+)", line)
            if found and found.group(1) == "grpc" and self.grpc_port is None:
                self.grpc_port = int(found.group(2))
            elif found and self.port is None:
                self.port = int(found.group(2))

    def wait_grpc(self, timeout: float = 60.0) -> None:
        """Wait for the gRPC listening line (a bare gRPC server has no HTTP to ask)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.grpc_port is not None:
                return
            time.sleep(0.1)
        tail = "\n".join(self.tail)
        raise RuntimeError(f"{self.name} did not start (rc={self.proc.poll()}):\n{tail}")


def start_baselines(stack: ExitStack, models: Path, model: str) -> dict[str, DualServer]:
    """The bare servers for ``model``, stopped when ``stack`` closes."""
    servers: dict[str, DualServer] = {}
    folder = models / f"{model}_batched"
    for mode in BARE_GRPC:
        cmd = [sys.executable, str(BENCH / "bare_grpc_server.py"), str(folder)]
        cmd += [str(free_port()), "--mode", mode]
        server = servers[f"bare-{mode}"] = DualServer(f"bare-{mode}", cmd)
        stack.callback(server.stop)
        server.wait_grpc()
    cmd = [sys.executable, str(BENCH / "bare_batching_server.py"), str(folder)]
    cmd += [str(free_port()), "--mode", "pull"]
    server = servers["bare-batch-http"] = DualServer("bare-batch-http", cmd)
    stack.callback(server.stop)
    server.port = int(cmd[3])
    server.wait_ready()
    return servers


def start_repoman(name: str, models: Path, args, checkout: str | None = None) -> DualServer:
    """repoman serving both protocols; ``checkout``: ``DIR[@VAR=VALUE...]``, another checkout
    (its code and plugins first on the path) with those variables set."""
    cmd = [sys.executable, "-m", "repoman", "serve", "--model-repository", str(models)]
    cmd += ["--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0"]
    cmd += ["--http-workers", str(args.http_workers)]
    if checkout is None:
        return DualServer(name, cmd)
    folder, *variables = checkout.split("@")
    root = Path(folder).resolve()
    path = os.pathsep.join(filter(None, (str(root), str(root / "plugins"),
                                         os.environ.get("PYTHONPATH"))))
    env = dict(os.environ, PYTHONPATH=path, **dict(v.split("=", 1) for v in variables))
    return DualServer(name, cmd, cwd=root, env=env)


def step(server: DualServer, model: str, protocol: str, conc: int, args) -> dict:
    port = server.grpc_port if protocol == "grpc" else server.port
    cmd = [str(PERF_ANALYZER), "-m", model, "-u", f"127.0.0.1:{port}", "-i", protocol]
    cmd += f"--concurrency-range {conc} --measurement-mode count_windows -s 1000".split()
    cmd += f"--measurement-request-count {args.requests} --max-trials 3".split()
    cpu = server.cpu_seconds()
    row = run_perf(cmd, args.step_timeout)
    if args.http_workers == 1 and row.get("infer_s"):
        answered = row["infer_s"] * row["wall_s"]
        row["cpu_ms"] = 1e3 * (server.cpu_seconds() - cpu) / answered
    return row


KEYS = ("infer_s", "p50_ms", "p99_ms", "mean_batch", "server_ms", "cpu_ms")


def median(found: list[dict], key: str) -> float | None:
    values = [r[key] for r in found if r.get(key) is not None]
    return float(np.median(values)) if values else None


def label(variant: Variant) -> str:
    return f"{variant.name} {'gRPC' if variant.protocol == 'grpc' else 'HTTP'}"


def print_table(rows: list[dict]) -> None:
    print()
    print(f"{'model':6} {'conc':>4}  {'variant':17} {'infer/s':>8} {'p50 ms':>7} {'p99 ms':>7}  "
          f"{'batch':>5} {'server ms':>9} {'cpu ms':>6}  {'/ repoman HTTP':>14}")
    for r in rows:
        def f(key: str, spec: str, r: dict = r) -> str:
            value = r.get(key)
            return "n/a" if value is None else format(value, spec)

        print(f"{r['model']:6} {r['concurrency']:>4}  {r['variant']:17} {f('infer_s', '.0f'):>8} "
              f"{f('p50_ms', '.2f'):>7} {f('p99_ms', '.2f'):>7}  {f('mean_batch', '.1f'):>5} "
              f"{f('server_ms', '.2f'):>9} {f('cpu_ms', '.3f'):>6}  {f('vs_http', '.2f'):>14}")
    print("batch: the mean batch the server ran; server ms: its own mean time per request (from "
          "perf_analyzer's statistics report; n/a where the server keeps none); cpu ms: the "
          "server process's CPU per request")
    print()
    by = {(r["model"], r["concurrency"], r["variant"]): r.get("infer_s") for r in rows}

    def ratio(model: str, conc: int, top: str, bottom: str) -> str:
        a, b = by.get((model, conc, top)), by.get((model, conc, bottom))
        return f"{a / b:.2f}" if a and b else "n/a"

    for r in rows:
        if r["concurrency"] < 64 or not r["variant"].endswith(" gRPC"):
            continue
        model, conc, name = r["model"], r["concurrency"], r["variant"].removesuffix(" gRPC")
        if name not in {v.name for v in (*REPOMAN, *COMPARED)}:
            continue
        if name != "repoman":
            print(f"{model:5} c{conc}: {name} gRPC / {name} HTTP throughput "
                  f"{ratio(model, conc, f'{name} gRPC', f'{name} HTTP')}")
            continue
        if r.get("vs_http") is not None:
            verdict = "PASS" if r["vs_http"] >= 1.0 else "FAIL"
            print(f"{model:5} c{conc}: repoman gRPC / HTTP throughput {r['vs_http']:.2f} "
                  f"(target >= 1.0)  {verdict}")
        if ("bare-batch gRPC" in {k[2] for k in by}):
            print(f"{model:5} c{conc}: the same bare batcher, gRPC / HTTP: "
                  f"{ratio(model, conc, 'bare-batch gRPC', 'bare-batch HTTP')} (the transport)")
            print(f"{model:5} c{conc}: repoman gRPC / bare batcher gRPC: "
                  f"{ratio(model, conc, 'repoman gRPC', 'bare-batch gRPC')} (repoman's layers)")
            print(f"{model:5} c{conc}: bare fixed-answer gRPC / repoman HTTP: "
                  f"{ratio(model, conc, 'bare-fixed gRPC', 'repoman HTTP')} (grpcio's ceiling)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--http-workers", type=int, default=1,
                    help="repoman's front-end processes (each serves HTTP and gRPC)")
    ap.add_argument("--requests", type=int, default=1000,
                    help="requests per perf_analyzer measurement window")
    ap.add_argument("--no-baselines", action="store_true",
                    help="repoman alone (no bare servers)")
    ap.add_argument("--share", type=int, default=None, metavar="N",
                    help="perf_analyzer's gRPC workers per connection "
                    "(TRITON_CLIENT_GRPC_CHANNEL_MAX_SHARE_COUNT; its default is 6)")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=DIR[@VAR=VALUE...]",
                    help="also repoman from the checkout DIR with those variables set; "
                    "its rows are NAME HTTP and NAME gRPC (repeatable)")
    ap.add_argument("--step-timeout", type=float, default=180.0)
    ap.add_argument("--models-dir", type=Path, default=None,
                    help="an existing bench/make_models.py output (else generated)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    if not PERF_ANALYZER.exists():
        sys.exit(f"{PERF_ANALYZER} is missing: `make test` installs it")
    if args.share is not None:
        os.environ["TRITON_CLIENT_GRPC_CHANNEL_MAX_SHARE_COUNT"] = str(args.share)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the servers
    compared = dict(spec.split("=", 1) for spec in args.compare)
    COMPARED.extend(Variant(name, protocol, name) for name in compared
                    for protocol in ("http", "grpc"))
    variants = REPOMAN + tuple(COMPARED) + (() if args.no_baselines else BASELINES)

    found: dict[tuple[str, int, Variant], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="repoman-bench-") as tmp, ExitStack() as stack:
        models = args.models_dir or Path(tmp) / "models"
        if args.models_dir is None:
            log(f"generating models into {models}")
            subprocess.run(
                [sys.executable, str(BENCH / "make_models.py"), str(models), "--no-measure",
                 "--batching", "on"],
                check=True, stdout=subprocess.DEVNULL, timeout=300,
            )
        repomans = {"repoman": start_repoman("repoman", models, args)}
        repomans |= {name: start_repoman(name, models, args, checkout)
                     for name, checkout in compared.items()}
        for server in repomans.values():
            stack.callback(server.stop)
        for server in repomans.values():
            server.wait_ready()
        for model in MODELS:
            with ExitStack() as bare:
                servers = dict(repomans)
                if not args.no_baselines:
                    servers |= start_baselines(bare, models, model)
                for round_ in range(args.rounds):
                    for conc in args.concurrency:
                        for variant in variants if round_ % 2 == 0 else variants[::-1]:
                            log(f"{model} round {round_ + 1}/{args.rounds}: c{conc} "
                                f"{label(variant)}")
                            row = step(servers[variant.server], f"{model}_batched",
                                       variant.protocol, conc, args)
                            found.setdefault((model, conc, variant), []).append(row)
    rows = []
    for model in MODELS:
        for conc in args.concurrency:
            http = median(found.get((model, conc, REPOMAN[0]), []), "infer_s")
            for variant in variants:
                row: dict = {"model": model, "concurrency": conc, "variant": label(variant)}
                for key in KEYS:
                    row[key] = median(found.get((model, conc, variant), []), key)
                row["vs_http"] = row["infer_s"] / http if http and row["infer_s"] else None
                rows.append(row)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
