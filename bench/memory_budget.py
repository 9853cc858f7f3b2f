"""More models than memory: the memory budget against loading everything and against plain LRU
by count, on ~40 small ONNX models driven by a Zipf-distributed request mix.

Writes N MLPs (784 -> w -> 10, w spread geometrically so the largest is ~20x the smallest;
which ones are popular is shuffled, independent of size). Then, one `repoman serve` per mode,
each started with every model AVAILABLE (``--lazy-load``) so its baseline resident set is the
server without models:

* ``everything``: no budget; every model is asked for once first, so all are loaded (what a
  server that loads everything holds), then the mix runs. Its total sets the budget below.
* ``budget``: ``--memory-budget`` = the models' measured total / ``--ratio`` (3 by default); the
  server loads on first request and evicts by its own rule (LRU weighed by load time).
* ``lru-count``: plain LRU by count, as model multiplexers that count models do it: the same
  server in explicit mode, no budget, a client keeping at most K models loaded (K = N /
  ratio, the same share of the models), unloading the least recently used through the API
  before loading another.

One client sends the requests one at a time (a closed loop), so each request's wait is its
own; before each it reads the index to know whether the model is in memory (a hit) or not (a
miss); that read is not timed. A thread samples the server's resident set (/proc) every 5 ms.
Prints one table; not a timed test.

Usage: ``PYTHONPATH=.:plugins:<onnx> .venv/bin/python bench/memory_budget.py [--models 40]
[--requests 1500] [--seconds 120] [--zipf 1.0] [--ratio 3]`` (needs the ``onnx`` package to
write the models).
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from repoman.memory import format_size, resident_bytes  # noqa: E402
from tests.serverproc import ServerProcess, start_server  # noqa: E402

BODY = json.dumps(
    {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.5] * 784}]}
).encode()
CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [{{ name: "input" data_type: TYPE_FP32 dims: [ 784 ] }}]
output [{{ name: "output" data_type: TYPE_FP32 dims: [ 10 ] }}]
"""


def write_models(repo: Path, count: int, seed: int) -> list[str]:
    """``count`` MLPs with hidden widths from 96 to 2048 (0.3 to 6.4 MB of weights); returns
    the names in popularity order (rank 0 is asked for most)."""
    from make_models import build_mlp

    names = []
    for i in range(count):
        width = int(96 * (2048 / 96) ** (i / max(count - 1, 1)))
        name = f"m{i:02d}_w{width}"
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(CONFIG.format(name=name))
        model = build_mlp(name, [width], seed + i)
        (repo / name / "1" / "model.onnx").write_bytes(model.SerializeToString())
        names.append(name)
    random.Random(seed).shuffle(names)
    return names


