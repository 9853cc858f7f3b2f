"""Dynamic batching benchmark (issue #3): prints a table; it is not a timed test.

Generates the benchmark models (bench/make_models.py), measures raw onnxruntime throughput
in-process at batch sizes 1..32, then starts repoman (all four models), the bare
aiohttp+onnxruntime handler (bench/bare_server.py, tiny only) and the bare batcher
(bench/bare_batching_server.py: that handler plus the smallest dynamic batcher, tiny and heavy)
on 127.0.0.1 and drives each
with Triton's perf_analyzer (closed loop, binary tensors) at each concurrency. Mean batch size
comes from the deltas of inference_count/execution_count in GET /v2/models/M/versions/1/stats
("n/a" where the endpoint is missing). Progress goes to stderr, the table to stdout.

Usage: .venv/bin/python bench/batching.py [--quick] [--concurrency 1 8 32 64] [--rounds N]
       [--json FILE]
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
import make_models  # noqa: E402  (sibling scripts, not a package)
from _load import PERF_ANALYZER, Server, counts, free_port, log, perf  # noqa: E402

BATCHES = (1, 2, 4, 8, 16, 32)


def raw_ort(model_dir: Path, seconds: float) -> dict[int, float]:
    """Inferences/s of one in-process onnxruntime session (server's options) per batch size."""
    sess = make_models.session((model_dir / "1" / "model.onnx").read_bytes())
    return {b: b / make_models.measure(sess, b, seconds) for b in BATCHES}


def step(server: Server, model: str, conc: int, args: argparse.Namespace) -> dict:
    c0, cpu0, t0 = counts(server.port, model), server.cpu_seconds(), time.monotonic()
    row = perf(server.port, model, conc, args.requests, args.step_timeout)
    row["srv_cpu_pct"] = 100 * (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    c1 = counts(server.port, model)
    if c0 and c1 and c1[1] > c0[1]:
        row["mean_batch"] = (c1[0] - c0[0]) / (c1[1] - c0[1])
    return row


def combine(model: str, kind: str, conc: int, found: list[dict], raw: dict[int, float]) -> dict:
    """One table row from a step's rounds: the median of each number (rounds interleave all
    servers, so drift on this shared machine falls on every server alike)."""
    row: dict = {"model": model, "server": kind, "concurrency": conc, "rounds": len(found)}
    for key in ("infer_s", "p50_ms", "p99_ms", "mean_batch", "srv_cpu_pct", "pa_cpu_pct"):
        values = [r[key] for r in found if r.get(key) is not None]
        if values:
            row[key] = float(np.median(values))
    bs = row.get("mean_batch", None if kind in ("on", "bbatch") else 1.0)
    if bs is not None and "infer_s" in row:
        row["raw_s"] = float(np.interp(bs, BATCHES, list(raw.values())))
        row["vs_raw"] = row["infer_s"] / row["raw_s"]
    return row


def fmt(v: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if v is None or v != v else format(v, spec) + unit


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def targets(rows: list[dict]) -> list[str]:
    def get(model: str, kind: str, conc: int, key: str) -> float | None:
        for r in rows:
            if (r["model"], r["server"], r["concurrency"]) == (model, kind, conc):
                return r.get(key)
        return None

    lines = []
    on, off = get("heavy", "on", 32, "infer_s"), get("heavy", "off", 32, "infer_s")
    ratio = on / off if on and off else None
    lines.append(
        f"heavy c32  batching on / off throughput: {fmt(ratio, '.2f', 'x')} "
        f"(target >= 3x)  {verdict(ratio and ratio >= 3)}"
    )
    vs_raw = get("heavy", "on", 32, "vs_raw")
    lines.append(
        f"heavy c32  batching on / raw ORT at mean batch "
        f"{fmt(get('heavy', 'on', 32, 'mean_batch'), '.1f')}: {fmt(vs_raw, '.0%')} "
        f"(target >= 60%)  {verdict(None if vs_raw is None else vs_raw >= 0.6)}"
    )
    ceiling = get("heavy", "bbatch", 32, "vs_raw")
    lines.append(
        f"heavy c32  bare batcher / raw ORT at its mean batch "
        f"{fmt(get('heavy', 'bbatch', 32, 'mean_batch'), '.1f')}: {fmt(ceiling, '.0%')} "
        "(the same stack with nothing but a batching thread: the ceiling here)"
    )
    for model, conc in (("heavy", 32), ("tiny", 64)):
        on, batcher = get(model, "on", conc, "infer_s"), get(model, "bbatch", conc, "infer_s")
        ratio = on / batcher if on and batcher else None
        lines.append(
            f"{model:5} c{conc:<3} repoman (on) / bare batcher: {fmt(ratio, '.0%')} "
            "(what repoman's layers cost against the smallest batcher)"
        )
    for model in ("tiny", "heavy"):
        on, off = get(model, "on", 1, "p50_ms"), get(model, "off", 1, "p50_ms")
        delta = on - off if on is not None and off is not None else None
        lines.append(
            f"{model:5} c1   p50 on - off: {fmt(delta, '+.3f', ' ms')} "
            f"(target < 0.5 ms)  {verdict(None if delta is None else delta < 0.5)}"
        )
    bare = get("tiny", "bare", 64, "infer_s")
    for kind in ("off", "on"):
        rep = get("tiny", kind, 64, "infer_s")
        ratio = rep / bare if rep and bare else None
        lines.append(
            f"tiny  c64  repoman ({kind:3}) / bare handler: {fmt(ratio, '.0%')} "
            f"(target >= 90%)  {verdict(None if ratio is None else ratio >= 0.9)}"
        )
    return lines


def print_table(rows: list[dict], raw: dict[str, dict[int, float]]) -> None:
    print("\nraw onnxruntime, in-process, 1 intra-op thread (inferences/s):")
    print("  model  " + "".join(f"{'b' + str(b):>9}" for b in BATCHES))
    for model, table in raw.items():
        print(f"  {model:6} " + "".join(f"{table[b]:>9.0f}" for b in BATCHES))
    head = (
        "model",
        "server",
        "conc",
        "infer/s",
        "p50 ms",
        "p99 ms",
        "mean bs",
        "raw ORT/s",
        "ratio",
        "srv CPU",
        "PA CPU",
    )
    widths = (6, 12, 5, 9, 8, 8, 8, 10, 6, 8, 7)
    print("\n" + "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    names = {"off": "repoman-off", "on": "repoman-on", "bare": "bare", "bbatch": "bare-batch"}
    for r in rows:
        bs = fmt(r.get("mean_batch"), ".2f")
        if "mean_batch" not in r and r["server"] not in ("on", "bbatch"):
            bs = "1*"
        cells = (
            r["model"],
            names[r["server"]],
            str(r["concurrency"]),
            fmt(r.get("infer_s"), ".0f"),
            fmt(r.get("p50_ms"), ".2f"),
            fmt(r.get("p99_ms"), ".2f"),
            bs,
            fmt(r.get("raw_s"), ".0f"),
            fmt(r.get("vs_raw"), ".0%"),
            fmt(r.get("srv_cpu_pct"), ".0f", "%"),
            fmt(r.get("pa_cpu_pct"), ".0f", "%"),
        )
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    print("* no dynamic batching: every request runs alone (batch 1 by construction)")
    print(
        "CPU columns: % of one core over the step (this machine has "
        f"{os.cpu_count()}); PA = perf_analyzer\n"
    )
    print("\n".join(targets(rows)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--quick", action="store_true", help="short smoke run (small windows)")
    ap.add_argument(
        "--requests",
        type=int,
        help="min requests per window (3 windows a step; default 1000, --quick 100)",
    )
    ap.add_argument(
        "--rounds", type=int, default=1, help="repeat every step N times, interleaved; medians"
    )
    ap.add_argument("--num-batch-threads", type=int, help="passed to repoman serve")
    ap.add_argument("--queue-delay-us", type=int, default=0, help="max_queue_delay (default 0)")
    ap.add_argument("--step-timeout", type=float, default=120.0, help="seconds per step")
    ap.add_argument("--models-dir", type=Path, help="where to generate models (default: temp)")
    ap.add_argument("--json", type=Path, help="also dump the raw numbers here")
    args = ap.parse_args()
    args.requests = args.requests or (100 if args.quick else 1000)
    if not PERF_ANALYZER.exists():
        sys.exit(f"{PERF_ANALYZER} is missing: `make test` installs it")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the servers

    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="repoman-bench-") as tmp:
        models = args.models_dir or Path(tmp) / "models"
        try:
            log(f"generating models into {models}")
            subprocess.run(
                [
                    sys.executable,
                    str(BENCH / "make_models.py"),
                    str(models),
                    "--no-measure",
                    "--queue-delay-us",
                    str(args.queue_delay_us),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                timeout=300,
            )
            raw = {}
            for model in ("tiny", "heavy"):
                log(f"raw onnxruntime throughput: {model}, batch {BATCHES}")
                raw[model] = raw_ort(models / model, 0.1 if args.quick else 0.5)
            cmd = [sys.executable, "-m", "repoman", "serve", "--model-repository", str(models)]
            cmd += ["--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "-1"]
            if args.num_batch_threads:
                cmd += ["--num-batch-threads", str(args.num_batch_threads)]
            repoman = Server("repoman", cmd)
            servers.append(repoman)
            port = free_port()
            bare = Server(
                "bare",
                [sys.executable, str(BENCH / "bare_server.py"), str(models / "tiny"), str(port)],
            )
            bare.port = port
            servers.append(bare)
            batchers = {}
            for model in ("tiny", "heavy"):
                port = free_port()
                batcher = Server(
                    f"bare batcher {model}",
                    [
                        sys.executable,
                        str(BENCH / "bare_batching_server.py"),
                        str(models / f"{model}_batched"),
                        str(port),
                    ],
                )
                batcher.port = port
                servers.append(batcher)
                batchers[model] = batcher
            for server in servers:
                server.wait_ready()
            log(f"repoman on :{repoman.port}, bare handler on :{bare.port}")

            measured: dict[tuple[str, str, int], list[dict]] = {}
            for round_number in range(1, args.rounds + 1):
                for model in ("tiny", "heavy"):
                    for conc in args.concurrency:
                        plan = [("off", repoman, model), ("on", repoman, f"{model}_batched")]
                        if model == "tiny":
                            plan.append(("bare", bare, model))
                        plan.append(("bbatch", batchers[model], f"{model}_batched"))
                        for kind, server, name in plan:
                            log(f"round {round_number}/{args.rounds}: {model} {kind} c{conc} ...")
                            row = step(server, name, conc, args)
                            log(
                                f"  {fmt(row.get('infer_s'), '.0f')} infer/s, p50 "
                                f"{fmt(row.get('p50_ms'), '.2f')} ms, mean batch "
                                f"{fmt(row.get('mean_batch'), '.2f')}"
                            )
                            measured.setdefault((model, kind, conc), []).append(row)
            rows = [
                combine(model, kind, conc, found, raw[model])
                for (model, kind, conc), found in measured.items()
            ]
        finally:
            if servers:
                log("stopping servers")
            for server in servers:
                server.stop()
    print_table(rows, raw)
    if args.json:
        settings = {k: str(v) for k, v in vars(args).items()}
        args.json.write_text(
            json.dumps(
                {"settings": settings, "raw_ort": raw, "rows": rows, "targets": targets(rows)},
                indent=2,
            )
        )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted (servers stopped)")
        sys.exit(130)
