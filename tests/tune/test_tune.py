"""`repoman tune` for real: a short tune of a bundled model, its config applied to a running
server under load, a tune against a running explicit-mode server, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from tests.serverproc import ROOT, ServerProcess

BUNDLED = ROOT / "model_repository"
BUDGET_S = 20
SLACK_S = 15  # interpreter start and plugin imports come on top of the budget


def tune(*args: str, cwd: Path, timeout: float = BUDGET_S + 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "repoman", "tune", *args, "--no-progress"],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def copy_model(tmp_path: Path, name: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    shutil.copytree(BUNDLED / name, repo / name)
    return repo


class Clients:
    """A few loopback clients posting the iris example until stopped; every answer counted."""

    BODY = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "data": [5.1, 3.5, 1.4, 0.2],
                }
            ]
        }
    ).encode()

    def __init__(self, server: ServerProcess, count: int = 2) -> None:
        self.url = server.url + "/v2/models/iris/infer"
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            request = urllib.request.Request(
                self.url, data=self.BODY, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
                label = next(o for o in answer["outputs"] if o["name"] == "label")
                if label["data"] != [0]:
                    self.failures.append(f"wrong answer {label['data']}")
                else:
                    self.ok += 1
            except (urllib.error.URLError, OSError, ValueError) as exc:
                self.failures.append(repr(exc))
            time.sleep(0.02)  # light load: the tuner's own measurements share the two cores

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(35)


def test_a_short_tune_writes_a_config_that_validates_and_a_running_server_reloads_it(
    tmp_path, server_factory
):
    repo = copy_model(tmp_path, "iris")
    original = (repo / "iris" / "config.yaml").read_text()
    watching = server_factory(repo, "--quiet-period", "0.2")
    clients = Clients(watching)
    started = time.monotonic()
    try:
        run = tune(
            "iris",
            "--repo",
            str(repo),
            "--time-budget",
            str(BUDGET_S),
            "--concurrency",
            "4",
            "--latency-budget-ms",
            "100",
            "--output",
            "tuned.yaml",
            "--plot",
            "chart.svg",
            "--json",
            "run.json",
            "--apply",
            cwd=tmp_path,
        )
        elapsed = time.monotonic() - started
        assert run.returncode == 0, run.stdout + run.stderr
        assert elapsed < BUDGET_S + SLACK_S, f"took {elapsed:.0f} s for a {BUDGET_S} s budget"
        report = json.loads((tmp_path / "run.json").read_text())
        pick = next(t for t in report["trials"] if t["number"] == report["recommended"])
        assert report["roofline"] and report["roofline"][0]["batch_size"] == 1
        assert len(report["trials"]) >= 2, run.stdout  # the config as it is, and more
        assert pick["error"] is None and pick["throughput"] > 0
        assert f"recommended: #{pick['number']} {pick['describe']}" in run.stdout

        written = (tmp_path / "tuned.yaml").read_text()
        assert written == (repo / "iris" / "config.yaml").read_text()  # --apply wrote the same
        assert written.startswith("# iris -- iris flower species classifier")  # header kept
        assert "# tuned by repoman tune" in written
        tuned = yaml.safe_load(written)
        assert tuned["max_batch_size"] == pick["settings"]["max_batch_size"]
        assert ("dynamic_batching" in tuned) == pick["settings"]["batching"]
        assert tuned["input"] == yaml.safe_load(original)["input"]

        svg = ET.fromstring((tmp_path / "chart.svg").read_text())
        assert svg.tag.endswith("svg")

        check = subprocess.run(
            [sys.executable, "-m", "repoman", "validate", str(repo)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert check.returncode == 0, check.stdout + check.stderr

        # the server following the repository picks the new config up
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, served = watching.get("/v2/models/iris/config")
            if (
                status == 200
                and served.get("max_batch_size") == tuned["max_batch_size"]
                and (("dynamic_batching" in served) == ("dynamic_batching" in tuned))
            ):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the server still serves {served}:\n{watching.log()}")
        time.sleep(0.5)
    finally:
        clients.stop()
    assert clients.failures == [], clients.failures[:5]
    assert clients.ok > 10


def test_tuning_a_running_explicit_server_leaves_it_serving_the_repository_config(
    tmp_path, server_factory
):
    repo = copy_model(tmp_path, "digits")
    server = server_factory(repo, "--model-control-mode", "explicit", "--load-model", "digits")
    _, before = server.get("/v2/models/digits/config")
    run = tune(
        "digits",
        "--repo",
        str(repo),
        "--url",
        server.url,
        "--time-budget",
        "15",
        "--concurrency",
        "4",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "recommended:" in run.stdout
    assert (tmp_path / "digits.tuned.pbtxt").is_file()
    assert (tmp_path / "digits.tune.svg").is_file()
    status, after = server.get("/v2/models/digits/config")
    assert status == 200 and after == before  # reloaded from disk: no --apply, so unchanged
    assert (repo / "digits" / "config.pbtxt").read_text() == (
        BUNDLED / "digits" / "config.pbtxt"
    ).read_text()


def test_bad_input_is_one_clear_line_and_exit_2(tmp_path):
    repo = copy_model(tmp_path, "digits")
    cases = [
        (["nosuch", "--repo", str(repo)], "no model folder"),
        (["digits", "--repo", str(repo), "--plot", "x.png"], "only SVG"),
        (["digits", "--repo", str(repo), "--time-budget", "3"], "at least 10 s"),
        (["digits", "--repo", str(repo), "--shape", "pixels:a"], "--shape"),
    ]
    for args, expected in cases:
        run = tune(*args, cwd=tmp_path, timeout=60)
        assert run.returncode == 2, (args, run.stdout, run.stderr)
        assert expected in run.stderr, (args, run.stderr)
        assert "Traceback" not in run.stderr
    for args, expected in (
        (["digits", "--latency-budget-ms", "0"], "not a positive number"),
        (["digits", "--concurrency", "0"], "positive integers"),
    ):
        run = tune(*args, cwd=tmp_path, timeout=60)
        assert run.returncode == 2 and expected in run.stderr, run.stderr