def post(server: ServerProcess, path: str, body: bytes = b"") -> tuple[int, bytes]:
    request = urllib.request.Request(server.url + path, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def states(server: ServerProcess) -> dict[str, dict]:
    _, raw = post(server, "/v2/repository/index")
    return {row["name"]: row for row in json.loads(raw)}


def metric(server: ServerProcess, series: str) -> float:
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as response:
        for line in response.read().decode().splitlines():
            if line.rsplit(" ", 1)[0] == series:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


class Peak:
    """The highest resident set of a process, sampled on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.value = pid, resident_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.value = max(self.value, resident_bytes(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.value


@dataclass
class Result:
    mode: str
    hits: list[float] = field(default_factory=list)
    misses: list[float] = field(default_factory=list)
    failed: int = 0
    loads: float = 0.0
    evictions: float = 0.0
    seconds: float = 0.0
    baseline: int = 0
    peak: int = 0


def run_mix(
    server: ServerProcess,
    result: Result,
    names: list[str],
    args: argparse.Namespace,
    lru_count: int = 0,
) -> None:
    rng = random.Random(args.seed)
    weights = [1 / (rank + 1) ** args.zipf for rank in range(len(names))]
    loaded: collections.OrderedDict[str, None] = collections.OrderedDict()
    started = time.monotonic()
    for _ in range(args.requests):
        if time.monotonic() - started > args.seconds:
            break
        name = rng.choices(names, weights)[0]
        hit = name in loaded if lru_count else states(server)[name]["state"] == "READY"
        began = time.perf_counter()
        if lru_count and not hit:
            if len(loaded) >= lru_count:
                gone, _ = loaded.popitem(last=False)
                post(server, f"/v2/repository/models/{gone}/unload")
                result.evictions += 1
            post(server, f"/v2/repository/models/{name}/load")
            result.loads += 1
        if lru_count:
            loaded[name] = None
            loaded.move_to_end(name)
        status, _ = post(server, f"/v2/models/{name}/infer", BODY)
        elapsed = (time.perf_counter() - began) * 1000
        if status != 200:
            result.failed += 1
        (result.hits if hit else result.misses).append(elapsed)
    result.seconds = time.monotonic() - started


def mode(
    kind: str, repo: Path, names: list[str], args: argparse.Namespace, budget: int = 0
) -> tuple[Result, ServerProcess]:
    extra = ["--lazy-load", "--grpc-port", "-1"]
    if kind == "budget":
        extra += ["--memory-budget", str(budget)]
    if kind == "lru-count":
        extra += ["--model-control-mode", "explicit", "--load-model", "*"]
    server = start_server(repo, *extra)
    result = Result(kind, baseline=resident_bytes(server.process.pid))
    peak = Peak(server.process.pid)
    try:
        if kind == "everything":
            for name in names:
                post(server, f"/v2/models/{name}/infer", BODY)
        if kind == "lru-count":
            # NOTE: --load-model * serves every model (AVAILABLE, as --lazy-load says);
            # the client's LRU starts from none served, so none loads behind its back.
            for name in names:
                post(server, f"/v2/repository/models/{name}/unload")
            result.baseline = resident_bytes(server.process.pid)
            peak.value = result.baseline
        lru = max(1, round(len(names) / args.ratio)) if kind == "lru-count" else 0
        run_mix(server, result, names, args, lru_count=lru)
        if kind != "lru-count":
            result.loads = sum(
                metric(server, f'repoman_model_loads_total{{cause="{c}"}}')
                for c in ("eager", "lazy", "explicit")
            )
            result.evictions = metric(
                server, 'repoman_model_evictions_total{reason="memory_budget"}'
            )
    finally:
        result.peak = peak.stop()
    return result, server


def pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(int(q * len(ordered)), len(ordered) - 1)]:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=40)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=120.0, help="per mode, at most")
    parser.add_argument("--zipf", type=float, default=1.0, help="the mix's exponent s")
    parser.add_argument("--ratio", type=float, default=3.0, help="models' total / budget")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="repoman-budget-") as tmp:
        repo = Path(tmp) / "repo"
        names = write_models(repo, args.models, args.seed)
        everything, server = mode("everything", repo, names, args)
        index = states(server)
        server.stop()
        total = sum(index[name]["memory_bytes"] for name in names)
        largest = max(index[name]["memory_bytes"] for name in names)
        budget = int(total / args.ratio)
        budgeted, server = mode("budget", repo, names, args, budget)
        server.stop()
        lru, server = mode("lru-count", repo, names, args)
        server.stop()
    print(
        f"{args.models} models, {format_size(total)} measured in all (largest "
        f"{format_size(largest)}); budget {format_size(budget)} (1/{args.ratio:g}); Zipf s="
        f"{args.zipf:g}; one closed-loop client; LRU by count keeps "
        f"{max(1, round(args.models / args.ratio))} models"
    )
    header = (
        f"{'mode':<11} {'requests':>8} {'failed':>6} {'hit rate':>8} {'hit p50':>8} "
        f"{'hit p99':>8} {'miss p50':>8} {'miss p99':>8} {'loads/min':>9} {'evict/min':>9} "
        f"{'peak RSS - base':>15} {'vs budget':>10}"
    )
    print(header)
    print("-" * len(header))
    for result in (everything, budgeted, lru):
        count = len(result.hits) + len(result.misses)
        minutes = result.seconds / 60
        grown = result.peak - result.baseline
        print(
            f"{result.mode:<11} {count:>8} {result.failed:>6} "
            f"{len(result.hits) / max(count, 1):>8.1%} {pct(result.hits, 0.5):>8} "
            f"{pct(result.hits, 0.99):>8} {pct(result.misses, 0.5):>8} "
            f"{pct(result.misses, 0.99):>8} {result.loads / minutes:>9.0f} "
            f"{result.evictions / minutes:>9.0f} {format_size(grown):>15} "
            f"{grown / budget:>9.2f}x"
        )
    print(
        "latencies in ms, client-side; a miss includes its load (and, for lru-count, the "
        "client's unload and load calls); 'everything' counts the loads before its mix"
    )
    stats = budgeted.peak - budgeted.baseline
    print(
        f"budget: peak {format_size(stats)} over the server's own "
        f"{format_size(budgeted.baseline)}; budget + largest model = "
        f"{format_size(budget + largest)}: " + ("within" if stats <= budget + largest else "OVER")
    )
    return 0 if stats <= budget + largest else 1


if __name__ == "__main__":
    raise SystemExit(main())
