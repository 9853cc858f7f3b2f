"""Front-end processes (--http-workers N): one server, whatever process answers a request."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import BUNDLED
from tests.e2e.test_hot_reload import Traffic, infer_digits
from tests.fakes import write_model

STARTED = re.compile(r"front-end (\d+) started \(pid (\d+)\)")
WORKERS = ("--http-workers", "2")


def frontend_pids(server) -> dict[int, int]:
    """The latest pid of each front-end, from the core's log."""
    pids: dict[int, int] = {}
    for line in server.lines:
        match = STARTED.search(line)
        if match:
            pids[int(match[1])] = int(match[2])
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}").exists()
        and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    )


def wait_for(predicate, timeout: float = 20.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        time.sleep(0.05)


def infer_once(address: str) -> dict:
    # NOTE: a client per call: a new connection, so the kernel spreads calls over front-ends.
    with httpclient.InferenceServerClient(address, network_timeout=30) as client:
        return infer_digits(client)


def spread_traffic(address: str) -> Traffic:
    return Traffic(address, threads=3, fresh_connections=True, seconds=90)


def metric(server, name: str, model: str) -> float:
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(f'{name}{{model="{model}"'):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} for {model}")


@pytest.fixture
def digits_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED / "digits", repo / "digits")
    return repo


def test_metrics_and_statistics_count_every_request_once_across_front_ends(
    digits_repo, server_factory
):
    server = server_factory(digits_repo, *WORKERS)
    assert len(frontend_pids(server)) == 2
    for _ in range(120):
        assert infer_once(server.address)["model_version"] == "1"
    assert metric(server, "nv_inference_request_success", "digits") == 120
    _, stats = server.get("/v2/models/digits/stats")
    assert stats["model_stats"][0]["inference_stats"]["success"]["count"] == 120


def test_a_version_swap_under_load_through_front_ends_fails_no_request(digits_repo, server_factory):
    server = server_factory(digits_repo, *WORKERS, "--quiet-period", "0.2")
    with spread_traffic(server.address) as traffic:
        wait_for(lambda: len(traffic.versions) > 20, message="traffic")
        shutil.copytree(digits_repo / "digits" / "1", digits_repo / "digits" / "2")
        wait_for(lambda: traffic.versions[-5:] == ["2"] * 5, message="version 2 serving")
        shutil.rmtree(digits_repo / "digits" / "1")
        wait_for(lambda: "model digits version 1: UNAVAILABLE" in server.log(), message="v1 gone")
        count = len(traffic.versions)
        wait_for(lambda: len(traffic.versions) > count + 20, message="more traffic")
    assert traffic.errors == []
    assert {"1", "2"} <= set(traffic.versions)


def test_a_front_end_that_dies_is_restarted_and_the_others_keep_serving(
    digits_repo, server_factory
):
    server = server_factory(digits_repo, *WORKERS)
    before = frontend_pids(server)
    with spread_traffic(server.address) as traffic:
        wait_for(lambda: len(traffic.versions) > 20, message="traffic")
        os.kill(before[0], signal.SIGKILL)
        wait_for(lambda: frontend_pids(server)[0] != before[0], message="a restart")
        wait_for(lambda: alive(frontend_pids(server)[0]), message="the new front-end")
        count = len(traffic.versions)
        wait_for(lambda: len(traffic.versions) > count + 30, message="traffic after it")
        errors_after_restart = len(traffic.errors)
        count = len(traffic.versions)
        wait_for(lambda: len(traffic.versions) > count + 30, message="more traffic")
    assert alive(before[1])  # the other one never stopped
    # NOTE: requests on the killed process's connections may fail; none after the restart.
    assert len(traffic.errors) == errors_after_restart
    assert len(traffic.errors) <= 3, traffic.errors


def test_sigterm_answers_requests_in_flight_and_leaves_nothing_behind(
    tmp_path, plugins_dir, server_factory
):
    shm_before = set(os.listdir("/dev/shm"))
    repo = tmp_path / "repo"
    write_model(
        repo, "slow", extra='parameters { key: "delay_ms" value: { string_value: "1500" } }\n'
    )
    server = server_factory(repo, "--plugins-dir", str(plugins_dir), *WORKERS)
    pids = list(frontend_pids(server).values())
    outcome: dict[str, object] = {}

    def call() -> None:
        with httpclient.InferenceServerClient(server.address, network_timeout=30) as client:
            inp = httpclient.InferInput("INPUT", [1, 4], "FP32")
            inp.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
            outcome["result"] = client.infer("slow", [inp]).as_numpy("OUTPUT").tolist()

    thread = threading.Thread(target=call)
    thread.start()
    wait_for(
        lambda: (
            metric(server, "nv_inference_pending_request_count", "slow") == 0
            and metric(server, "nv_inference_exec_count", "slow") == 0
        ),
        message="queued",
    )
    time.sleep(0.5)  # NOTE: the request is being computed (1.5 s)
    server.process.send_signal(signal.SIGTERM)
    thread.join(30)
    assert outcome.get("result") == [[1.0, 1.0, 1.0, 1.0]]
    assert server.process.wait(30) == 0
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=5, message="front-ends gone")
    assert set(os.listdir("/dev/shm")) - shm_before == set()


