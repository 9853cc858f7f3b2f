"""Plumbing for bench/scaling.py: a thread's CPU from /proc (a process's, and its children,
come from _load), the stats endpoint, a time-bounded perf_analyzer step, and the counting
bare handler.

Run as a script it is the bare handler (bench/bare_server.py, unchanged) with one counting
middleware and ``GET /bench/served`` (POSTs answered so far), so its CPU per request can be
computed like repoman's: ``python bench/_scaling_load.py MODEL_DIR PORT [PROCESSES]``. With
PROCESSES > 1 it forks that many handlers sharing the port (``SO_REUSEPORT``, as repoman's
front-ends do) under an idle parent; each counts into its own slot of a shared array and
``/bench/served`` answers their sum, whichever process takes the connection.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from _load import PERF_ANALYZER, TICKS, Server, children, cpu_seconds, http_get, log, run_perf


class LoggedServer(Server):
    """A Server that also keeps every error line its process (and its children) printed."""

    def __init__(self, name: str, cmd: list[str], **kwargs: Any) -> None:
        self.errors: list[str] = []
        super().__init__(name, cmd, **kwargs)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip()
            self.tail.append(line)
            if re.search(r"\b(ERROR|CRITICAL|Traceback)\b", line):
                self.errors.append(line)
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if match and self.port is None:
                self.port = int(match.group(1))


def thread_cpu_seconds(pid: int, tid: int) -> float | None:
    """utime + stime of one thread of a process (``tid == pid``: its main thread, the one
    running the event loop), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError, ValueError):
        return None


def cpu_snapshot(pids: list[int]) -> dict[int, float]:
    return {pid: cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None}


def model_stats(port: int, model: str) -> dict[str, int] | None:
    """Counters of version 1 from the stats endpoint, or None if unavailable."""
    status, body = http_get(port, f"/v2/models/{model}/versions/1/stats")
    try:
        stats = json.loads(body)["model_stats"][0] if status == 200 else None
        if not stats:
            return None
        infer = stats["inference_stats"]
        return {
            "inferences": int(stats["inference_count"]),
            "executions": int(stats["execution_count"]),
            "success": int(infer["success"]["count"]),
            "fail": int(infer["fail"]["count"]),
        }
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def served(port: int) -> int | None:
    """Requests the counting bare handler answered so far."""
    status, body = http_get(port, "/bench/served")
    try:
        return int(json.loads(body)["served"]) if status == 200 else None
    except (ValueError, KeyError, TypeError):
        return None


def perf(port: int, model: str, conc: int, window_ms: int, timeout: float) -> dict:
    """One closed-loop perf_analyzer step in time windows (3 of ``window_ms``; -s 1000 never
    gives up as "unstable" on this noisy machine), binary tensors both ways."""
    cmd = [str(PERF_ANALYZER), "-m", model, "-u", f"127.0.0.1:{port}", "-i", "http"]
    cmd += f"--concurrency-range {conc} --measurement-mode time_windows -p {window_ms}".split()
    cmd += ["-s", "1000", "--max-trials", "3"]
    cmd += ["--input-tensor-format", "binary", "--output-tensor-format", "binary"]
    return run_perf(cmd, timeout)


def step(
    server: LoggedServer, workers: int, model: str, conc: int, window_ms: int, timeout: float
) -> dict:
    """One perf_analyzer step with the CPU of every process (and of the core's event-loop
    thread) and the request counters around it; ``per_request`` turns them into µs."""
    core = server.proc.pid
    frontends = children(core) if workers > 1 else []
    before_stats = requests_so_far(server, model)
    loop_before = thread_cpu_seconds(core, core)
    before, t0 = cpu_snapshot([core, *frontends]), time.monotonic()
    row = perf(server.port, model, conc, window_ms, timeout)
    after, wall = cpu_snapshot([core, *frontends]), time.monotonic() - t0
    loop_after = thread_cpu_seconds(core, core)
    if loop_before is not None and loop_after is not None:
        row["loop_cpu_s"] = loop_after - loop_before
    after_stats = requests_so_far(server, model)
    row["frontends"] = len(frontends)
    now = children(core) if workers > 1 else []
    if now != frontends or any(pid not in after for pid in frontends):
        row["frontends_changed"] = f"{frontends} -> {now}"
        log(f"  front-end pids changed during the step: {frontends} -> {now}")
    if core in before and core in after:
        row["core_cpu_s"] = after[core] - before[core]
        row["core_cpu_pct"] = 100 * row["core_cpu_s"] / wall
    fe = [after[p] - before[p] for p in frontends if p in before and p in after]
    if frontends and len(fe) == len(frontends):
        row["fe_cpu_s"] = sum(fe)
        row["fe_cpu_pct"] = 100 * sum(fe) / wall
        row["fe_max_pct"] = 100 * max(fe) / wall
        row["fe_each_pct"] = [round(100 * x / wall, 1) for x in fe]
    row.update(counter_deltas(before_stats, after_stats))
    return row


def requests_so_far(server: LoggedServer, model: str) -> dict[str, int] | None:
    if server.name == "bare":
        count = served(server.port)
        return None if count is None else {"success": count}
    return model_stats(server.port, model)


def counter_deltas(before: dict[str, int] | None, after: dict[str, int] | None) -> dict:
    if not before or not after:
        return {}
    delta = {k: after[k] - before[k] for k in before}
    found = {"requests": delta["success"] + delta.get("fail", 0), "failed": delta.get("fail", 0)}
    if delta.get("executions"):
        found["mean_batch"] = delta["inferences"] / delta["executions"]
    return found


def per_request(row: dict) -> None:
    """CPU µs per request served in the step: in the core, in the front-ends together."""
    requests = row.get("requests")
    if not requests:
        return
    for kind in ("core", "loop", "fe"):
        if f"{kind}_cpu_s" in row:
            row[f"{kind}_us"] = 1e6 * row[f"{kind}_cpu_s"] / requests


def counting_bare(processes: int = 1) -> None:
    """bench/bare_server.py with a request counter (one middleware: about 1 µs a request), in
    ``processes`` processes sharing the port."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bare_server
    from aiohttp import web

    # NOTE: created before the fork, so every handler writes the same shared memory
    served = multiprocessing.Array("q", processes, lock=False)
    slot = [0]
    run_app = web.run_app

    @web.middleware
    async def counting(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "POST":
            served[slot[0]] += 1
        return await handler(request)

    def patched(app: web.Application, **kwargs: Any) -> None:
        app.middlewares.append(counting)
        app.router.add_get("/bench/served", lambda r: web.json_response({"served": sum(served)}))
        run_app(app, reuse_port=processes > 1, **kwargs)

    web.run_app = patched
    if processes == 1:
        bare_server.main()
        return
    handlers = []
    for index in range(processes):
        pid = os.fork()
        if pid == 0:
            slot[0] = index
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            bare_server.main()
            os._exit(0)
        handlers.append(pid)

    def stop(*_: Any) -> None:
        for pid in handlers:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    for pid in handlers:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    counting_bare(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
