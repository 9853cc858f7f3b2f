"""Hot-reload latency: from a version folder being complete to the first response it computes.

Starts `repoman serve` (poll mode, default quiet period) on a copy of the bundled digits model,
then N times: move a complete version folder in (an atomic rename, as a deploy script would)
and time, with unversioned requests in a loop, until a response carries the new version. Also
shows the model's own load time from the server's log. Prints a table; not a timed test.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serverproc import start_server  # noqa: E402

BODY = json.dumps(
    {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}
).encode()


def version_served(url: str) -> str:
    request = urllib.request.Request(url + "/v2/models/digits/infer", data=BODY, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["model_version"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--quiet-period", type=float, default=None, help="passed to the server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="repoman-reload-") as tmp:
        repo = Path(tmp) / "repo"
        (repo / "digits" / "1").mkdir(parents=True)
        source = ROOT / "model_repository" / "digits"
        shutil.copy(source / "config.pbtxt", repo / "digits")
        shutil.copy(source / "1" / "model.onnx", repo / "digits" / "1")
        extra = ["--quiet-period", str(args.quiet_period)] if args.quiet_period is not None else []
        server = start_server(repo, *extra)
        rows = []
        try:
            for version in range(2, 2 + args.trials):
                staging = Path(tmp) / f"staging-{version}"
                staging.mkdir()
                shutil.copy(source / "1" / "model.onnx", staging / "model.onnx")
                time.sleep(0.5)  # the copy is old news: only the move counts
                started = time.monotonic()
                staging.rename(repo / "digits" / str(version))
                while version_served(server.url) != str(version):
                    if time.monotonic() - started > 30:
                        raise SystemExit(f"version {version} was not served within 30 s")
                    time.sleep(0.005)
                elapsed = time.monotonic() - started
                loaded = re.findall(
                    rf"digits version {version}: READY \(loaded in ([0-9.]+)s\)", server.log()
                )
                rows.append((version, elapsed, float(loaded[0]) if loaded else float("nan")))
                print(
                    f"  version {version}: first response after {elapsed * 1000:.0f} ms",
                    file=sys.stderr,
                )
        finally:
            server.stop()
    print(f"\n{'version':>8} {'complete -> first response (ms)':>32} {'model load (ms)':>16}")
    for version, elapsed, load in rows:
        print(f"{version:>8} {elapsed * 1000:>32.0f} {load * 1000:>16.0f}")
    times = [elapsed for _, elapsed, _ in rows]
    print(
        f"\nmedian {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
        f"(target: under 1000 ms plus the model's own load time; Triton polls every 15 s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