def test_front_ends_die_with_the_core(digits_repo, server_factory):
    server = server_factory(digits_repo, *WORKERS)
    pids = list(frontend_pids(server).values())
    server.process.kill()
    server.process.wait(10)
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=10, message="orphans gone")


def test_the_repository_api_and_its_token_work_through_front_ends(digits_repo, server_factory):
    shutil.copytree(BUNDLED / "iris", digits_repo / "iris")
    server = server_factory(
        digits_repo,
        *WORKERS,
        "--model-control-mode",
        "explicit",
        "--load-model",
        "digits",
        "--control-token",
        "t0k",
    )
    status, _ = server.request("POST", "/v2/repository/models/iris/load", b"")
    assert status == 401
    auth = {"Authorization": "Bearer t0k"}
    status, _ = server.request("POST", "/v2/repository/models/iris/load", b"", auth)
    assert status == 200
    wait_for(lambda: server.get("/v2/models/iris/ready")[0] == 200, message="iris ready")
    status, answer = server.request("POST", "/v2/repository/index", b"", auth)
    assert status == 200 and {r["name"] for r in answer} == {"digits", "iris"}
    status, _ = server.request("POST", "/v2/repository/models/iris/unload", b"", auth)
    assert status == 200
    wait_for(lambda: server.get("/v2/models/iris/ready")[0] == 404, message="iris unloaded")
    status, answer = server.request("POST", "/v2/models/nope/infer", b"{}")
    assert status == 404 and "nope" in answer["error"]


def test_front_ends_run_the_cores_code_whatever_folder_the_server_starts_in(
    digits_repo, server_factory, tmp_path
):
    # NOTE: a folder holding another package named repoman (a checkout of another version,
    # say): `python -m` would put it first on a front-end's path, and the core and its
    # front-ends would speak two versions of their protocol
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "repoman").mkdir(parents=True)
    (elsewhere / "repoman" / "__init__.py").write_text('raise ImportError("the wrong repoman")\n')
    script = Path(sys.executable).parent / "repoman"
    server = server_factory(digits_repo, *WORKERS, launcher=(str(script),), cwd=elsewhere)
    assert len(frontend_pids(server)) == 2
    for _ in range(4):
        assert infer_once(server.address)["model_name"] == "digits"
    assert not any("the wrong repoman" in line for line in server.lines)


TEXT_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class Unprintable:
    def __str__(self):
        raise RuntimeError("no text")


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy()[0, 0])
            # NOTE: str, not bytes, as onnxruntime gives its string tensors; a negative n
            # gives an element that has no text at all
            value = Unprintable() if n < 0 else "grüße " * n
            values = np.array([[value]], dtype=object)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("TEXT", values)]))
        return responses
"""

TEXT_CONFIG = """
backend: "python"
max_batch_size: 4
input [{ name: "N" data_type: TYPE_INT32 dims: [ 1 ] }]
output [{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }]
parameters { key: "isolation" value: { string_value: "none" } }
"""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_text_outputs_cross_to_front_ends_as_utf8_and_a_bad_one_is_answered(
    tmp_path, server_factory, workers
):
    # NOTE: in process (isolation none) the model's str elements reach the core as they are;
    # the core wrote them for its front-ends with bytes(), which raised, and the request
    # was never answered
    repo = tmp_path / "repo"
    (repo / "text" / "1").mkdir(parents=True)
    (repo / "text" / "1" / "model.py").write_text(TEXT_MODEL)
    (repo / "text" / "config.pbtxt").write_text(TEXT_CONFIG)
    server = server_factory(repo, "--http-workers", workers)
    with httpclient.InferenceServerClient(server.address, network_timeout=30) as client:
        for n in (0, 2):
            number = httpclient.InferInput("N", [1, 1], "INT32")
            number.set_data_from_numpy(np.array([[n]], dtype=np.int32))
            answer = client.infer("text", [number]).as_numpy("TEXT")
            assert answer.tolist() == [[("grüße " * n).encode()]]
        number = httpclient.InferInput("N", [1, 1], "INT32")
        number.set_data_from_numpy(np.array([[-1]], dtype=np.int32))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("text", [number])
    assert caught.value.status() == "500"
