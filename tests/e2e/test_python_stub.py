"""Python models in processes of their own: whatever a model does, the server stays up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverproc import ServerProcess, start_server

# NOTE: the first element of X says what to do; 0 is a normal request.
FAULTY = """
import ctypes
import os
import time

import numpy as np
from repoman_python import Response


class Model:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = request.input("X")
            code = int(x.reshape(-1)[0])
            if code == 1:
                os._exit(1)
            if code == 2:
                ctypes.string_at(0)
            if code == 3:
                markers = os.environ.get("REPOMAN_TEST_MARKERS")
                if markers:  # NOTE: tells the test the batch is in the model now
                    open(os.path.join(markers, "busy"), "w").close()
                time.sleep(3600)
            if code == 4:
                hog = []
                while True:
                    hog.append(np.empty(1 << 24))  # 128 MiB at a time, never given back
            responses.append(Response({"Y": x + 1}))
        return responses
"""

CONFIG = """
backend: "python"
max_batch_size: 4
input [{ name: "X" data_type: TYPE_INT32 dims: [ 2 ] }]
output [{ name: "Y" data_type: TYPE_INT32 dims: [ 2 ] }]
"""

FAULTY_CONFIG = (
    CONFIG
    + """
parameters { key: "execute_timeout_seconds" value: { string_value: "3" } }
parameters { key: "memory_limit_bytes" value: { string_value: "1073741824" } }
"""
)

INIT_HANGS = """
import time
from repoman_python import Response

class Model:
    def initialize(self, args):
        time.sleep(3600)

    def execute(self, requests):
        return [Response({"Y": r.input("X")}) for r in requests]
"""

INIT_DIES = """
import os
from repoman_python import Response

class Model:
    def initialize(self, args):
        os._exit(3)

    def execute(self, requests):
        return [Response({"Y": r.input("X")}) for r in requests]
"""


def add_model(repo: Path, name: str, code: str, config: str) -> None:
    version = repo / name / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(textwrap.dedent(code))
    (repo / name / "config.pbtxt").write_text(textwrap.dedent(config))


def infer(server: ServerProcess, model: str, code: int) -> tuple[int, dict]:
    body = {"inputs": [{"name": "X", "shape": [1, 2], "datatype": "INT32", "data": [code, 5]}]}
    return server.request(
        "POST",
        f"/v2/models/{model}/infer",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )


def infer_until_cut_off(server: ServerProcess) -> None:
    """A request stuck in the model until the server goes away."""
    with contextlib.suppress(OSError):
        infer(server, "busy", 3)


def stub_pids(server_pid: int) -> set[int]:
    """The server's stub processes, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        parent = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("PPid:")), "")
        if b"repoman_python.stub" in cmdline and parent == str(server_pid):
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("python_stub")
    add_model(repo, "faulty", FAULTY, FAULTY_CONFIG)
    add_model(repo, "healthy", FAULTY, CONFIG)
    add_model(
        repo,
        "init_hangs",
        INIT_HANGS,
        CONFIG + 'parameters { key: "load_timeout_seconds" value: { string_value: "2" } }\n',
    )
    add_model(repo, "init_dies", INIT_DIES, CONFIG)
    process = start_server(repo)
    yield process
    process.stop()


def assert_serving(server: ServerProcess) -> None:
    """Both models answer normal requests (the faulty one from a fresh process)."""
    for model in ("faulty", "healthy"):
        status, answer = infer(server, model, 0)
        assert status == 200, answer
        assert answer["outputs"][0]["data"] == [1, 6]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (1, "its process exited with 1 while executing a batch"),
        (2, "its process was killed by SIGSEGV while executing a batch"),
        (3, "execute did not return within 3 s (execute_timeout_seconds)"),
    ],
    ids=["os._exit", "segfault", "hang"],
)
def test_a_dying_model_fails_its_batch_and_is_restarted(server, code, message):
    assert_serving(server)
    before = stub_pids(server.process.pid)
    started = time.monotonic()
    status, answer = infer(server, "faulty", code)
    assert status == 500, answer
    assert answer["error"].startswith("model 'faulty' version 1: ")
    assert message in answer["error"]
    assert time.monotonic() - started < 20
    assert_serving(server)
    after = stub_pids(server.process.pid)
    assert len(after) == len(before) == 2  # faulty's stub was replaced; healthy's never moved
    assert len(before & after) == 1


