"""Python models calling models (Triton's BLS), through the real server and tritonclient.

The server runs with one batch worker (--num-batch-threads 1): a call from inside a batch
that waited for a worker would wait forever, so every test here also checks that a waiting
batch lends its worker.
"""

from __future__ import annotations

import shutil
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.serverproc import ROOT, ServerProcess, start_server

MEASURES_MM = np.array([[51, 35, 14, 2], [70, 32, 47, 14], [63, 33, 60, 25]], dtype=np.float32)

ADD_ONE = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(
                "Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() + 1)])
            for r in requests
        ]
"""

ADD_ONE_CONFIG = """
backend: "python"
max_batch_size: 64
input [{ name: "X" data_type: TYPE_INT32 dims: [ 2 ] }]
output [{ name: "Y" data_type: TYPE_INT32 dims: [ 2 ] }]
dynamic_batching { max_queue_delay_microseconds: 3000 }
"""

FAILS = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        error = pb_utils.TritonError("no such id", pb_utils.TritonError.NOT_FOUND)
        return [pb_utils.InferenceResponse(error=error) for _ in requests]
"""

SLOW = """
import time
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        time.sleep(3)
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())]) for r in requests]
"""

# Calls TARGET with X (exec, sync) and reports the response: Y, or the error's code and
# message as outputs (so the test sees exactly what the model saw).
CALLER = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            target = pb_utils.get_input_tensor_by_name(r, "TARGET").as_numpy()[0].decode()
            timeout = int(pb_utils.get_input_tensor_by_name(r, "TIMEOUT").as_numpy()[0])
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            if target == "add_one:float":
                target, x = "add_one", x.astype(np.float32)  # the wrong datatype on purpose
            response = pb_utils.InferenceRequest(
                model_name=target, requested_output_names=["Y"],
                inputs=[pb_utils.Tensor("X", x.reshape(1, -1))], timeout=timeout,
            ).exec()
            if response.has_error():
                y, code, message = np.zeros(2, np.int32), response.error().code(), \\
                    response.error().message()
            else:
                y, code, message = pb_utils.get_output_tensor_by_name(
                    response, "Y").as_numpy().reshape(2), -1, ""
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("Y", y),
                pb_utils.Tensor("CODE", np.array([code], np.int32)),
                pb_utils.Tensor("MESSAGE", np.array([message.encode()], object)),
            ]))
        return out
"""

CALLER_CONFIG = """
backend: "python"
input [
  { name: "X" data_type: TYPE_INT32 dims: [ 2 ] },
  { name: "TARGET" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "TIMEOUT" data_type: TYPE_INT64 dims: [ 1 ] }
]
output [
  { name: "Y" data_type: TYPE_INT32 dims: [ 2 ] },
  { name: "CODE" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "MESSAGE" data_type: TYPE_STRING dims: [ 1 ] }
]
instance_group [{ count: 4 }]
"""

# An async execute: N calls to add_one in flight at once, awaited with asyncio.gather.
FAN_OUT = """
import asyncio
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    async def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            calls = [
                pb_utils.InferenceRequest(
                    model_name="add_one", requested_output_names=["Y"],
                    inputs=[pb_utils.Tensor("X", (x + i).reshape(1, 2))],
                ).async_exec()
                for i in range(8)
            ]
            responses = await asyncio.gather(*calls)
            assert not any(response.has_error() for response in responses)
            total = sum(pb_utils.get_output_tensor_by_name(response, "Y").as_numpy()
                        for response in responses)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", total.reshape(2))]))
        return out
"""

SINGLE_CONFIG = """
backend: "python"
input [{ name: "X" data_type: TYPE_INT32 dims: [ 2 ] }]
output [{ name: "Y" data_type: TYPE_INT32 dims: [ 2 ] }]
"""

# X[0] levels deep: calls itself with X[0] - 1, adds 1 to X[1] on the way back; a refused
# call answers X[1] = -code.
RECURSE = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            if x[0] == 0:
                y = x
            else:
                response = pb_utils.InferenceRequest(
                    model_name=self.name, requested_output_names=["Y"],
                    inputs=[pb_utils.Tensor("X", np.array([x[0] - 1, x[1]], np.int32))],
                ).exec()
                if response.has_error():
                    y = np.array([0, -response.error().code()], np.int32)
                else:
                    y = pb_utils.get_output_tensor_by_name(response, "Y").as_numpy() + [0, 1]
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y.astype(np.int32))]))
        return out
"""

