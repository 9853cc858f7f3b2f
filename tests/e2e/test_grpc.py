"""KServe v2 over gRPC (Triton's GRPCInferenceService), driven by tritonclient.grpc and its
asyncio client: every RPC, every datatype, errors with their gRPC codes, the repository
extension, access control, and the same counts whichever transport a request took."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.conftest import BUNDLED, ROOT
from tests.e2e.test_serving import ALL_TYPES, sample
from tests.fakes import write_model

SLOW = 'parameters { key: "delay_ms" value: { string_value: "300" } }\n'
TOKEN = "t0k"


class AioClient:
    """tritonclient.grpc.aio's client, called like the sync one: its coroutines run on a loop
    in a thread of its own (the client belongs to the loop that made it)."""

    def __init__(self, address: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client = self._run(self._make(address))

    @staticmethod
    async def _make(address: str) -> aioclient.InferenceServerClient:
        return aioclient.InferenceServerClient(address)

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(60)

    def __getattr__(self, name: str):
        method = getattr(self._client, name)
        return lambda *args, **kwargs: self._run(method(*args, **kwargs))

    def close(self) -> None:
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def connect(address: str, kind: str):
    return grpcclient.InferenceServerClient(address) if kind == "sync" else AioClient(address)


def failure(call, *args, **kwargs) -> tuple[str, str]:
    """(gRPC code name, message) of a call that must fail."""
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    return caught.value.status().removeprefix("StatusCode."), caught.value.message()


def http_error(server, path: str, body: dict) -> tuple[int, str]:
    status, answer = server.request(
        "POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    return status, answer.get("error", "")


def fp32_input(name: str, shape: list[int]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, shape, "FP32")
    tensor.set_data_from_numpy(np.ones(shape, dtype=np.float32))
    return tensor


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("grpc") / "repo"
    for datatype in ALL_TYPES:
        config_type = "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"
        write_model(repo, f"echo_{datatype.lower()}", data_type=config_type, dims=(2, 3))
    write_model(repo, "counted")
    write_model(repo, "bounded", max_batch_size=1, extra=SLOW + (
        "dynamic_batching { default_queue_policy { max_queue_size: 1 } }\n"))
    write_model(repo, "deadline", max_batch_size=1, extra=SLOW + (
        "dynamic_batching { default_queue_policy { default_timeout_microseconds: 50000 } }\n"))
    shutil.copytree(BUNDLED / "digits", repo / "digits")
    return repo


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    from tests.serverproc import start_server

    plugins = tmp_path_factory.mktemp("plugins")
    shutil.copy(ROOT / "tests" / "fakes.py", plugins / "fakes.py")
    started = start_server(repo, "--plugins-dir", str(plugins), "--num-batch-threads", "2")
    yield started
    assert started.stop() == 0, started.log()


@pytest.fixture(params=["sync", "aio"])
def client(request, server):
    made = connect(server.grpc_address, request.param)
    yield made
    made.close()


# ---- health and metadata ------------------------------------------------------------------


def test_health_and_server_metadata_match_http(server, client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "1")
    metadata = client.get_server_metadata(as_json=True)
    assert metadata == server.get("/v2")[1]


def test_model_metadata_matches_http(server, client):
    found = client.get_model_metadata("digits", as_json=True)
    for tensor in found["inputs"] + found["outputs"]:
        tensor["shape"] = [int(d) for d in tensor["shape"]]  # int64: strings in proto JSON
    assert found == server.get("/v2/models/digits")[1]
    assert client.get_model_metadata("digits", "1", as_json=True)["name"] == "digits"


@pytest.mark.parametrize("model", ["digits", "bounded", "echo_bytes"])
def test_model_config_is_the_normalised_config_in_tritons_message(server, client, model):
    http_config = server.get(f"/v2/models/{model}/config")[1]
    expected = json_format.ParseDict(http_config, model_config_pb2.ModelConfig())
    found = client.get_model_config(model)
    assert found.config == expected
    as_json = client.get_model_config(model, as_json=True)["config"]
    assert as_json == json.loads(json_format.MessageToJson(expected, preserving_proto_field_name=True))
    assert as_json["name"] == model and as_json["max_batch_size"] == http_config["max_batch_size"]


def test_unknown_models_and_versions_are_not_found(client):
    assert failure(client.is_model_ready, "nope") == ("NOT_FOUND", "unknown model: 'nope'")
    assert failure(client.get_model_metadata, "digits", "7") == (
        "NOT_FOUND", "unknown version 7 of model 'digits'")
    assert failure(client.get_model_config, "nope")[0] == "NOT_FOUND"
    assert failure(client.get_inference_statistics, "nope")[0] == "NOT_FOUND"
    code, message = failure(client.get_model_metadata, "digits", "x1")
    assert code == "INVALID_ARGUMENT" and "invalid model version 'x1'" in message


# ---- inference ------------------------------------------------------------------------------


def test_every_datatype_round_trips_as_raw_contents(client):
    for datatype in ALL_TYPES:
        data = sample(datatype, (2, 2, 3))
        tensor = grpcclient.InferInput("INPUT", list(data.shape), datatype)
        tensor.set_data_from_numpy(data)
        result = client.infer(f"echo_{datatype.lower()}", [tensor])
        got = result.as_numpy("OUTPUT")
        assert got.dtype == data.dtype or datatype == "BYTES", datatype
        assert got.shape == data.shape and (got == data).all(), datatype
        assert result.get_output("OUTPUT").datatype == datatype


def test_bytes_carry_any_bytes(client):
    data = np.array([b"", b"\xff\xfe not utf-8", "h\u00e9".encode(), b"\x00" * 5, b"a", b"bc"],
                    dtype=object).reshape(1, 2, 3)
    tensor = grpcclient.InferInput("INPUT", [1, 2, 3], "BYTES")
    tensor.set_data_from_numpy(data)
    got = client.infer("echo_bytes", [tensor]).as_numpy("OUTPUT")
    assert got.shape == (1, 2, 3) and list(got.reshape(-1)) == list(data.reshape(-1))


CONTENTS = {
    "BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "INT8": "int_contents",
    "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


@pytest.fixture
def stub(server):
    """The generated stub, for what tritonclient never sends (typed ``contents``)."""
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def typed_request(model: str, datatype: str, data: np.ndarray) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, id="typed-1")
    tensor = request.inputs.add(name="INPUT", datatype=datatype, shape=data.shape)
    getattr(tensor.contents, CONTENTS[datatype]).extend(data.reshape(-1).tolist())
    return request


def test_every_datatype_is_read_from_typed_contents(stub):
    for datatype, field in CONTENTS.items():
        data = sample(datatype, (1, 2, 3))
        answer = stub.ModelInfer(typed_request(f"echo_{datatype.lower()}", datatype, data))
        assert answer.id == "typed-1" and answer.model_version == "1", datatype
        output = answer.outputs[0]
        assert (output.name, output.datatype, list(output.shape)) == ("OUTPUT", datatype, [1, 2, 3])
        result = grpcclient.InferResult(answer)
        got = result.as_numpy("OUTPUT")
        assert (got == data).all(), (datatype, field)


def test_typed_contents_errors_name_the_field(stub):
    request = typed_request("echo_int8", "INT8", np.array([[[1, 2, 300], [4, 5, 6]]]))
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "input 'INPUT': value integer 300 is out of range for INT8"
    request = typed_request("echo_fp32", "FP32", np.ones((1, 2, 3)))
    del request.inputs[0].contents.fp32_contents[-1]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert "contents.fp32_contents has 5" in caught.value.details()
    request = service_pb2.ModelInferRequest(model_name="echo_fp16")
    request.inputs.add(name="INPUT", datatype="FP16", shape=[1, 2, 3])
    request.inputs[0].contents.fp32_contents.extend([1.0] * 6)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert "FP16 has no typed contents field" in caught.value.details()


def test_requested_outputs_id_and_parameters(client):
    pixels = fp32_input("pixels", [3, 64])
    result = client.infer("digits", [pixels], request_id="req-7",
                          outputs=[grpcclient.InferRequestedOutput("label")])
    response = result.get_response(as_json=True)
    assert response["id"] == "req-7" and response["model_version"] == "1"
    assert [o["name"] for o in response["outputs"]] == ["label"]
    assert result.as_numpy("label").shape == (3, 1)
    result = client.infer("digits", [pixels], model_version="1", priority=0, timeout=10_000_000)
    assert {o["name"] for o in result.get_response(as_json=True)["outputs"]} == {
        "probabilities", "label"}
    code, message = failure(client.infer, "digits", [pixels], outputs=[
        grpcclient.InferRequestedOutput("label", class_count=2)])
    assert code == "INVALID_ARGUMENT" and "'classification' parameter is not supported" in message
    code, message = failure(client.infer, "digits", [pixels], outputs=[
        grpcclient.InferRequestedOutput("nope")])
    assert code == "INVALID_ARGUMENT" and "unknown output 'nope'" in message


def test_bad_requests_get_invalid_argument_with_the_http_message(server, client):
    def http(body: dict) -> str:
        status, message = http_error(server, "/v2/models/digits/infer", body)
        assert status == 400
        return message

    code, message = failure(client.infer, "digits", [fp32_input("pixels", [2, 63])])
    assert code == "INVALID_ARGUMENT"
    assert message == http({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [2, 63],
                                        "data": [0.0] * 126}]})
    tensor = grpcclient.InferInput("pixels", [1, 64], "INT32")
    tensor.set_data_from_numpy(np.zeros((1, 64), dtype=np.int32))
    code, message = failure(client.infer, "digits", [tensor])
    assert code == "INVALID_ARGUMENT" and "expected datatype FP32, found INT32" in message
    assert message == http({"inputs": [{"name": "pixels", "datatype": "INT32", "shape": [1, 64],
                                        "data": [0] * 64}]})
    code, message = failure(client.infer, "digits", [fp32_input("other", [1, 64])])
    assert code == "INVALID_ARGUMENT" and "unexpected input 'other'" in message
    code, message = failure(client.infer, "digits", [fp32_input("pixels", [33, 64])])
    assert code == "INVALID_ARGUMENT" and "exceeds the model's max_batch_size 32" in message
    code, message = failure(client.infer, "nope", [fp32_input("pixels", [1, 64])])
    assert (code, message) == ("NOT_FOUND", "unknown model: 'nope'")
    code, message = failure(client.infer, "digits", [fp32_input("pixels", [1, 64])],
                            model_version="9")
    assert (code, message) == ("NOT_FOUND", "unknown version 9 of model 'digits'")


def test_malformed_raw_contents_are_invalid_argument(stub):
    def refused(request) -> str:
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        return caught.value.details()

    request = service_pb2.ModelInferRequest(model_name="digits")
    request.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(b"\0" * 255)
    assert refused(request) == (
        "input 'pixels': FP32 shape [1, 64] needs 256 bytes, its raw_input_contents has 255")
    request.raw_input_contents.append(b"")
    assert "1 inputs and 2 raw_input_contents" in refused(request)
    request = service_pb2.ModelInferRequest(model_name="digits")
    request.inputs.add(name="pixels", datatype="FP99", shape=[1, 64])
    assert "unknown datatype \"FP99\"" in refused(request)
    request = service_pb2.ModelInferRequest(model_name="digits")
    request.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    assert refused(request) == "input 'pixels' needs 'contents' or raw_input_contents"
    request = service_pb2.ModelInferRequest(model_name="echo_bytes")
    request.inputs.add(name="INPUT", datatype="BYTES", shape=[1, 2, 3])
    request.raw_input_contents.append(b"\x05\0\0\0ab")
    assert "BYTES element 0 declares 5 bytes" in refused(request)


def test_a_full_queue_is_resource_exhausted_and_a_deadline_is_deadline_exceeded(server):
    def call(model: str) -> str:
        with grpcclient.InferenceServerClient(server.grpc_address) as client:
            try:
                client.infer(model, [fp32_input("INPUT", [1, 4])])
                return "ok"
            except InferenceServerException as exc:
                return f"{exc.status()} {exc.message()}"

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda _: call("bounded"), range(4)))
    assert outcomes.count("ok") >= 1
    assert any(o.startswith("StatusCode.RESOURCE_EXHAUSTED") and "queue is full" in o
               for o in outcomes), outcomes
    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(lambda _: call("deadline"), range(3)))
    late = [o for o in outcomes if o != "ok"]
    assert late and all(o.startswith("StatusCode.DEADLINE_EXCEEDED") for o in late), outcomes


def metric(server, name: str, model: str) -> float:
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(f'{name}{{model="{model}"'):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} for {model}")


def test_statistics_and_metrics_count_each_request_once_whichever_transport(server, client):
    def successes() -> int:
        stats = client.get_inference_statistics("counted", "1", as_json=True)["model_stats"][0]
        return int(stats["inference_stats"]["success"].get("count", 0))

    before, metric_before = successes(), metric(server, "nv_inference_request_success", "counted")
    for _ in range(3):
        client.infer("counted", [fp32_input("INPUT", [1, 4])])
    with httpclient.InferenceServerClient(server.address) as http:
        tensor = httpclient.InferInput("INPUT", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        http.infer("counted", [tensor])
        http_stats = http.get_inference_statistics("counted")["model_stats"][0]
    assert successes() == before + 4
    assert http_stats["inference_stats"]["success"]["count"] == before + 4
    assert metric(server, "nv_inference_request_success", "counted") == metric_before + 4
    everything = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {"counted", "digits"} <= {row["name"] for row in everything}


def test_unsupported_rpcs_are_unimplemented_with_a_reason(client):
    code, message = failure(client.get_system_shared_memory_status)
    assert code == "UNIMPLEMENTED" and "shared memory is not supported" in message
    code, message = failure(client.unregister_cuda_shared_memory)
    assert code == "UNIMPLEMENTED" and "shared memory is not supported" in message
    code, message = failure(client.get_trace_settings)
    assert code == "UNIMPLEMENTED" and "trace settings" in message
    code, message = failure(client.get_log_settings)
    assert code == "UNIMPLEMENTED" and "--log-level" in message


def test_stream_infer_is_unimplemented_with_a_reason(server):
    outcomes: list = []
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        client.start_stream(callback=lambda result, error: outcomes.append(error))
        # NOTE: the server answers the stream at once; sending may already find it closed.
        with contextlib.suppress(InferenceServerException):
            client.async_stream_infer("digits", [fp32_input("pixels", [1, 64])])
        deadline = time.monotonic() + 20
        while not outcomes and time.monotonic() < deadline:
            time.sleep(0.05)
        client.stop_stream()
    assert outcomes and outcomes[0] is not None, outcomes
    assert "UNIMPLEMENTED" in str(outcomes[0].status()) and "ModelStreamInfer" in str(outcomes[0])


# ---- the repository extension, access control, limits ------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    from tests.serverproc import start_server

    repo = tmp_path_factory.mktemp("guarded") / "repo"
    shutil.copytree(BUNDLED / "digits", repo / "digits")
    shutil.copytree(BUNDLED / "iris", repo / "iris")
    started = start_server(
        repo, "--model-control-mode", "explicit", "--load-model", "digits",
        "--control-token", TOKEN, "--protect-inference", "--max-request-size", "100000",
    )
    yield started
    assert started.stop() == 0, started.log()


@pytest.fixture(params=["sync", "aio"])
def guarded_client(request, guarded):
    made = connect(guarded.grpc_address, request.param)
    yield made
    made.close()


AUTH = {"authorization": f"Bearer {TOKEN}"}


def test_the_control_token_guards_the_repository_and_inference(guarded_client):
    client = guarded_client
    assert client.is_server_live() and client.is_server_ready()  # health stays open
    code, message = failure(client.get_model_repository_index)
    assert (code, message) == ("UNAUTHENTICATED",
                               "this endpoint needs 'Authorization: Bearer <token>'")
    code, message = failure(client.get_model_repository_index,
                            headers={"authorization": "Bearer wrong"})
    assert (code, message) == ("PERMISSION_DENIED",
                               "the bearer token is not valid for this endpoint")
    assert failure(client.infer, "digits", [fp32_input("pixels", [1, 64])])[0] == (
        "UNAUTHENTICATED")
    assert failure(client.get_model_metadata, "digits")[0] == "UNAUTHENTICATED"
    result = client.infer("digits", [fp32_input("pixels", [1, 64])], headers=AUTH)
    assert result.as_numpy("label").shape == (1, 1)


def test_load_unload_and_index_over_grpc(guarded, guarded_client):
    client = guarded_client
    index = client.get_model_repository_index(headers=AUTH, as_json=True)["models"]
    assert {row["name"] for row in index} == {"digits"}
    client.load_model("iris", headers=AUTH)
    assert client.is_model_ready("iris", headers=AUTH)
    index = client.get_model_repository_index(headers=AUTH, as_json=True)["models"]
    assert {(row["name"], row["state"]) for row in index} >= {("iris", "READY")}
    # NOTE: the config as HTTP shows it: proto JSON (as_json) writes int64 values as strings,
    # which repoman's config reader refuses where Triton's takes them.
    config = guarded.request("GET", "/v2/models/iris/config", None, {"Authorization": f"Bearer {TOKEN}"})[1]
    config["max_batch_size"] = 4
    client.load_model("iris", headers=AUTH, config=json.dumps(config))
    reloaded = client.get_model_config("iris", headers=AUTH, as_json=True)["config"]
    assert reloaded["max_batch_size"] == 4
    client.unload_model("iris", headers=AUTH, unload_dependents=True)
    assert failure(client.is_model_ready, "iris", headers=AUTH)[0] in ("NOT_FOUND", "UNAVAILABLE")
    code, message = failure(client.load_model, "nope", headers=AUTH)
    assert code in ("INVALID_ARGUMENT", "NOT_FOUND") and "nope" in message
    code, message = failure(client.load_model, "iris", headers=AUTH, config="{not json")
    assert code == "INVALID_ARGUMENT", message
    code, message = failure(client.load_model, "iris", headers=AUTH, files={"file:1/x": b"1"})
    assert code == "INVALID_ARGUMENT" and "unsupported load parameter(s)" in message


def test_a_message_over_the_size_limit_is_resource_exhausted(guarded_client):
    tensor = fp32_input("pixels", [32, 64 * 20])  # 160 KiB: over --max-request-size 100000
    code, _ = failure(guarded_client.infer, "digits", [tensor], headers=AUTH)
    assert code == "RESOURCE_EXHAUSTED"


# ---- the listener -------------------------------------------------------------------------


def test_a_taken_grpc_port_is_one_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "repoman", "serve", "--model-repository", str(BUNDLED),
             "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", str(port)],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_grpc_port_minus_one_turns_grpc_off(server_factory):
    server = server_factory(BUNDLED, "--grpc-port", "-1")
    assert server.grpc_port == 0
    assert not any("grpc://" in line for line in server.lines)
    with urllib.request.urlopen(server.url + "/v2/health/ready", timeout=10) as answer:
        assert answer.status == 200


def test_grpc_is_served_by_every_front_end(server_factory, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED / "digits", repo / "digits")
    server = server_factory(repo, "--http-workers", "2")
    # NOTE: a channel per call: new connections, which the kernel spreads over the front-ends.
    for _ in range(8):
        with grpcclient.InferenceServerClient(server.grpc_address) as client:
            assert client.infer("digits", [fp32_input("pixels", [1, 64])]).as_numpy("label").shape == (1, 1)
            assert failure(client.infer, "digits", [fp32_input("pixels", [1, 65])])[0] == (
                "INVALID_ARGUMENT")
    # The front-ends checked the bad shapes and told the core, which counts each once (the
    # note may trail the answer by a loop iteration: polled, bounded).
    deadline = time.monotonic() + 10
    while True:
        with grpcclient.InferenceServerClient(server.grpc_address) as client:
            stats = client.get_inference_statistics("digits", as_json=True)["model_stats"][0]
        fails = int(stats["inference_stats"].get("fail", {}).get("count", 0))
        if fails == 8 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert int(stats["inference_stats"]["success"]["count"]) == 8
    assert fails == 8


@pytest.mark.parametrize(("args", "said"), [
    (["--grpc-port", "70000"], "--grpc-port 70000: must be a port number"),
    (["--grpc-port", "8123", "--http-port", "8123"], "it is the HTTP port too"),
])
def test_a_bad_grpc_port_is_one_clear_line(tmp_path, args, said):
    (tmp_path / "repo").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "repoman", "serve", "--model-repository", str(tmp_path / "repo"),
         "--http-port", "0", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
