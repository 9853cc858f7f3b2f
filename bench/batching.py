"""Dynamic batching benchmark (issue #3): prints a table; it is not a timed test.

Generates the benchmark models (bench/make_models.py), measures raw onnxruntime throughput
in-process at batch sizes 1..32, then starts repoman (all four models) and the bare
aiohttp+onnxruntime handler (bench/bare_server.py, tiny only) on 127.0.0.1 and drives each
with Triton's perf_analyzer (closed loop, binary tensors) at each concurrency. Mean batch size
comes from the deltas of inference_count/execution_count in GET /v2/models/M/versions/1/stats
("n/a" where the endpoint is missing). Progress goes to stderr, the table to stdout.

Usage: .venv/bin/python bench/batching.py [--quick] [--concurrency 1 8 32 64] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import make_models  # noqa: E402  (a sibling script, not a package)

PERF_ANALYZER = ROOT / ".tools" / "perf_analyzer" / "bin" / "perf_analyzer"
BATCHES = (1, 2, 4, 8, 16, 32)
TICKS = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Server:
    """A server subprocess in its own session; its output is drained and the tail kept."""

    def __init__(self, name: str, cmd: list[str]) -> None:
        self.name, self.tail = name, deque(maxlen=40)
        self.port_seen = threading.Event()
        self.port: int | None = None
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.tail.append(line.rstrip())
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if match and self.port is None:
                self.port = int(match.group(1))
                self.port_seen.set()

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.port is not None and http_get(self.port, "/v2/health/ready")[0] == 200:
                return
            time.sleep(0.2)
        tail = "\n".join(self.tail)
        raise RuntimeError(f"{self.name} did not become ready (rc={self.proc.poll()}):\n{tail}")

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
        except (OSError, IndexError, ValueError):
            return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return 0, b""


def counts(port: int, model: str) -> tuple[int, int] | None:
    """(inference_count, execution_count) from the stats endpoint, or None if unavailable."""
    status, body = http_get(port, f"/v2/models/{model}/versions/1/stats")
    try:
        stats = json.loads(body)["model_stats"][0] if status == 200 else None
        return (int(stats["inference_count"]), int(stats["execution_count"])) if stats else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_ort(model_dir: Path, seconds: float) -> dict[int, float]:
    """Inferences/s of one in-process onnxruntime session (server's options) per batch size."""
    sess = make_models.session((model_dir / "1" / "model.onnx").read_bytes())
    return {b: b / make_models.measure(sess, b, seconds) for b in BATCHES}


def perf(port: int, model: str, conc: int, requests: int, timeout: float) -> dict:
    """One closed-loop perf_analyzer step; client numbers parsed from its report."""
    cmd = [
        str(PERF_ANALYZER),
        "-m",
        model,
        "-u",
        f"127.0.0.1:{port}",
        "-i",
        "http",
        "--concurrency-range",
        str(conc),
        "--measurement-mode",
        "count_windows",
        "--measurement-request-count",
        str(requests),
        "--max-trials",
        "3",
        "--stability-percentage",
        "1000",
    ]  # noisy shared box: take 3 windows, never "unstable"
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        out, rc = run.stdout + run.stderr, run.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode(errors="replace"), "timeout"
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - t0
    pa_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    report = out.rsplit("Request concurrency:", 1)[-1]
    found = {
        k: re.search(rf"{k}: ([0-9.]+)", report)
        for k in ("Throughput", "p50 latency", "p99 latency")
    }
    if not all(found.values()):
        log(f"  perf_analyzer failed (rc={rc}):\n{out[-2000:]}")
        return {"error": f"rc={rc}", "wall_s": wall}
    if rc != 0:  # e.g. its server-statistics checks abort after the client numbers are out
        why = re.search(r"what\(\):\s*(.*)", out)
        log(f"  perf_analyzer exit {rc} after its client report ({why and why.group(1)})")
    tput, p50, p99 = (float(m.group(1)) for m in found.values() if m)
    return {
        "infer_s": tput,
        "p50_ms": p50 / 1e3,
        "p99_ms": p99 / 1e3,
        "pa_rc": rc,
        "pa_cpu_pct": 100 * pa_cpu / wall,
        "wall_s": wall,
    }


def step(server: Server, model: str, conc: int, args: argparse.Namespace) -> dict:
    c0, cpu0, t0 = counts(server.port, model), server.cpu_seconds(), time.monotonic()
    row = perf(server.port, model, conc, args.requests, args.step_timeout)
    row["srv_cpu_pct"] = 100 * (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    c1 = counts(server.port, model)
    if c0 and c1 and c1[1] > c0[1]:
        row["mean_batch"] = (c1[0] - c0[0]) / (c1[1] - c0[1])
    return row


def fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None or v != v else format(v, spec)


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
        f"heavy c32  batching on / off throughput: {fmt(ratio, '.2f')}x "
        f"(target >= 3x)  {verdict(ratio and ratio >= 3)}"
    )
    vs_raw = get("heavy", "on", 32, "vs_raw")
    lines.append(
        f"heavy c32  batching on / raw ORT at mean batch "
        f"{fmt(get('heavy', 'on', 32, 'mean_batch'), '.1f')}: {fmt(vs_raw, '.0%')} "
        f"(target >= 60%)  {verdict(None if vs_raw is None else vs_raw >= 0.6)}"
    )
    for model in ("tiny", "heavy"):
        on, off = get(model, "on", 1, "p50_ms"), get(model, "off", 1, "p50_ms")
        delta = on - off if on is not None and off is not None else None
        lines.append(
            f"{model:5} c1   p50 on - off: {fmt(delta, '+.3f')} ms "
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
    names = {"off": "repoman-off", "on": "repoman-on", "bare": "bare"}
    for r in rows:
        bs = fmt(r.get("mean_batch"), ".2f")
        if "mean_batch" not in r and r["server"] != "on":
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
            fmt(r.get("srv_cpu_pct"), ".0f") + "%",
            fmt(r.get("pa_cpu_pct"), ".0f") + "%",
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
            cmd = [
                sys.executable,
                "-m",
                "repoman",
                "serve",
                "--model-repository",
                str(models),
                "--host",
                "127.0.0.1",
                "--http-port",
                "0",
                "--log-level",
                "warning",
            ]
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
            for server in servers:
                server.wait_ready()
            log(f"repoman on :{repoman.port}, bare handler on :{bare.port}")

            rows: list[dict] = []
            for model in ("tiny", "heavy"):
                for conc in args.concurrency:
                    plan = [("off", repoman, model), ("on", repoman, f"{model}_batched")]
                    if model == "tiny":
                        plan.append(("bare", bare, model))
                    for kind, server, name in plan:
                        log(f"{model} {kind} c{conc} ...")
                        row = {"model": model, "server": kind, "concurrency": conc}
                        row.update(step(server, name, conc, args))
                        bs = row.get("mean_batch", 1.0 if kind != "on" else None)
                        if bs is not None and "infer_s" in row:
                            row["raw_s"] = float(np.interp(bs, BATCHES, list(raw[model].values())))
                            row["vs_raw"] = row["infer_s"] / row["raw_s"]
                        log(
                            f"  {fmt(row.get('infer_s'), '.0f')} infer/s, p50 "
                            f"{fmt(row.get('p50_ms'), '.2f')} ms, mean batch "
                            f"{fmt(row.get('mean_batch'), '.2f')}"
                        )
                        rows.append(row)
        finally:
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
    main()
