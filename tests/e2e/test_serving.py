"""Serving behaviour over HTTP with fake backends (a drop-in plugin): datatypes, isolation, shutdown."""

from __future__ import annotations

import numpy as np
import tritonclient.http as httpclient

from tests.conftest import ROOT
from tests.fakes import write_model

ALL_TYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]


def sample(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(7)
    if datatype == "BYTES":
        return np.array(
            [f"s{i}".encode() for i in range(int(np.prod(shape)))], dtype=object
        ).reshape(shape)
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(bool)
    dtype = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}.get(datatype)
    if dtype is not None:
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(0, 100, shape).astype(np.dtype(datatype.lower()))


def test_every_datatype_round_trips(tmp_path, plugins_dir, server_factory):
    repo = tmp_path / "repo"
    for datatype in ALL_TYPES:
        config_type = "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"
        write_model(repo, f"echo_{datatype.lower()}", data_type=config_type, dims=(2, 3))
    server = server_factory(repo, "--plugins-dir", str(plugins_dir))
    with httpclient.InferenceServerClient(server.address) as client:
        for datatype in ALL_TYPES:
            data = sample(datatype, (2, 2, 3))
            for binary in (True, False):
                inp = httpclient.InferInput("INPUT", list(data.shape), datatype)
                inp.set_data_from_numpy(data, binary_data=binary)
                out = httpclient.InferRequestedOutput("OUTPUT", binary_data=binary)
                result = client.infer(f"echo_{datatype.lower()}", [inp], outputs=[out])
                got = result.as_numpy("OUTPUT")
                if datatype == "BYTES":
                    got = np.array(
                        [v if isinstance(v, bytes) else v.encode() for v in got.reshape(-1)],
                        dtype=object,
                    ).reshape(got.shape)
                assert got.shape == data.shape, (datatype, binary)
                assert (got == data).all(), (datatype, binary)


def test_a_broken_model_never_stops_the_others(tmp_path, plugins_dir, server_factory):
    repo = tmp_path / "repo"
    write_model(repo, "good")
    write_model(repo, "broken_load", backend="failing_load")
    write_model(repo, "bad_config", extra="max_batch_sise: 4\n")
    write_model(repo, "no_backend", backend="nonexistent")
    (repo / "good" / "not_a_version").mkdir()
    (repo / "good" / "01").mkdir()
    server = server_factory(repo, "--plugins-dir", str(plugins_dir))
    with httpclient.InferenceServerClient(server.address) as client:
        assert client.is_server_ready()
        assert client.is_model_ready("good")
        for name in ("broken_load", "bad_config", "no_backend"):
            assert not client.is_model_ready(name)
        inp = httpclient.InferInput("INPUT", [1, 4], "FP32")
        inp.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        assert client.infer("good", [inp]).as_numpy("OUTPUT").tolist() == [[1, 1, 1, 1]]
    status, answer = server.request("POST", "/v2/models/broken_load/infer", b'{"inputs": []}')
    assert status == 503 and "broken on purpose" in answer["error"]
    status, answer = server.request("POST", "/v2/models/bad_config/infer", b'{"inputs": []}')
    assert (
        status == 503
        and "max_batch_sise" in answer["error"]
        and "max_batch_size" in answer["error"]
    )
    status, index = server.request("POST", "/v2/repository/index", b"")
    states = {row["name"]: row for row in index}
    assert states["good"]["state"] == "READY"
    assert states["broken_load"]["state"] == "FAILED"
    assert "broken on purpose" in states["broken_load"]["reason"]
    assert "config.pbtxt:6:1" in states["bad_config"]["reason"]
    assert "nonexistent" in states["no_backend"]["reason"]
    log = server.log()
    assert "not_a_version" in log and "must not start with 0" in log


def test_version_policy_selects_versions(tmp_path, plugins_dir, server_factory):
    repo = tmp_path / "repo"
    write_model(
        repo,
        "latest2",
        versions=(1, 2, 3),
        extra="version_policy: { latest: { num_versions: 2 } }\n",
    )
    write_model(
        repo,
        "specific",
        versions=(1, 2, 3),
        extra="version_policy: { specific: { versions: [1, 3] } }\n",
    )
    write_model(repo, "every", versions=(1, 2, 3), extra="version_policy: { all: {} }\n")
    write_model(repo, "default", versions=(1, 2, 3))
    server = server_factory(repo, "--plugins-dir", str(plugins_dir))
    with httpclient.InferenceServerClient(server.address) as client:
        ready = {
            name: [v for v in ("1", "2", "3") if client.is_model_ready(name, v)]
            for name in ("latest2", "specific", "every", "default")
        }
        assert ready == {
            "latest2": ["2", "3"],
            "specific": ["1", "3"],
            "every": ["1", "2", "3"],
            "default": ["3"],
        }
        inp = httpclient.InferInput("INPUT", [1, 4], "FP32")
        inp.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        assert client.infer("latest2", [inp]).get_response()["model_version"] == "3"
        assert (
            client.infer("latest2", [inp], model_version="2").get_response()["model_version"] == "2"
        )


