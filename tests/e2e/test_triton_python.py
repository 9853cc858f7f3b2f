"""Models written for Triton's Python backend (pb_utils), served for real by repoman."""

from __future__ import annotations

import json
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.serverproc import ServerProcess, start_server

ADD_SUB_CONFIG = """
backend: "python"
max_batch_size: 8
input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
       { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] }]
output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
        { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] }]
parameters { key: "EXECUTION_ENV_PATH" value: { string_value: "$$TRITON_MODEL_DIRECTORY/env.tar.gz" } }
"""

# NOTE: written as Triton's documentation teaches: config parsed from the args, dtypes
# looked up by name, pb_utils tensors in and out.
ADD_SUB = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        assert all(isinstance(v, str) for v in args.values()), args
        self.model_config = config = json.loads(args["model_config"])
        self.dtypes = [
            pb_utils.triton_string_to_numpy(
                pb_utils.get_output_config_by_name(config, name)["data_type"]
            )
            for name in ("OUTPUT0", "OUTPUT1")
        ]
        pb_utils.Logger.log_info(
            f"add_sub initialized: {args['model_name']} v{args['model_version']} "
            f"{args['model_instance_kind']} device {args['model_instance_device_id']}"
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            in0 = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            in1 = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            assert pb_utils.get_input_tensor_by_name(request, "MISSING") is None
            out0 = pb_utils.Tensor("OUTPUT0", (in0 + in1).astype(self.dtypes[0]))
            out1 = pb_utils.Tensor("OUTPUT1", (in0 - in1).astype(self.dtypes[1]))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out0, out1]))
        return responses

    def finalize(self):
        pb_utils.Logger.log_info("add_sub finalized")
"""

SHOUT_CONFIG = """
backend: "python"
input [{ name: "TEXT" data_type: TYPE_STRING dims: [ -1 ] }]
output [{ name: "UPPER" data_type: TYPE_STRING dims: [ -1 ] }]
"""

SHOUT = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            upper = np.array([t.decode().upper().encode() for t in texts], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("UPPER", upper)]))
        return responses
"""

# No config file at all: the tensors come from auto_complete_config.
SELF_DESCRIBED = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        auto_complete_model_config.set_max_batch_size(4)
        auto_complete_model_config.add_input({"name": "X", "data_type": "TYPE_INT32", "dims": [2]})
        auto_complete_model_config.add_output({"name": "Y", "data_type": "TYPE_INT32", "dims": [2]})
        auto_complete_model_config.set_dynamic_batching()
        return auto_complete_model_config

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() * 2)]
            )
            for r in requests
        ]
"""

INT_CONFIG = """
backend: "python"
max_batch_size: 4
input [{ name: "X" data_type: TYPE_INT32 dims: [ 2 ] }]
output [{ name: "Y" data_type: TYPE_INT32 dims: [ 2 ] }]
"""

# Batches of 3 requests, so one bad request shares its batch with two good ones.
PICKY_CONFIG = (
    INT_CONFIG
    + "dynamic_batching { preferred_batch_size: [ 3 ] max_queue_delay_microseconds: 2000000 }\n"
)

PICKY = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            if (x < 0).any():
                error = pb_utils.TritonError("negative X", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x + 1)]))
        return responses
"""

# NOTE: X[0][0] picks the TritonError code the response carries.
CODED = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            code = int(pb_utils.get_input_tensor_by_name(request, "X").as_numpy()[0, 0])
            error = pb_utils.TritonError(f"refused with code {code}", code)
            responses.append(pb_utils.InferenceResponse(error=error))
        return responses
"""

RAISES = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        raise pb_utils.TritonModelException("the GPU caught fire")
"""

MISSHAPEN = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            if x[0, 0] == 0:
                tensors = [pb_utils.Tensor("Y", np.zeros((7, 3, 5), np.int32))]
            else:
                tensors = [pb_utils.Tensor("Y", x), pb_utils.Tensor("EXTRA", x)]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
"""

HELPED = """
import triton_python_backend_utils as pb_utils
{importer}


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("Y", helper.add_ten(pb_utils.get_input_tensor_by_name(r, "X").as_numpy()))]
            )
            for r in requests
        ]
