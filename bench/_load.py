"""Load-generation plumbing for bench/batching.py: server subprocesses, stats, perf_analyzer."""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PERF_ANALYZER = ROOT / ".tools" / "perf_analyzer" / "bin" / "perf_analyzer"
TICKS = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Server:
    """A server subprocess in its own session; its output is drained and the tail kept."""

    def __init__(
        self, name: str, cmd: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None
    ) -> None:
        self.name, self.tail = name, deque(maxlen=40)
        self.port: int | None = None
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
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
        cpu = cpu_seconds(self.proc.pid)
        return float("nan") if cpu is None else cpu

    def children_cpu_seconds(self) -> float:
        """CPU time of the server's live child processes (Python stubs, front-ends) together:
        a difference of two readings is theirs only while the same children live."""
        return sum(cpu for pid in children(self.proc.pid) if (cpu := cpu_seconds(pid)) is not None)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError, ValueError):
        return None


def children(pid: int) -> list[int]:
    """The pids of a process's children (a server's front-ends and Python stubs), from every
    thread's list."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(p) for p in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return sorted(found)


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


def perf(port: int, model: str, conc: int, requests: int, timeout: float) -> dict:
    """One closed-loop perf_analyzer step; client numbers parsed from its report."""
    # Noisy shared box: -s 1000 takes 3 windows and never gives up as "unstable".
    cmd = [str(PERF_ANALYZER), "-m", model, "-u", f"127.0.0.1:{port}", "-i", "http"]
    cmd += f"--concurrency-range {conc} --measurement-mode count_windows -s 1000".split()
    cmd += f"--measurement-request-count {requests} --max-trials 3".split()
    return run_perf(cmd, timeout)


def run_perf(cmd: list[str], timeout: float) -> dict:
    """Run a perf_analyzer command (bounded by ``timeout``); its client numbers and CPU."""
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        out, rc = run.stdout + run.stderr, run.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        out, rc = out or "", "timeout"
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
    row = {
        "infer_s": tput,
        "p50_ms": p50 / 1e3,
        "p99_ms": p99 / 1e3,
        "pa_rc": rc,
        "pa_cpu_pct": 100 * pa_cpu / wall,
        "wall_s": wall,
    }
    # The server's side of the same windows, where it answers ModelStatistics with them.
    server = {
        k: re.search(rf"{k}: ([0-9.]+)", report)
        for k in ("Inference count", "Execution count", "Avg request latency")
    }
    rows_, batches, latency = (m and float(m.group(1)) for m in server.values())
    if rows_ and batches:
        row["mean_batch"] = rows_ / batches
    if latency:
        row["server_ms"] = latency / 1e3
    return row