def test_unbounded_memory_fails_the_batch_not_the_server(server):
    status, answer = infer(server, "faulty", 4)
    assert status == 500, answer
    assert "execute failed: MemoryError" in answer["error"]
    assert_serving(server)


def test_an_initialize_that_hangs_or_dies_fails_the_load_with_a_reason(server):
    _status, index = server.request("POST", "/v2/repository/index", b"")
    states = {row["name"]: row for row in index}
    assert states["init_hangs"]["state"] == "FAILED"
    assert "did not load within 2 s (load_timeout_seconds)" in states["init_hangs"]["reason"]
    assert states["init_dies"]["state"] == "FAILED"
    assert "its process exited with 3" in states["init_dies"]["reason"]
    assert states["healthy"]["state"] == "READY"


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def test_sigterm_stops_every_stub_and_leaves_nothing(tmp_path):
    shm_before = set(os.listdir("/dev/shm"))
    repo = tmp_path / "repo"
    markers = tmp_path / "markers"
    markers.mkdir()
    add_model(repo, "busy", FAULTY, CONFIG)
    add_model(repo, "idle", FAULTY, CONFIG)
    server = start_server(
        repo, "--shutdown-timeout", "3", env={"REPOMAN_TEST_MARKERS": str(markers)}
    )
    assert infer(server, "idle", 0)[0] == 200
    stuck = threading.Thread(target=infer_until_cut_off, args=(server,), daemon=True)
    stuck.start()
    wait_for((markers / "busy").exists, 30, "the batch reached the model")
    pids = stub_pids(server.process.pid)
    assert len(pids) == 2
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(30)
    assert time.monotonic() - started < 3 + 10
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if alive(pid)], "stub processes outlived the server"
    assert set(os.listdir("/dev/shm")) - shm_before == set()


FINALIZES = """
import os
from repoman_python import Response

class Model:
    def execute(self, requests):
        return [Response({"Y": r.input("X")}) for r in requests]

    def finalize(self):
        with open(os.path.join(os.environ["REPOMAN_TEST_MARKERS"], "finalized"), "w") as f:
            f.write(str(os.getpid()))
"""


def test_ctrl_c_to_the_server_s_group_runs_finalize_in_every_stub(tmp_path):
    repo = tmp_path / "repo"
    markers = tmp_path / "markers"
    markers.mkdir()
    add_model(repo, "finalizes", FINALIZES, CONFIG)
    server = start_server(repo, env={"REPOMAN_TEST_MARKERS": str(markers)}, new_session=True)
    assert infer(server, "finalizes", 0)[0] == 200
    pids = stub_pids(server.process.pid)
    assert len(pids) == 1
    os.killpg(server.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert server.process.wait(30) == 0, server.log()
    assert (markers / "finalized").read_text() == str(next(iter(pids))), server.log()
    wait_for(lambda: not any(alive(pid) for pid in pids), 5, "the stub exited")


def test_a_load_the_manager_gives_up_on_ends_its_stub(tmp_path):
    """--model-load-timeout bounds a stub's load, not only the model's own 120 s default."""
    repo = tmp_path / "repo"
    add_model(repo, "init_hangs", INIT_HANGS, CONFIG)
    started = time.monotonic()
    server = start_server(repo, "--model-load-timeout", "2")
    try:
        _, index = server.request("POST", "/v2/repository/index", b"")
        assert index[0]["state"] == "FAILED", index
        assert "--model-load-timeout" in index[0]["reason"]
        wait_for(lambda: not stub_pids(server.process.pid), 10, "the hanging stub was killed")
        assert time.monotonic() - started < 60
    finally:
        server.stop()