"""

HELPER = """
def add_ten(x):
    return x + 10
"""


BIASED_CONFIG = """
backend: "python"
max_batch_size: 4
input [{ name: "X" data_type: TYPE_INT32 dims: [ 2 ] },
       { name: "BIAS" data_type: TYPE_INT32 dims: [ 2 ] optional: true }]
output [{ name: "Y" data_type: TYPE_INT32 dims: [ 2 ] }]
"""

# NOTE: an optional input the client leaves out is simply absent (None), as in Triton.
BIASED = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.logger = pb_utils.Logger
        self.logger.log_info("biased: ready to add a bias when one is sent")

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            bias = pb_utils.get_input_tensor_by_name(request, "BIAS")
            if bias is None:
                self.logger.log_warn("biased: no BIAS sent, adding nothing")
                y = x
            else:
                y = x + bias.as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y)]))
        return responses
"""

# Custom metrics as Triton's documentation teaches: families made in initialize, members
# with the model's own labels, updated per request.
COUNTED = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        requests = pb_utils.MetricFamily(
            name="counted_requests", description="Requests seen", kind=pb_utils.MetricFamily.COUNTER
        )
        self.requests = requests.Metric(labels={"route": "main"})
        depth = pb_utils.MetricFamily("counted_depth", "Last row count", pb_utils.MetricFamily.GAUGE)
        self.depth = depth.Metric(labels={"route": "main"})
        sizes = pb_utils.MetricFamily("counted_sum", "Sum of X", pb_utils.MetricFamily.HISTOGRAM)
        self.sizes = sizes.Metric(labels={"route": "main"}, buckets=[1, 10, 100])

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            self.requests.increment(1)
            self.depth.set(2.5)
            self.sizes.observe(float(x.sum()))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x)]))
        return responses
"""


INTROSPECT_CONFIG = """
backend: "python"
max_batch_size: 0
input [{ name: "X" data_type: TYPE_INT32 dims: [ 1 ] }]
output [{ name: "ID" data_type: TYPE_STRING dims: [ 1 ] },
        { name: "PARAMS" data_type: TYPE_STRING dims: [ 1 ] },
        { name: "ASKED" data_type: TYPE_STRING dims: [ -1 ] }]
"""

# NOTE: echoes what Triton's API says about each request: its id, parameters, wanted outputs.
INTROSPECT = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            asked = sorted(request.requested_output_names())
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("ID", np.array([request.request_id().encode()], dtype=object)),
                pb_utils.Tensor("PARAMS", np.array([request.parameters().encode()], dtype=object)),
                pb_utils.Tensor("ASKED", np.array([a.encode() for a in asked], dtype=object)),
            ]))
        return responses
"""


def add_model(repo: Path, name: str, code: str, config: str | None, **files: str) -> None:
    version = repo / name / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(textwrap.dedent(code))
    for filename, text in files.items():
        (version / f"{filename}.py").write_text(textwrap.dedent(text))
    if config is not None:
        (repo / name / "config.pbtxt").write_text(textwrap.dedent(config))


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("triton_python")
    add_model(repo, "add_sub", ADD_SUB, ADD_SUB_CONFIG)
    add_model(repo, "shout", SHOUT, SHOUT_CONFIG)
    add_model(repo, "self_described", SELF_DESCRIBED, None)
    add_model(repo, "picky", PICKY, PICKY_CONFIG)
    add_model(repo, "raises", RAISES, INT_CONFIG)
    add_model(repo, "coded", CODED, INT_CONFIG)
    add_model(repo, "misshapen", MISSHAPEN, INT_CONFIG)
    add_model(repo, "biased", BIASED, BIASED_CONFIG)
    add_model(repo, "introspect", INTROSPECT, INTROSPECT_CONFIG)
    add_model(
        repo, "helped_plain", HELPED.format(importer="import helper"), INT_CONFIG, helper=HELPER
    )
    add_model(
        repo,
        "helped_relative",
        HELPED.format(importer="from . import helper"),
        INT_CONFIG,
        helper=HELPER,
    )
    add_model(repo, "counted", COUNTED, INT_CONFIG)
    inline = 'parameters { key: "isolation" value: { string_value: "none" } }\n'
    add_model(repo, "counted_inline", COUNTED, INT_CONFIG + inline)
    process = start_server(repo)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(server.address, concurrency=3) as c:
        yield c