# A conditional pipeline: small values go to add_one, others to iris's preprocessing.
ROUTER = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            if x.sum() < 100:
                response = pb_utils.InferenceRequest(
                    "add_one", ["Y"], [pb_utils.Tensor("X", x.reshape(1, 2))]).exec()
                y = pb_utils.get_output_tensor_by_name(response, "Y").as_numpy().reshape(2)
            else:
                mm = np.array([[x[0], x[1], x[0], x[1]]], np.float32)
                response = pb_utils.InferenceRequest(
                    "iris_preprocess", ["features"],
                    [pb_utils.Tensor("measurements_mm", mm)]).exec()
                cm = pb_utils.get_output_tensor_by_name(response, "features").as_numpy()
                y = cm[0, :2].astype(np.int32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y)]))
        return out
"""

# Calls add_one only when X[0] is positive; otherwise answers X itself, without a call.
SOMETIMES = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            if x[0] > 0:
                response = pb_utils.InferenceRequest(
                    "add_one", ["Y"], [pb_utils.Tensor("X", x.reshape(1, 2))]).exec()
                x = pb_utils.get_output_tensor_by_name(response, "Y").as_numpy().reshape(2)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x)]))
        return out
"""


def add_model(repo: Path, name: str, code: str, config: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(code))
    (repo / name / "config.pbtxt").write_text(textwrap.dedent(config))


def make_repository(repo: Path) -> None:
    for bundled in ("iris", "iris_preprocess", "iris_postprocess", "iris_bls"):
        shutil.copytree(ROOT / "model_repository" / bundled, repo / bundled)
    add_model(repo, "add_one", ADD_ONE, ADD_ONE_CONFIG)
    add_model(repo, "fails", FAILS, ADD_ONE_CONFIG)
    add_model(repo, "slow", SLOW, ADD_ONE_CONFIG)
    add_model(repo, "caller", CALLER, CALLER_CONFIG)
    add_model(repo, "fan_out", FAN_OUT, SINGLE_CONFIG)
    add_model(repo, "router", ROUTER, SINGLE_CONFIG)
    add_model(repo, "sometimes", SOMETIMES, SINGLE_CONFIG)
    add_model(repo, "recurse_2", RECURSE, SINGLE_CONFIG + "instance_group [{ count: 2 }]\n")
    add_model(repo, "recurse_1", RECURSE, SINGLE_CONFIG)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("bls")
    make_repository(repo)
    process = start_server(repo, "--num-batch-threads", "1")
    yield process
    process.stop()


@pytest.fixture
def client(server) -> Iterator[httpclient.InferenceServerClient]:
    # NOTE: a bounded network timeout: a deadlock fails the test instead of hanging it.
    client = httpclient.InferenceServerClient(server.address, network_timeout=30)
    yield client
    client.close()


def infer(client, model: str, **inputs: np.ndarray) -> httpclient.InferResult:
    tensors = []
    for name, array in inputs.items():
        datatype = "BYTES" if array.dtype == object else httpclient.np_to_triton_dtype(array.dtype)
        tensor = httpclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return client.infer(model, tensors)


def call(client, target: str, timeout_us: int = 0) -> tuple[list[int], int, str]:
    result = infer(
        client,
        "caller",
        X=np.array([3, 4], np.int32),
        TARGET=np.array([target.encode()], object),
        TIMEOUT=np.array([timeout_us], np.int64),
    )
    message = result.as_numpy("MESSAGE")[0]
    return list(result.as_numpy("Y")), int(result.as_numpy("CODE")[0]), message.decode()


def test_a_python_model_calls_onnx_and_python_models_in_a_pipeline(client) -> None:
    result = infer(client, "iris_bls", measurements_mm=MEASURES_MM)
    species = [s.decode() for s in result.as_numpy("species").ravel()]
    assert species == ["setosa", "versicolor", "virginica"]
    assert result.as_numpy("confidence").shape == (3, 1)


def test_a_sync_call_returns_the_member_s_outputs(client) -> None:
    assert call(client, "add_one") == ([4, 5], -1, "")


def test_many_async_calls_in_flight_at_once(client) -> None:
    result = infer(client, "fan_out", X=np.array([10, 20], np.int32))
    # sum over i of (x + i + 1) for i in 0..7
    assert list(result.as_numpy("Y")) == [8 * 10 + 28 + 8, 8 * 20 + 28 + 8]


