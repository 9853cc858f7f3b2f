"""The cost of running a python model in its own process: an identity model, in process
(``isolation: none``) and in a stub, at 1 and 64 concurrent clients.

    PYTHONPATH=.:plugins python bench/python_stub.py [--seconds 5]

Prints infer/s and p50 latency per mode and concurrency, and the per-batch overhead of the
process hop (the difference in p50 at concurrency 1).
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
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