def tensor(name: str, data: np.ndarray, datatype: str) -> httpclient.InferInput:
    one = httpclient.InferInput(name, list(data.shape), datatype)
    one.set_data_from_numpy(data)
    return one


def ints(*rows: list[int]) -> httpclient.InferInput:
    return tensor("X", np.array(rows, dtype=np.int32), "INT32")


def failure(client, model: str, *inputs) -> str:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, list(inputs))
    return caught.value.message()


def test_add_sub_with_two_inputs_and_two_outputs(client, server):
    a = np.array([[1, 2, 3, 4], [0, 0, 0, 0]], dtype=np.float32)
    b = np.array([[1, 1, 1, 1], [2, 2, 2, 2]], dtype=np.float32)
    result = client.infer("add_sub", [tensor("INPUT0", a, "FP32"), tensor("INPUT1", b, "FP32")])
    assert result.as_numpy("OUTPUT0").tolist() == (a + b).tolist()
    assert result.as_numpy("OUTPUT1").tolist() == (a - b).tolist()
    assert result.as_numpy("OUTPUT0").dtype == np.float32
    # initialize got Triton's string args; the model's Logger writes into the server's log
    assert "add_sub initialized: add_sub v1 KIND_CPU device 0" in server.log()
    assert "EXECUTION_ENV_PATH is ignored" in server.log()


def test_bytes_in_bytes_out(client):
    words = np.array([b"hello", "wörld".encode()], dtype=np.object_)
    result = client.infer("shout", [tensor("TEXT", words, "BYTES")])
    assert result.as_numpy("UPPER").tolist() == [b"HELLO", "WÖRLD".encode()]


def test_a_model_without_a_config_is_described_by_auto_complete_config(client):
    config = client.get_model_config("self_described")
    assert config["max_batch_size"] == 4
    assert config["input"][0]["name"] == "X" and config["input"][0]["dims"] == [2]
    assert config["output"][0]["data_type"] == "TYPE_INT32"
    result = client.infer("self_described", [ints([1, 2], [3, 4])])
    assert result.as_numpy("Y").tolist() == [[2, 4], [6, 8]]


def test_a_triton_error_fails_only_its_request_in_a_batch(client):
    pending = [client.async_infer("picky", [ints(row)]) for row in ([1, 2], [-1, 0], [5, 6])]
    outcomes = []
    for request in pending:
        try:
            outcomes.append(request.get_result().as_numpy("Y").tolist())
        except InferenceServerException as error:
            outcomes.append((error.status(), error.message()))
    assert outcomes[0] == [[2, 3]] and outcomes[2] == [[6, 7]]
    assert outcomes[1] == ("400", "model 'picky' version 1: negative X")  # INVALID_ARG
    stats = client.get_inference_statistics("picky", "1")["model_stats"][0]
    assert stats["execution_count"] == 1  # the three ran as one batch


# NOTE: Triton's HTTP endpoint maps the codes so (http_server.cc, HttpCodeFromError).
@pytest.mark.parametrize(
    ("code", "status"),
    [(0, 400), (1, 500), (2, 404), (3, 400), (4, 503), (5, 501), (6, 400), (7, 400)],
    ids=[
        "UNKNOWN",
        "INTERNAL",
        "NOT_FOUND",
        "INVALID_ARG",
        "UNAVAILABLE",
        "UNSUPPORTED",
        "ALREADY_EXISTS",
        "CANCELLED",
    ],
)
def test_a_triton_error_s_code_gives_triton_s_http_status(client, code, status):
    with pytest.raises(InferenceServerException) as caught:
        client.infer("coded", [ints([code, 0])])
    assert caught.value.status() == str(status)
    assert caught.value.message() == f"model 'coded' version 1: refused with code {code}"


