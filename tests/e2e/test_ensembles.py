"""Ensembles served for real: ONNX and Python members, a fan-out/fan-in graph, batching with
direct traffic, a failing step, a member not ready, live edits and version swaps, unloading."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.e2e.ensemble_repo import (
    SPECIES,
    ensemble,
    fan_pipeline,
    fragile_pipeline,
    nested_pipeline,
    orphan_pipeline,
    python_model,
    species_pipeline,
    step,
)
from tests.serverproc import ServerProcess, start_server

POLL = ("--quiet-period", "0.2", "--repository-poll-secs", "2")
# Rows of iris measurements in millimetres, one of each species.
MEASURES_MM = np.array([[51, 35, 14, 2], [70, 32, 47, 14], [63, 33, 60, 25]], dtype=np.float32)


def wait_for(predicate, timeout: float = 30.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        time.sleep(0.05)


def infer(client, model: str, name: str, array: np.ndarray, outputs=None):
    tensor = httpclient.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    wanted = [httpclient.InferRequestedOutput(o) for o in outputs] if outputs else None
    return client.infer(model, [tensor], outputs=wanted)


def model_stats(server: ServerProcess, model: str) -> dict:
    status, body = server.get(f"/v2/models/{model}/stats")
    assert status == 200, body
    [row] = body["model_stats"]
    return row


def index_row(server: ServerProcess, model: str) -> dict:
    _, rows = server.request("POST", "/v2/repository/index", b"")
    return next(r for r in rows if r["name"] == model)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("ensembles")
    species_pipeline(repo)
    fan_pipeline(repo)
    fragile_pipeline(repo)
    process = start_server(repo, "--model-control-mode", "none")
    yield process
    process.stop()


@pytest.fixture
def client(server) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(server.address, network_timeout=30) as c:
        yield c


def test_a_python_onnx_python_pipeline_names_each_species(client) -> None:
    result = infer(client, "species", "MEASURES_MM", MEASURES_MM)
    assert [row[0] for row in result.as_numpy("SPECIES")] == list(SPECIES)
    assert result.as_numpy("LABEL").ravel().tolist() == [0, 1, 2]
    assert result.get_response()["model_name"] == "species"


def test_a_request_may_ask_for_one_output(client) -> None:
    result = infer(client, "species", "MEASURES_MM", MEASURES_MM[:1], outputs=["LABEL"])
    assert result.as_numpy("LABEL").tolist() == [[0]]
    assert result.as_numpy("SPECIES") is None


def test_a_fan_out_fan_in_graph_joins_both_branches(client) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    result = infer(client, "fan", "IN", x)
    np.testing.assert_array_equal(result.as_numpy("SUM"), x)  # 2x + (-x)
    np.testing.assert_array_equal(result.as_numpy("DOUBLED"), 2 * x)


def test_readiness_metadata_and_config_of_an_ensemble(server, client) -> None:
    assert client.is_model_ready("species")
    metadata = client.get_model_metadata("species")
    assert metadata["platform"] == "ensemble"
    assert [i["name"] for i in metadata["inputs"]] == ["MEASURES_MM"]
    assert metadata["inputs"][0]["shape"] == [-1, 4]
    config = client.get_model_config("species")
    steps = config["ensemble_scheduling"]["step"]
    assert [s["model_name"] for s in steps] == ["to_cm", "iris", "name_species"]
    assert index_row(server, "species")["state"] == "READY"


def test_a_bad_request_to_an_ensemble_is_refused_before_any_step(client) -> None:
    with pytest.raises(InferenceServerException) as info:
        infer(client, "species", "MEASURES_MM", np.zeros((1, 3), dtype=np.float32))
    assert "expected shape [-1, 4], found [1, 3]" in str(info.value)


def test_a_failing_step_fails_its_request_naming_step_and_member(server, client) -> None:
    ok = infer(client, "fragile_pipe", "IN", np.ones((1, 4), dtype=np.float32))
    np.testing.assert_array_equal(ok.as_numpy("OUT"), np.full((1, 4), 3.0))
    with pytest.raises(InferenceServerException) as info:
        infer(client, "fragile_pipe", "IN", -np.ones((1, 4), dtype=np.float32))
    message = str(info.value)
    assert "ensemble 'fragile_pipe': step 1 (model 'fragile' version 1) failed" in message
    assert "negative input" in message
    assert "Traceback" not in message
    # the ensemble counts it as failed, and keeps serving
    assert model_stats(server, "fragile_pipe")["inference_stats"]["fail"]["count"] >= 1
    infer(client, "fragile_pipe", "IN", np.ones((1, 4), dtype=np.float32))


def test_members_batch_ensemble_requests_with_direct_traffic(server) -> None:
    before = model_stats(server, "iris")
    x = MEASURES_MM[:1]
    errors: list[str] = []

    def one(index: int) -> None:
        with httpclient.InferenceServerClient(server.address, network_timeout=30) as c:
            try:
                for _ in range(10):
                    if index % 4 == 0:  # direct traffic to the ONNX member itself
                        got = infer(c, "iris", "features", x / 10).as_numpy("label")
                    else:
                        got = infer(c, "species", "MEASURES_MM", x).as_numpy("LABEL")
                    assert got.tolist() == [[0]]
            except Exception as exc:  # collected, asserted below
                errors.append(repr(exc))

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(one, range(32)))
    assert errors == []
    after = model_stats(server, "iris")
    rows = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert rows == 320
    assert executions < rows, "the member never formed a batch from concurrent requests"
    ensemble_stats = model_stats(server, "species")
    assert ensemble_stats["inference_stats"]["success"]["count"] >= 240


def test_statistics_and_metrics_cover_ensembles_and_their_members(server, client) -> None:
    infer(client, "fan", "IN", np.ones((1, 4), dtype=np.float32))
    row = model_stats(server, "fan")
    assert row["inference_count"] >= 1 and row["execution_count"] >= 1
    for member in ("double", "negate", "join", "copy"):
        assert model_stats(server, member)["execution_count"] >= 1
    text = _metrics(server)
    assert 'nv_inference_count{model="fan",version="1"}' in text
    assert 'repoman_version_state{model="fan",state="READY",version="1"} 1.0' in text


def _metrics(server: ServerProcess) -> str:
    import urllib.request

    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as response:
        return response.read().decode()


# ---- readiness follows the members ------------------------------------------------------


def test_a_member_missing_makes_the_ensemble_not_ready_until_it_comes(
    tmp_path: Path, server_factory
) -> None:
    repo = tmp_path / "repo"
    python_model(repo, "double", expr="x * 2")
    orphan_pipeline(repo)
    server = server_factory(repo, *POLL)
    with httpclient.InferenceServerClient(server.address, network_timeout=30) as client:
        assert not client.is_model_ready("orphan")
        row = index_row(server, "orphan")
        assert row["state"] == "UNAVAILABLE"
        assert "step 1 ('ghost'): unknown model: 'ghost'" in row["reason"]
        with pytest.raises(InferenceServerException) as info:
            infer(client, "orphan", "IN", np.ones((1, 4), dtype=np.float32))
        # NOTE: through front-ends the routing table adds "version 1 unavailable: "
        assert "model 'orphan' is not ready: " in str(info.value)
        assert "step 1 ('ghost'): unknown model: 'ghost'" in str(info.value)
        python_model(repo, "ghost", expr="x + 1")
        wait_for(lambda: client.is_model_ready("orphan"), message="orphan ready")
        result = infer(client, "orphan", "IN", np.ones((1, 4), dtype=np.float32))
        np.testing.assert_array_equal(result.as_numpy("OUT"), np.full((1, 4), 3.0))


def test_a_member_whose_config_does_not_fit_keeps_the_ensemble_unavailable(
    tmp_path: Path, server_factory
) -> None:
    repo = tmp_path / "repo"
    python_model(repo, "double", expr="x * 2")
    python_model(repo, "ghost", expr="x.astype(np.int32)", out_dtype="INT32")
    orphan_pipeline(repo)
    server = server_factory(repo, *POLL)
    row = index_row(server, "orphan")
    assert row["state"] == "UNAVAILABLE"
    assert (
        "ensemble tensor 'OUT': output 'Y' of step 1 ('ghost') is INT32 but ensemble output "
        "'OUT' expects FP32" in row["reason"]
    )
    assert "ensemble orphan version 1 cannot serve" in server.log()


# ---- hot reload under load ----------------------------------------------------------------


class Load:
    """Requests to one ensemble on a few threads until stopped; records outputs and errors."""

    def __init__(self, address: str, model: str, threads: int = 4, seconds: float = 60) -> None:
        self.address, self.model, self.seconds = address, model, seconds
        self.results: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        with httpclient.InferenceServerClient(self.address, network_timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    out = infer(client, self.model, "IN", np.ones((1, 4), dtype=np.float32))
                    self.results.append(float(out.as_numpy("OUT")[0, 0]))
                except Exception as exc:  # collected, asserted by the test
                    self.errors.append(repr(exc))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def settles_on(self, value: float) -> bool:
        return len(self.results) > 20 and self.results[-10:] == [value] * 10


CHAIN = """
platform: "ensemble"
max_batch_size: 8
input [{{ name: "IN" data_type: TYPE_FP32 dims: [ 4 ] }}]
output [{{ name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] }}]
ensemble_scheduling {{
{steps}}}
"""


def test_a_member_version_and_an_ensemble_edit_apply_live_without_a_failed_request(
    tmp_path: Path, server_factory
) -> None:
    repo = tmp_path / "repo"
    python_model(repo, "double", expr="x * 2")
    python_model(repo, "triple", expr="x * 3")
    ensemble(repo, "chain", CHAIN.format(steps=step("double", {"X": "IN"}, {"Y": "OUT"})))
    server = server_factory(repo, *POLL)
    with Load(server.address, "chain") as load:
        wait_for(lambda: load.settles_on(2.0), message="traffic through double v1")
        # a new version of the member (staged outside, moved in whole) takes over
        staged = tmp_path / "v2"
        python_model(staged, "double", expr="x * 2 + 10")
        (staged / "double" / "1").rename(repo / "double" / "2")
        wait_for(lambda: load.settles_on(12.0), message="traffic through double v2")
        # the ensemble's own config changes: its step now uses another member
        text = CHAIN.format(steps=step("triple", {"X": "IN"}, {"Y": "OUT"}))
        staged_config = tmp_path / "config.pbtxt"
        staged_config.write_text(text)
        staged_config.replace(repo / "chain" / "config.pbtxt")
        wait_for(lambda: load.settles_on(3.0), message="traffic through the edited ensemble")
    assert load.errors == []
    assert {2.0, 12.0, 3.0} <= set(load.results)


# ---- the repository API -----------------------------------------------------------------------


def _post(server: ServerProcess, path: str, payload: dict | None = None) -> tuple[int, dict]:
    body = json.dumps(payload).encode() if payload is not None else b""
    return server.request("POST", path, body, {"Content-Type": "application/json"})


def test_loading_an_ensemble_loads_its_members_and_unload_dependents_unloads_them(
    tmp_path: Path, server_factory
) -> None:
    repo = tmp_path / "repo"
    fan_pipeline(repo)
    fragile_pipeline(repo)  # shares 'double' with fan
    server = server_factory(repo, "--model-control-mode", "explicit")
    assert _post(server, "/v2/repository/models/fan/load") == (200, {})
    assert _post(server, "/v2/repository/models/fragile_pipe/load") == (200, {})
    loaded = {
        r["name"] for r in _post(server, "/v2/repository/index")[1] if r.get("state") == "READY"
    }
    assert loaded == {"fan", "double", "negate", "join", "copy", "fragile_pipe", "fragile"}
    status, _ = _post(
        server, "/v2/repository/models/fan/unload", {"parameters": {"unload_dependents": True}}
    )
    assert status == 200
    rows = _post(server, "/v2/repository/index")[1]
    loaded = {r["name"] for r in rows if r.get("state") == "READY"}
    # 'double' stays: fragile_pipe still uses it
    assert loaded == {"double", "fragile_pipe", "fragile"}
    status, body = _post(
        server, "/v2/repository/models/fragile_pipe/unload", {"parameters": {"unload_x": 1}}
    )
    assert status == 400 and "unsupported unload parameter" in body["error"]
    status, _ = _post(server, "/v2/repository/models/fragile_pipe/unload")
    assert status == 200
    loaded = {
        r["name"] for r in _post(server, "/v2/repository/index")[1] if r.get("state") == "READY"
    }
    assert loaded == {"double", "fragile"}  # without unload_dependents, members stay


def test_unload_dependents_over_grpc_unloads_members_nobody_else_uses(
    tmp_path: Path, server_factory
) -> None:
    import tritonclient.grpc as grpcclient

    repo = tmp_path / "repo"
    fan_pipeline(repo)
    fragile_pipeline(repo)  # shares 'double' with fan
    server = server_factory(repo, "--model-control-mode", "explicit")
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        client.load_model("fan")
        client.load_model("fragile_pipe")
        client.unload_model("fan", unload_dependents=True)
        index = client.get_model_repository_index(as_json=True)["models"]
    loaded = {row["name"] for row in index if row.get("state") == "READY"}
    assert loaded == {"double", "fragile_pipe", "fragile"}  # 'double': fragile_pipe uses it


def test_loading_an_ensemble_with_a_missing_member_fails_naming_it(
    tmp_path: Path, server_factory
) -> None:
    repo = tmp_path / "repo"
    python_model(repo, "double", expr="x * 2")
    orphan_pipeline(repo)
    server = server_factory(repo, "--model-control-mode", "explicit")
    status, body = _post(server, "/v2/repository/models/orphan/load")
    assert status == 400
    assert "failed to load 'orphan'" in body["error"] and "member 'ghost'" in body["error"]
    # not loaded, as in Triton: the index says why; its member 'double' did load
    row = index_row(server, "orphan")
    assert row["state"] == "FAILED", row
    assert "step 1 ('ghost'): unknown model: 'ghost'" in row["reason"]
    assert index_row(server, "double")["state"] == "READY"
    with httpclient.InferenceServerClient(server.address, network_timeout=30) as client:
        assert not client.is_model_ready("orphan")
        python_model(repo, "ghost", expr="x + 1")
        # it stays failed until loaded again, which now loads the member too
        assert index_row(server, "orphan")["state"] == "FAILED"
        assert _post(server, "/v2/repository/models/orphan/load") == (200, {})
        result = infer(client, "orphan", "IN", np.ones((1, 4), dtype=np.float32))
        np.testing.assert_array_equal(result.as_numpy("OUT"), np.full((1, 4), 3.0))
    assert "cannot serve" not in server.log()


def test_a_config_fetched_as_json_over_grpc_loads_back_over_http_and_grpc(
    tmp_path: Path, server_factory
) -> None:
    import tritonclient.grpc as grpcclient

    repo = tmp_path / "repo"
    species_pipeline(repo)
    server = server_factory(repo, "--model-control-mode", "explicit", "--load-model", "species")
    with (
        grpcclient.InferenceServerClient(server.grpc_address) as grpc,
        httpclient.InferenceServerClient(server.address, network_timeout=30) as http,
    ):
        for model in ("species", "iris", "to_cm"):
            fetched = grpc.get_model_config(model, as_json=True)["config"]
            # protobuf's JSON writes 64-bit integers as strings: "dims": ["4"], ...
            assert fetched["input"][0]["dims"] == ["4"], fetched
            http.load_model(model, config=json.dumps(fetched))
            grpc.load_model(model, config=json.dumps(fetched))
            assert grpc.get_model_config(model, as_json=True)["config"] == fetched
        steps = grpc.get_model_config("species", as_json=True)["config"]["ensemble_scheduling"]
        assert {step["model_version"] for step in steps["step"]} == {"-1"}
        result = infer(http, "species", "MEASURES_MM", MEASURES_MM)
        assert [row[0] for row in result.as_numpy("SPECIES")] == list(SPECIES)


# ---- nested ensembles, shutting down ---------------------------------------------------------


def test_a_nested_ensemble_runs_end_to_end_and_the_server_stops_quietly(
    tmp_path: Path, server_factory
) -> None:
    repo = tmp_path / "repo"
    fan_pipeline(repo)
    nested_pipeline(repo)
    server = server_factory(repo, "--model-control-mode", "explicit", "--load-model", "nested")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    with httpclient.InferenceServerClient(server.address, network_timeout=30) as client:
        for _ in range(3):
            result = infer(client, "nested", "IN", x)
            np.testing.assert_array_equal(result.as_numpy("OUT"), 4 * x)
            np.testing.assert_array_equal(result.as_numpy("SUM"), x)
    # loading the outer ensemble loaded the inner one and its members
    assert index_row(server, "fan")["state"] == "READY"
    outer, inner = model_stats(server, "nested"), model_stats(server, "fan")
    assert outer["inference_count"] == inner["inference_count"] == 6
    assert outer["inference_stats"]["success"]["count"] == 3
    # the outer ensemble's compute time holds the inner one's (the sum of its steps')
    for kind in ("compute_infer", "compute_input"):
        assert outer["inference_stats"][kind]["ns"] > inner["inference_stats"][kind]["ns"] > 0
    assert server.stop() == 0, server.log()
    assert "cannot serve" not in server.log(), server.log()


# ---- front-end processes --------------------------------------------------------------------


def test_ensembles_run_in_the_core_behind_front_ends(tmp_path: Path, server_factory) -> None:
    repo = tmp_path / "repo"
    fan_pipeline(repo)
    server = server_factory(
        repo, "--http-workers", "2", "--model-control-mode", "explicit", "--load-model", "fan"
    )
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    for _ in range(6):  # a connection each: the kernel spreads them over both front-ends
        with httpclient.InferenceServerClient(server.address, network_timeout=30) as client:
            result = infer(client, "fan", "IN", x)
            np.testing.assert_array_equal(result.as_numpy("SUM"), x)
    assert model_stats(server, "fan")["inference_count"] == 6
    assert _post(server, "/v2/repository/models/negate/unload") == (200, {})
    assert index_row(server, "fan")["state"] == "UNAVAILABLE"
    with (
        httpclient.InferenceServerClient(server.address, network_timeout=30) as client,
        pytest.raises(InferenceServerException) as info,
    ):
        infer(client, "fan", "IN", x)
    assert "step 1 ('negate')" in str(info.value)
