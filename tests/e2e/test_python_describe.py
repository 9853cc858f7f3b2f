"""Describing a python model with no config runs its code in a process of its own: a model
whose import or auto_complete_config exits, crashes or hangs fails alone, with the reason."""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.e2e.test_python_stub import alive, stub_pids
from tests.serverproc import ServerProcess, start_server

GOOD = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        config.add_input({"name": "X", "data_type": "TYPE_INT32", "dims": [2]})
        config.add_output({"name": "Y", "data_type": "TYPE_INT32", "dims": [2]})
        config.set_max_batch_size(4)
        return config

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() + 1)]
            )
            for r in requests
        ]
"""

# NOTE: each import leaves a mark (outside the repository: a file written in the model's
# folder would change it), so the test can count how often the file was imported.
COUNTED_GOOD = (
    """
with open({marks!r}, "a") as marks:
    marks.write("imported\\n")
"""
    + GOOD
)

IMPORT_EXITS = """
import os

os._exit(4)
"""

# auto_complete_config reads address 0: SIGSEGV.
SEGFAULTS = GOOD.replace(
    "    def auto_complete_config(config):\n",
    "    def auto_complete_config(config):\n        import ctypes\n        ctypes.string_at(0)\n",
)

HANGS = GOOD.replace(
    "    def auto_complete_config(config):\n",
    "    def auto_complete_config(config):\n        import time\n        time.sleep(3600)\n",
)

LOAD_TIMEOUT = 4


def add_model(repo: Path, name: str, code: str) -> None:
    """A model folder with no config: auto-complete describes it."""
    version = repo / name / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(textwrap.dedent(code))


@pytest.fixture(scope="module")
def marks(tmp_path_factory) -> Path:
    """Where good's model.py notes each time it is imported."""
    return tmp_path_factory.mktemp("marks") / "imports.log"


@pytest.fixture(scope="module")
def server(tmp_path_factory, marks) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("python_describe")
    add_model(repo, "good", COUNTED_GOOD.replace("{marks!r}", repr(str(marks))))
    add_model(repo, "import_exits", IMPORT_EXITS)
    add_model(repo, "segfaults", SEGFAULTS)
    add_model(repo, "hangs", HANGS)
    process = start_server(
        repo,
        "--model-load-timeout",
        str(LOAD_TIMEOUT),
        "--model-control-mode",
        "poll",
        "--repository-poll-secs",
        "0.2",
    )
    yield process
    process.stop()


def reasons(server: ServerProcess) -> dict[str, tuple[str, str]]:
    status, index = server.request("POST", "/v2/repository/index", b"")
    assert status == 200, index
    return {row["name"]: (row.get("state", ""), row.get("reason", "")) for row in index}


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("import_exits", "1/model.py: importing it failed: its process exited with 4"),
        (
            "segfaults",
            "1/model.py: auto_complete_config failed: its process was killed by SIGSEGV",
        ),
        (
            "hangs",
            # NOTE: what was left of the timeout when describing began: the resolve before it
            # takes a moment
            "1/model.py: auto_complete_config did not finish within the --model-load-timeout "
            "({left} s were left); its process was killed",
        ),
    ],
    ids=["os._exit at import", "segfault", "hang"],
)
def test_a_model_whose_description_dies_or_hangs_fails_alone_with_the_reason(server, model, reason):
    state, said = reasons(server)[model]
    assert state == "UNAVAILABLE", (state, said)
    pattern = re.compile(re.escape(reason).replace(re.escape("{left}"), r"\d+\.\d"))
    assert pattern.search(said), said
    assert pattern.search(server.log())  # the log says it too
    with httpclient.InferenceServerClient(server.address) as client:
        assert not client.is_model_ready(model)
        x = httpclient.InferInput("X", [1, 2], "INT32")
        x.set_data_from_numpy(np.array([[1, 2]], dtype=np.int32))
        assert client.infer("good", [x]).as_numpy("Y").tolist() == [[2, 3]]


def test_no_describe_process_is_left_behind(server):
    deadline = time.monotonic() + 10
    while len(pids := [p for p in stub_pids(server.process.pid) if alive(p)]) != 1:
        assert time.monotonic() < deadline, pids
        time.sleep(0.05)
    assert reasons(server)["good"][0] == "READY"  # the one left is good's instance


def test_an_unchanged_model_file_is_described_once_however_often_the_repository_is_read(
    server, marks
):
    repo = Path(server.process.args[server.process.args.index("--model-repository") + 1])
    assert marks.read_text().splitlines() == ["imported"] * 2  # described once, loaded once
    # NOTE: a new model proves the repository was read again after the first pass.
    add_model(repo, "later", GOOD)
    deadline = time.monotonic() + 30
    while reasons(server).get("later", ("", ""))[0] != "READY":
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    assert marks.read_text().splitlines() == ["imported"] * 2