def test_an_exception_in_execute_fails_the_batch_naming_the_model(client):
    message = failure(client, "raises", ints([1, 2]))
    assert message == (
        "raises/1/model.py: execute failed: TritonModelException: the GPU caught fire"
    )


def test_a_wrong_output_shape_or_an_undeclared_output_is_refused(client):
    assert failure(client, "misshapen", ints([0, 1])) == (
        "misshapen/1/model.py: output 'Y' has shape [7, 3, 5]; "
        "the config expects [-1, 2] (-1: any size)"
    )
    assert failure(client, "misshapen", ints([1, 1])) == (
        "misshapen/1/model.py: output 'EXTRA' is not in the model's config (it declares: Y)"
    )


@pytest.mark.parametrize("model", ["helped_plain", "helped_relative"])
def test_a_sibling_helper_module_is_importable(client, model):
    assert client.infer(model, [ints([1, 2])]).as_numpy("Y").tolist() == [[11, 12]]


def test_an_optional_input_left_out_is_absent_and_the_model_logs(client, server):
    x = np.array([[1, 2], [3, 4]], dtype=np.int32)
    plain = client.infer("biased", [tensor("X", x, "INT32")])
    assert plain.as_numpy("Y").tolist() == [[1, 2], [3, 4]]
    both = client.infer(
        "biased", [tensor("X", x, "INT32"), tensor("BIAS", np.full((2, 2), 10, np.int32), "INT32")]
    )
    assert both.as_numpy("Y").tolist() == [[11, 12], [13, 14]]
    deadline = time.monotonic() + 10
    while "biased: no BIAS sent, adding nothing" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    assert "biased: ready to add a bias when one is sent" in server.log()


@pytest.mark.parametrize("model", ["counted", "counted_inline"])
def test_custom_metrics_show_on_the_metrics_endpoint(client, server, model):
    for value in (0, 4, 50, 500):  # observed sums: 0, 8, 100, 1000
        client.infer(model, [ints([value, value])])
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    labels = f'model="{model}",version="1",route="main"'
    lines = set(text.splitlines())
    assert "# TYPE counted_requests counter" in lines
    assert f"counted_requests{{{labels}}} 4.0" in lines, text
    assert f"counted_depth{{{labels}}} 2.5" in lines
    assert "# TYPE counted_sum histogram" in lines
    for bound, count in (("1.0", 1), ("10.0", 2), ("100.0", 3), ("+Inf", 4)):
        assert f'counted_sum_bucket{{{labels},le="{bound}"}} {count}' in lines, text
    assert f"counted_sum_count{{{labels}}} 4" in lines
    assert f"counted_sum_sum{{{labels}}} 1108.0" in lines
    # the server's own metrics are still there
    assert f'nv_inference_request_success{{model="{model}",version="1"}} 4' in lines


def test_a_request_s_id_parameters_and_wanted_outputs_reach_the_model(client):
    x = tensor("X", np.array([1], dtype=np.int32), "INT32")
    wanted = [httpclient.InferRequestedOutput(n) for n in ("ID", "PARAMS", "ASKED")]
    answer = client.infer(
        "introspect", [x], request_id="req-7", parameters={"color": "red"}, outputs=wanted
    )
    assert answer.as_numpy("ID").tolist() == [b"req-7"]
    assert json.loads(answer.as_numpy("PARAMS")[0])["color"] == "red"
    assert answer.as_numpy("ASKED").tolist() == [b"ASKED", b"ID", b"PARAMS"]
    fewer = [httpclient.InferRequestedOutput(n) for n in ("ASKED", "ID")]
    answer = client.infer("introspect", [x], outputs=fewer)
    assert answer.as_numpy("ID").tolist() == [b""]
    assert answer.as_numpy("ASKED").tolist() == [b"ASKED", b"ID"]


def test_finalize_runs_on_unload(server):
    # NOTE: last in the module: it stops the server, which unloads every model.
    assert server.stop() == 0
    deadline = time.monotonic() + 5
    while "add_sub finalized" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "add_sub finalized" in server.log()
