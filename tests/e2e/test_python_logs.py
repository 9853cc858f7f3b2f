"""What python model code logs or prints comes out in the server's log format (JSON lines
with --log-format json), attributed to its model, version and instance."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.serverproc import ServerProcess, start_server

CHATTY = """
import logging
import os
import sys

import triton_python_backend_utils as pb_utils

print("chatty: imported")


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        print("chatty: described")
        config.add_input({"name": "X", "data_type": "TYPE_INT32", "dims": [2]})
        config.add_output({"name": "Y", "data_type": "TYPE_INT32", "dims": [2]})
        return config

    def initialize(self, args):
        pb_utils.Logger.log_info("chatty: initialize via Logger")
        logging.getLogger(__name__).warning("chatty: initialize via logging")

    def execute(self, requests):
        pb_utils.Logger.log_error("chatty: execute via Logger")
        print("chatty: execute via print to stderr", file=sys.stderr)
        os.write(1, b"chatty: execute via a raw write\\n")
        try:
            raise ValueError("on purpose")
        except ValueError:
            logging.getLogger("mine").exception("chatty: execute with a traceback")
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())]
            )
            for r in requests
        ]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("python_logs")
    version = repo / "chatty" / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(textwrap.dedent(CHATTY))
    process = start_server(repo, "--log-format", "json")
    yield process
    process.stop()


def records(server: ServerProcess) -> list[dict]:
    """Every line the server wrote, each of which must be one JSON object."""
    found = []
    for line in list(server.lines):
        try:
            found.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
    return found


def record(server: ServerProcess, message: str) -> dict:
    """The record whose message starts with ``message``, once the server has logged it."""
    deadline = time.monotonic() + 20
    while True:
        found = [r for r in records(server) if r["message"].startswith(message)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no record {message!r} in:\n{server.log()}"
        time.sleep(0.05)


def test_model_output_is_json_lines_attributed_to_the_model_and_instance(server):
    with httpclient.InferenceServerClient(server.address) as client:
        x = httpclient.InferInput("X", [2], "INT32")
        x.set_data_from_numpy(np.array([1, 2], dtype=np.int32))
        assert client.infer("chatty", [x]).as_numpy("Y").tolist() == [1, 2]
    expected = {
        "chatty: described": ("INFO", "describe"),
        "chatty: initialize via Logger": ("INFO", None),
        "chatty: initialize via logging": ("WARNING", None),
        "chatty: execute via Logger": ("ERROR", None),
        "chatty: execute via print to stderr": ("WARNING", None),
        "chatty: execute via a raw write": ("INFO", None),
        "chatty: execute with a traceback": ("ERROR", None),
    }
    instances = set()
    for message, (level, instance) in expected.items():
        entry = record(server, message)
        assert entry["level"] == level, entry
        assert entry["model"] == "chatty" and entry["version"] == 1, entry
        assert entry["logger"] == f"repoman.models.chatty.{entry['instance']}", entry
        if instance is not None:
            assert entry["instance"] == instance, entry
        else:
            instances.add(entry["instance"])
    assert len(instances) == 1 and instances != {"describe"}  # one instance served them all
    traceback = record(server, "chatty: execute with a traceback")["message"]
    assert "ValueError: on purpose" in traceback
    imported = [r for r in records(server) if r["message"] == "chatty: imported"]
    assert {r["instance"] for r in imported} == {"describe", *instances}


def test_the_server_s_own_records_carry_no_model_fields(server):
    own = [r for r in records(server) if not r["logger"].startswith("repoman.models.")]
    assert own and all("model" not in r and "instance" not in r for r in own)


def test_text_format_names_the_model_and_instance(tmp_path: Path):
    version = tmp_path / "chatty" / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(textwrap.dedent(CHATTY))
    server = start_server(tmp_path)
    try:
        deadline = time.monotonic() + 20
        while "repoman.models.chatty.describe: chatty: described" not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
    finally:
        server.stop()
