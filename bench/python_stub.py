"""The cost of running a python model in its own process: an identity model, in process
(``isolation: none``) and in a stub, at 1 and 64 concurrent clients.

    PYTHONPATH=.:plugins python bench/python_stub.py [--seconds 5]

Prints infer/s and p50 latency per mode and concurrency, and the per-batch overhead of the
process hop (the difference in p50 at concurrency 1).

``--round-trip`` measures the hop alone, without HTTP or the scheduler: the bundled
``iris_preprocess`` model, batches of 1 and 12 requests sent straight to its backend (a stub,
through ``execute_async`` on an event loop, as the core sends them), beside the same batches
executed in process. Per batch size: the stub's and the sending process's CPU per request,
the wall time per batch, and the in-process execute's CPU per request (the model's own work).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import cpu_seconds

from tests.serverproc import start_server

IDENTITY = """
from repoman_python import Response

class Model:
    def execute(self, requests):
        return [Response({"Y": r.input("X")}) for r in requests]
"""

CONFIG = """
backend: "python"
max_batch_size: 64
input [{ name: "X" data_type: TYPE_FP32 dims: [ 16 ] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [ 16 ] }]
dynamic_batching { }
"""
BODY = json.dumps(
    {"inputs": [{"name": "X", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}]}
).encode()


def measure(url: str, clients: int, seconds: float) -> tuple[float, float]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def client() -> None:
        mine = []
        while time.monotonic() < stop:
            request = urllib.request.Request(
                url, BODY, {"Content-Type": "application/json"}, method="POST"
            )
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
            mine.append(time.perf_counter() - started)
        latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / seconds, statistics.median(latencies) * 1000


def round_trip(batches: int) -> None:
    import numpy as np
    from repoman_python.backend import PythonBackend
    from repoman_python.isolated import IsolatedPythonBackend

    from repoman.backends import BackendContext, Batch
    from repoman.config import load_model_config

    folder = Path(__file__).resolve().parents[1] / "model_repository" / "iris_preprocess"
    config = load_model_config(folder)
    context = BackendContext(config, 1, folder / "1", folder / "1" / "model.py")
    stub, local = IsolatedPythonBackend(context), PythonBackend(context)
    stub.load()
    local.load()
    def stub_cpu() -> float:
        assert stub._process is not None
        cpu = cpu_seconds(stub._process.pid)
        assert cpu is not None, "the stub exited"
        return cpu

    def batch(size: int) -> Batch:
        rows = [{"measurements_mm": np.full((1, 4), 50.0, np.float32)} for _ in range(size)]
        return Batch(rows, ("features",), ("measurements_mm",), True, row_counts=[1] * size)

    async def sent(size: int) -> tuple[float, float, float]:
        for _ in range(50):
            await stub.execute_async(batch(size))
        work = [batch(size) for _ in range(batches)]
        cpu, ours, wall = stub_cpu(), time.process_time(), time.perf_counter()
        for each in work:
            await stub.execute_async(each)
        count = batches * size
        return (
            (stub_cpu() - cpu) / count * 1e6,
            (time.process_time() - ours) / count * 1e6,
            (time.perf_counter() - wall) / batches * 1e6,
        )

    print(f"{'batch':>5} {'stub µs/req':>12} {'sender µs/req':>14} {'wall µs/batch':>14}"
          f" {'in-process µs/req':>18}")
    try:
        for size in (1, 12):
            stub_us, sender_us, wall_us = asyncio.run(sent(size))
            work = [batch(size) for _ in range(batches)]
            started = time.process_time()
            for each in work:
                local.execute(each)
            local_us = (time.process_time() - started) / (batches * size) * 1e6
            print(f"{size:>5} {stub_us:>12.1f} {sender_us:>14.1f} {wall_us:>14.0f}"
                  f" {local_us:>18.1f}")
    finally:
        stub.unload()
        local.unload()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--round-trip", action="store_true", help="the hop alone (no HTTP)")
    parser.add_argument("--batches", type=int, default=3000)
    args = parser.parse_args()
    if args.round_trip:
        round_trip(args.batches)
        return
    with tempfile.TemporaryDirectory() as folder:
        repo = Path(folder)
        for name, isolation in (("inproc", "none"), ("stub", "process")):
            (repo / name / "1").mkdir(parents=True)
            (repo / name / "1" / "model.py").write_text(textwrap.dedent(IDENTITY))
            (repo / name / "config.pbtxt").write_text(
                CONFIG
                + f'parameters {{ key: "isolation" value: {{ string_value: "{isolation}" }} }}\n'
            )
        server = start_server(repo)
        try:
            p50 = {}
            for clients in (1, 64):
                for name in ("inproc", "stub"):
                    url = f"{server.url}/v2/models/{name}/infer"
                    measure(url, clients, 0.5)  # warm up
                    rate, p50[name, clients] = measure(url, clients, args.seconds)
                    line = f"{name:7s} c{clients:<3d} {rate:8.0f} infer/s"
                    print(f"{line}  p50 {p50[name, clients]:6.2f} ms")
            hop = p50["stub", 1] - p50["inproc", 1]
            print(f"process hop: {hop * 1000:.0f} us per batch (p50 difference at c1)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