def test_a_conditional_pipeline_takes_the_branch_the_data_asks_for(client) -> None:
    assert list(infer(client, "router", X=np.array([1, 2], np.int32)).as_numpy("Y")) == [2, 3]
    assert list(infer(client, "router", X=np.array([200, 100], np.int32)).as_numpy("Y")) == [
        20,
        10,
    ]


def test_a_model_that_starts_calling_after_many_batches_without_calls(client) -> None:
    # NOTE: until its first call the stub reads its socket on its main thread; from the
    # first call on, a reader thread does (the answer comes while execute runs).
    def ask(x0: int) -> list[int]:
        return list(infer(client, "sometimes", X=np.array([x0, 7], np.int32)).as_numpy("Y"))

    assert [ask(-i) for i in range(20)] == [[-i, 7] for i in range(20)]
    assert ask(5) == [6, 8]
    assert [ask(-i) for i in range(5)] == [[-i, 7] for i in range(5)]
    assert [ask(i) for i in range(1, 6)] == [[i + 1, 8] for i in range(1, 6)]


@pytest.mark.parametrize(
    ("target", "code", "words"),
    [
        ("no_such_model", 2, "unknown model: 'no_such_model'"),  # NOT_FOUND
        ("add_one:float", 3, "datatype"),  # INVALID_ARG: FP32 for an INT32 input
        ("fails", 2, "no such id"),  # the member's own error and code
    ],
    ids=["unknown-model", "bad-input", "member-failure"],
)
def test_a_failed_call_is_an_error_response_not_an_exception(client, target, code, words):
    y, found_code, message = call(client, target)
    assert (y, found_code) == ([0, 0], code), message
    assert words in message


def test_the_caller_s_timeout_is_honoured(client) -> None:
    started = time.monotonic()
    _, code, message = call(client, "slow", timeout_us=200_000)
    assert time.monotonic() - started < 2.5
    assert code == 4 and "did not answer within 200000 us" in message  # UNAVAILABLE


def test_a_model_calls_itself_while_it_has_a_free_instance(client) -> None:
    # two instances: one level deep is served by the other instance
    assert list(infer(client, "recurse_2", X=np.array([1, 7], np.int32)).as_numpy("Y")) == [0, 8]


def test_a_self_call_that_would_wait_for_itself_is_refused_at_once(client) -> None:
    started = time.monotonic()
    # one instance, calling itself: refused (UNAVAILABLE), no deadlock
    assert list(infer(client, "recurse_1", X=np.array([1, 7], np.int32)).as_numpy("Y")) == [0, -4]
    # two instances, two levels deep: the second level finds both held by its callers
    assert list(infer(client, "recurse_2", X=np.array([2, 7], np.int32)).as_numpy("Y")) == [0, -3]
    assert time.monotonic() - started < 5


def _stats(client, model: str) -> tuple[int, int]:
    stats = client.get_inference_statistics(model)["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


def test_calls_batch_with_direct_traffic_to_the_member(server) -> None:
    before = _stats(httpclient.InferenceServerClient(server.address), "add_one")
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        client = httpclient.InferenceServerClient(server.address, network_timeout=30)
        try:
            for _ in range(10):
                if index % 2:
                    assert call(client, "add_one")[1] == -1
                else:
                    y = infer(client, "add_one", X=np.array([[1, 2]], np.int32)).as_numpy("Y")
                    assert list(y[0]) == [2, 3]
        except BaseException as exc:
            failures.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures[0]
    inferences, executions = (
        a - b
        for a, b in zip(
            _stats(httpclient.InferenceServerClient(server.address), "add_one"), before, strict=True
        )
    )
    assert inferences == 160
    assert executions < inferences


def test_calls_work_behind_front_end_processes(tmp_path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    make_repository(repo)
    process = start_server(repo, "--http-workers", "2", "--num-batch-threads", "1")
    try:
        client = httpclient.InferenceServerClient(process.address, network_timeout=30)
        result = infer(client, "iris_bls", measurements_mm=MEASURES_MM)
        assert result.as_numpy("species")[0, 0] == b"setosa"
        assert call(client, "add_one") == ([4, 5], -1, "")
        client.close()
    finally:
        process.stop()