def test_a_warning_field_loads_and_is_logged(tmp_path, plugins_dir, server_factory):
    repo = tmp_path / "repo"
    write_model(repo, "tuned", extra="optimization { graph { level: 1 } }\n")
    write_model(repo, "sequence", extra="sequence_batching { }\n")
    server = server_factory(repo, "--plugins-dir", str(plugins_dir))
    with httpclient.InferenceServerClient(server.address) as client:
        assert client.is_model_ready("tuned")
        assert not client.is_model_ready("sequence")
    assert "optimization" in server.log()
    status, answer = server.request("POST", "/v2/models/sequence/infer", b'{"inputs": []}')
    assert status == 503 and "sequence_batching" in answer["error"]


def test_sigterm_stops_cleanly_and_unloads(tmp_path, plugins_dir, server_factory):
    repo = tmp_path / "repo"
    write_model(repo, "m")
    server = server_factory(repo, "--plugins-dir", str(plugins_dir))
    assert server.stop() == 0
    log = server.log()
    assert "model m version 1: UNAVAILABLE" in log
    assert "stopped" in log


def test_help_explains_every_flag():
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "repoman", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert run.returncode == 0
    for flag in (
        "--model-repository",
        "--http-port",
        "--host",
        "--num-batch-threads",
        "--plugins-dir",
        "--block-plugin",
        "--max-request-size",
        "--log-level",
        "--switch-interval-us",
        "--grpc-port",
    ):
        assert flag in run.stdout


def test_a_bad_switch_interval_is_one_clear_line(tmp_path):
    import subprocess
    import sys

    (tmp_path / "repo").mkdir()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "repoman",
            "serve",
            "--model-repository",
            str(tmp_path / "repo"),
            "--http-port",
            "0",
            "--switch-interval-us",
            "0",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert run.returncode == 2
    assert "--switch-interval-us 0: must be at least 1" in run.stderr
    assert "Traceback" not in run.stderr


def test_plugins_command_lists_the_builtin_backend_from_its_entry_point():
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "repoman", "plugins"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "onnxruntime" in run.stdout and "onnxruntime_onnx" in run.stdout
    assert "plugin: onnxruntime" in run.stdout


def test_queue_deadlines_full_queues_and_priorities_over_http(
    tmp_path, plugins_dir, server_factory
):
    from concurrent.futures import ThreadPoolExecutor

    from tritonclient.utils import InferenceServerException

    repo = tmp_path / "repo"
    slow = 'parameters { key: "delay_ms" value: { string_value: "300" } }\n'
    write_model(
        repo,
        "deadline",
        max_batch_size=1,
        extra=slow
        + ("dynamic_batching { default_queue_policy { default_timeout_microseconds: 50000 } }\n"),
    )
    write_model(
        repo,
        "bounded",
        max_batch_size=1,
        extra=slow + ("dynamic_batching { default_queue_policy { max_queue_size: 1 } }\n"),
    )
    write_model(
        repo,
        "ranked",
        max_batch_size=1,
        extra=("dynamic_batching { priority_levels: 2 default_priority_level: 1 }\n"),
    )
    server = server_factory(repo, "--plugins-dir", str(plugins_dir), "--num-batch-threads", "1")

    def call(model, **kwargs):
        with httpclient.InferenceServerClient(server.address) as client:
            inp = httpclient.InferInput("INPUT", [1, 4], "FP32")
            inp.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
            try:
                client.infer(model, [inp], **kwargs)
                return "ok"
            except InferenceServerException as exc:
                return f"{exc.status()} {exc.message()}"

    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(lambda _: call("deadline"), range(3)))
    assert outcomes.count("ok") >= 1
    timed_out = [o for o in outcomes if o != "ok"]
    assert timed_out and all(o.startswith("504") and "timeout" in o for o in timed_out), outcomes

    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(lambda _: call("bounded"), range(3)))
    assert any(o.startswith("503") and "queue is full" in o for o in outcomes), outcomes
    assert outcomes.count("ok") >= 1

    assert call("ranked", priority=2) == "ok"
    assert call("ranked", priority=3).startswith("400")


def test_json_logs_are_one_object_per_line(tmp_path, plugins_dir, server_factory):
    import json

    repo = tmp_path / "repo"
    write_model(repo, "m")
    server = server_factory(repo, "--plugins-dir", str(plugins_dir), "--log-format", "json")
    assert server.stop() == 0
    records = [json.loads(line) for line in server.lines if line.startswith("{")]
    assert records and len(records) == len([line for line in server.lines if line.strip()])
    messages = [r["message"] for r in records]
    assert any("model m version 1: READY" in m for m in messages)
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
