"""The Python-model backend: model.py lifecycle in process, describe, and serving over HTTP."""

from __future__ import annotations

import json
import pickle
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import repoman_python
import tritonclient.http as httpclient
from repoman_python import wire
from repoman_python.backend import PythonBackend, as_output
from repoman_python.describe import as_plain, from_plain
from tritonclient.utils import InferenceServerException

from repoman import (
    Backend,
    BackendError,
    BackendRegistry,
    Batch,
    DataType,
    ModelSignature,
    TensorConfig,
)
from repoman.config import parse_model_config
from repoman.instances import instance_contexts
from repoman.source.resolve import Resolver
from repoman.source.scan import ScanOptions, read_model

ADD_ONE_CONFIG = """
backend: "python"
max_batch_size: 8
input [{ name: "IN" data_type: TYPE_FP32 dims: [ 2 ] }]
output [{ name: "OUT" data_type: TYPE_FP32 dims: [ 2 ] }]
"""

ADD_ONE = """
import numpy as np
from repoman_python import Response

class Model:
    def execute(self, requests):
        # float64 on purpose: the backend converts it to the configured FP32
        return [Response({"OUT": r.input("IN").astype(np.float64) + 1}) for r in requests]
"""


def registry() -> BackendRegistry:
    found = BackendRegistry()
    repoman_python.repoman_register_backends(found)
    return found


def write_version(folder: Path, code: str, version: int = 1, name: str = "model.py") -> Path:
    path = folder / str(version) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code))
    return path


def backends(folder: Path, config_text: str, version: int = 1) -> list[Backend]:
    """Unloaded instances of ``folder/<version>/model.py``, built as the server builds them."""
    config = parse_model_config(
        config_text, filename="config.pbtxt", fmt="pbtxt", model_name=folder.name
    )
    spec = registry().resolve(config)
    path = folder / str(version)
    contexts = instance_contexts(config, version, path, spec.default_model_filename)
    return [spec.factory(context) for context in contexts]


def loaded(folder: Path, code: str, config_text: str = ADD_ONE_CONFIG) -> Backend:
    write_version(folder, code)
    [backend] = backends(folder, config_text)
    backend.load()
    return backend


def run(backend: Backend, *requests: dict[str, np.ndarray]) -> list:
    outputs = tuple(t.name for t in backend.context.config.outputs)
    return list(backend.execute(Batch(list(requests), outputs)))


def floats(*rows: list[float]) -> dict[str, np.ndarray]:
    return {"IN": np.array(rows, dtype=np.float32)}


# ---- execute ------------------------------------------------------------------------


def test_each_request_gets_its_own_response_in_order(tmp_path):
    backend = loaded(tmp_path / "add_one", ADD_ONE)
    results = run(backend, floats([1, 2]), floats([3, 4], [5, 6]), floats([-1, 0]))
    assert [r["OUT"].tolist() for r in results] == [[[2, 3]], [[4, 5], [6, 7]], [[0, 1]]]
    assert all(r["OUT"].dtype == np.float32 for r in results)


def test_an_error_response_fails_only_its_request(tmp_path):
    code = """
    from repoman_python import Response

    class Model:
        def execute(self, requests):
            responses = []
            for request in requests:
                first = request.input("IN").flat[0]
                if first < 0:
                    responses.append(Response(error="negative input"))
                elif first == 0:
                    responses.append(Response(error=ValueError("zero input")))
                else:
                    responses.append(Response({"OUT": request.input("IN") + 1}))
            return responses
    """
    backend = loaded(tmp_path / "picky", code)
    ok, negative, zero, ok_too = run(
        backend, floats([1, 1]), floats([-1, 1]), floats([0, 1]), floats([2, 2])
    )
    assert ok["OUT"].tolist() == [[2, 2]] and ok_too["OUT"].tolist() == [[3, 3]]
    assert isinstance(negative, BackendError)
    assert str(negative) == "model 'picky' version 1: negative input"
    assert isinstance(zero, ValueError) and str(zero) == "zero input"


def test_outputs_are_converted_when_safe_and_checked_per_request(tmp_path):
    config = ADD_ONE_CONFIG.replace('OUT" data_type: TYPE_FP32', 'OUT" data_type: TYPE_INT32')
    code = """
    import numpy as np
    from repoman_python import Response

    class Model:
        def execute(self, requests):
            answers = {
                0: lambda x: {"OUT": x.astype(np.int64)},   # int64 -> INT32: same kind
                1: lambda x: {"OUT": x},                    # float -> INT32: refused
                2: lambda x: {"OTHER": x},                  # OUT missing
                3: lambda x: {"OUT": x.astype(int).tolist(), "EXTRA": 1},  # a list will do
            }
            return [Response(answers[int(r.input("IN").flat[0])](r.input("IN"))) for r in requests]
    """
    backend = loaded(tmp_path / "typed", code, config)
    converted, unsafe, missing, listed = run(
        backend, floats([0, 5]), floats([1, 5]), floats([2, 5]), floats([3, 5])
    )
    assert converted["OUT"].dtype == np.int32 and converted["OUT"].tolist() == [[0, 5]]
    assert (
        str(unsafe)
        == "typed/1/model.py: output 'OUT' is float32, which does not convert safely to TYPE_INT32"
    )
    assert str(missing) == "typed/1/model.py: the response has no output 'OUT' (it has: OTHER)"
    assert set(listed) == {"OUT"}  # outputs nobody asked for are dropped
    assert listed["OUT"].dtype == np.int32 and listed["OUT"].tolist() == [[3, 5]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "return [Response({'OUT': r.input('IN')}) for r in requests][:-1]",
            "returned 1 responses for 2 requests",
        ),
        ("return {'OUT': requests[0].input('IN')}", "returned a dict for 2 requests"),
        ("return [None for r in requests]", "returned a NoneType for a Response"),
        ("raise RuntimeError('out of cheese')", "execute failed: RuntimeError: out of cheese"),
        (
            "return [Response(outputs=[1, 2]) for r in requests]",
            "execute failed: TypeError: Response outputs must be a dict",
        ),
    ],
)
def test_a_wrong_reply_fails_the_whole_batch_naming_the_file(tmp_path, body, message):
    code = f"""
    from repoman_python import Response

    class Model:
        def execute(self, requests):
            {body}
    """
    backend = loaded(tmp_path / "wrong", code)
    with pytest.raises(BackendError) as caught:
        run(backend, floats([1, 2]), floats([3, 4]))
    assert str(caught.value).startswith("wrong/1/model.py: ")
    assert message in str(caught.value)


def test_bytes_in_bytes_out(tmp_path):
    config = """
    backend: "python"
    input [{ name: "TEXT" data_type: TYPE_STRING dims: [ -1 ] }]
    output [{ name: "UPPER" data_type: TYPE_STRING dims: [ -1 ] }]
    """
    code = """
    import numpy as np
    from repoman_python import Request, Response, Tensor

    class Model:
        def execute(self, requests: list[Request]) -> list[Response]:
            texts: Tensor = requests[0].input("TEXT")
            # a numpy bytes ("S") array: the backend makes it the object array BYTES wants
            return [Response({"UPPER": np.char.upper(texts.astype(bytes))})]
    """
    backend = loaded(tmp_path / "shout", code, textwrap.dedent(config))
    words = np.array([b"hello", "wörld".encode()], dtype=object)
    [result] = run(backend, {"TEXT": words})
    assert result["UPPER"].dtype == object
    assert result["UPPER"].tolist() == [b"HELLO", "WöRLD".encode()]


def test_a_batch_crosses_to_the_stub_and_back_as_each_requests_own_rows(tmp_path):
    config = """
    backend: "python"
    max_batch_size: 8
    input [{ name: "IN" data_type: TYPE_FP32 dims: [ 2 ] }]
    output [
      { name: "OUT" data_type: TYPE_FP32 dims: [ 2 ] },
      { name: "NAME" data_type: TYPE_STRING dims: [ 1 ] }
    ]
    """
    code = """
    import numpy as np
    from repoman_python import Response

    class Model:
        def execute(self, requests):
            responses = []
            for index, request in enumerate(requests):
                x = request.input("IN")
                x[:, 1] = -x[:, 1]  # its inputs are its own to write
                names = np.array([[f"{index}/{len(requests)}:{len(x)}"]] * len(x), dtype=object)
                responses.append(Response({"OUT": x * 10, "NAME": names}))
            return responses
    """
    backend = loaded(tmp_path / "rows", code, textwrap.dedent(config))
    sent = [floats([1, 2]), floats([3, 4], [5, 6], [7, 8]), floats([9, 10], [11, 12])]
    big = floats(*([1, 1] for _ in range(300)))  # the batch's tensors go through the arena
    results = run(backend, *sent, big)
    assert [r["OUT"].tolist() for r in results[:3]] == [
        [[10, -20]],
        [[30, -40], [50, -60], [70, -80]],
        [[90, -100], [110, -120]],
    ]
    assert [r["NAME"].tolist() for r in results[:3]] == [
        [[b"0/4:1"]],
        [[b"1/4:3"]] * 3,
        [[b"2/4:2"]] * 2,
    ]
    assert sent[1]["IN"].tolist() == [[3, 4], [5, 6], [7, 8]]  # the server's copy is untouched
    # NOTE: the answers are the server's own: the next batch reuses the stub's blocks
    again = run(backend, floats(*([7, 7] for _ in range(300))), floats([0, 2]))
    assert again[0]["OUT"].tolist() == [[70, -70]] * 300
    assert results[3]["OUT"].tolist() == [[10, -10]] * 300


def test_a_batch_whose_answers_differ_in_shape_still_comes_back_per_request(tmp_path):
    config = """
    backend: "python"
    max_batch_size: 8
    input [{ name: "IN" data_type: TYPE_FP32 dims: [ 2 ] }]
    output [{ name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] }]
    """
    code = """
    import numpy as np
    from repoman_python import Response

    class Model:
        def execute(self, requests):
            # each answer as wide as its first value says: they do not stack
            return [
                Response({"OUT": np.ones((1, int(r.input("IN")[0, 0])), np.float32)})
                for r in requests
            ]
    """
    backend = loaded(tmp_path / "ragged", code, textwrap.dedent(config))
    results = run(backend, floats([1, 0]), floats([3, 0]), floats([2, 0]))
    assert [r["OUT"].shape for r in results] == [(1, 1), (1, 3), (1, 2)]


# ---- lifecycle ----------------------------------------------------------------------


def test_initialize_args_one_model_per_instance_and_finalize(tmp_path):
    config = """
    backend: "python"
    max_batch_size: 8
    input [{ name: "IN" data_type: TYPE_FP32 dims: [ 2 ] }]
    output [{ name: "OUT" data_type: TYPE_FP32 dims: [ 2 ] },
            { name: "ARGS" data_type: TYPE_STRING dims: [ 1 ] }]
    instance_group [{ count: 2 }]
    parameters { key: "k" value: { string_value: "v" } }
    """
    code = """
    import json
    from pathlib import Path
    from repoman_python import Response

    CREATED = []  # module state: each instance imports model.py afresh

    class TritonPythonModel:  # the name a model ported from Triton uses
        def __init__(self):
            CREATED.append(self)

        def initialize(self, args):
            self.args = dict(args, created=len(CREATED))

        def execute(self, requests):
            text = json.dumps(self.args)
            return [Response({"OUT": r.input("IN"), "ARGS": [[text]]}) for r in requests]

        def finalize(self):
            Path(self.args["model_repository"], self.args["model_instance_name"]).touch()
    """
    folder = tmp_path / "lifecycle"
    write_version(folder, code)
    instances = backends(folder, textwrap.dedent(config))
    for instance in instances:
        instance.load()
    args = [json.loads(run(i, floats([1, 2]))[0]["ARGS"][0, 0]) for i in instances]
    assert [a.pop("model_instance_name") for a in args] == ["lifecycle_0_0", "lifecycle_0_1"]
    expected_config = instances[0].context.config.as_dict()
    for one in args:
        assert one == {
            "model_config": expected_config,
            "model_name": "lifecycle",
            "model_version": "1",
            "model_repository": str(folder),
            "model_instance_kind": "KIND_CPU",
            "model_instance_device_id": 0,
            "created": 1,
        }
    assert expected_config["parameters"] == {"k": {"string_value": "v"}}
    for instance in instances:
        instance.unload()
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [
        "lifecycle_0_0",
        "lifecycle_0_1",
    ]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("def broken(:\n", "import failed: SyntaxError: "),
        (
            "import a_module_that_is_not_there\n",
            "import failed: ModuleNotFoundError: No module named",
        ),
        ("class Other:\n    pass\n", "expected a class named Model or TritonPythonModel"),
        ("class Model:\n    pass\n", "class Model has no execute(self, requests) method"),
        (
            "class Model:\n    def initialize(self, args):\n        raise OSError('no weights here')\n"
            "    def execute(self, requests):\n        return []\n",
            "initialize failed: OSError: no weights here",
        ),
    ],
)
def test_a_failing_load_names_the_file_without_a_traceback(tmp_path, code, message):
    path = write_version(tmp_path / "broken", code)
    [backend] = backends(tmp_path / "broken", ADD_ONE_CONFIG)
    before = set(sys.modules)
    with pytest.raises(BackendError) as caught:
        backend.load()
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "Traceback" not in str(caught.value)
    assert set(sys.modules) <= before


@pytest.mark.parametrize("importer", ["import helpers", "from . import helpers"])
def test_versions_keep_their_own_code_and_helper_modules(tmp_path, importer):
    folder = tmp_path / "helped"
    for version in (1, 2):
        write_version(folder, f"VALUE = {version * 10}\n", version, "helpers.py")
        write_version(
            folder,
            f"""
            {importer}
            from repoman_python import Response

            class Model:
                def execute(self, requests):
                    return [Response({{"OUT": r.input("IN") + helpers.VALUE}}) for r in requests]
            """,
            version,
        )
    before = set(sys.modules)
    [one], [two] = backends(folder, ADD_ONE_CONFIG, 1), backends(folder, ADD_ONE_CONFIG, 2)
    one.load()
    two.load()
    assert run(one, floats([0, 1]))[0]["OUT"].tolist() == [[10, 11]]
    assert run(two, floats([0, 1]))[0]["OUT"].tolist() == [[20, 21]]
    assert str(folder / "1") not in sys.path
    one.unload()
    two.unload()
    assert set(sys.modules) <= before


# ---- describe (auto-complete) -------------------------------------------------------


SELF_DESCRIBED = """
class Model:
    @staticmethod
    def auto_complete_config(config):
        config["max_batch_size"] = 4
        config["input"] = [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1]}]
        config["output"] = [{"name": "LENGTH", "data_type": "INT32", "dims": [1]}]
        return config

    def execute(self, requests):
        return []
"""


def test_describe_reads_auto_complete_config(tmp_path):
    path = write_version(tmp_path / "described", SELF_DESCRIBED)
    signature = registry().specs()[0].describe(path, {})
    assert signature.batching
    assert [(t.name, t.data_type.value, t.dims) for t in signature.inputs] == [
        ("TEXT", "BYTES", (-1, 1))
    ]
    assert [(t.name, t.data_type.value, t.dims) for t in signature.outputs] == [
        ("LENGTH", "INT32", (-1, 1))
    ]


def test_a_signature_crosses_from_the_describe_stub_as_plain_data_only():
    signature = ModelSignature(
        (TensorConfig("X", DataType.BYTES, (-1, 1), optional=True),),
        (TensorConfig("Y", DataType.INT32, (-1,)),),
        batching=True,
        max_batch_size=8,
    )
    plain = as_plain(signature)
    assert from_plain(wire.loads_plain(pickle.dumps(plain)), Path("m")) == signature
    with pytest.raises(BackendError, match=r"m: describing it gave an unreadable answer"):
        from_plain(
            {"inputs": 3, "outputs": [], "batching": True, "max_batch_size": None}, Path("m")
        )


def test_a_partial_config_is_completed_from_model_py(tmp_path):
    folder = tmp_path / "completed"
    write_version(folder, SELF_DESCRIBED)
    (folder / "config.pbtxt").write_text('backend: "python"\n')
    resolved = Resolver(registry()).resolve(read_model(folder, ScanOptions(), now=0.0))
    assert resolved.error is None, resolved.error
    config = resolved.config
    assert config.backend == "python" and config.max_batch_size > 0
    assert [(t.name, t.data_type.value, t.dims) for t in config.inputs] == [("TEXT", "BYTES", (1,))]
    assert [(t.name, t.data_type.value, t.dims) for t in config.outputs] == [
        ("LENGTH", "INT32", (1,))
    ]


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (
            "",
            "must declare its inputs and outputs in its config, or return them from Model.auto_complete_config",
        ),
        (
            "def auto_complete_config(self, config):\n        return config",
            "must be a @staticmethod or @classmethod",
        ),
        (
            "@classmethod\n    def auto_complete_config(cls, config):\n        return None",
            "must return the config dict, got NoneType",
        ),
        (
            "@staticmethod\n    def auto_complete_config(config):\n        return config",
            "returned no 'input' or 'output'",
        ),
        (
            "@staticmethod\n    def auto_complete_config(config):\n        return {'input': [{'name': 'X'}]}",
            "returned an invalid input {'name': 'X'}: KeyError: 'data_type'",
        ),
    ],
)
def test_describe_says_what_is_missing(tmp_path, method, message):
    code = f"class Model:\n    {method}\n    def execute(self, requests):\n        return []\n"
    path = write_version(tmp_path / "undescribed", code)
    with pytest.raises(BackendError) as caught:
        registry().specs()[0].describe(path, {})
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


# ---- over HTTP ----------------------------------------------------------------------

TEXT_LENGTH_CONFIG = """
backend: "python"
max_batch_size: 4
input [{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }]
output [{ name: "LENGTH" data_type: TYPE_INT32 dims: [ 1 ] }]
dynamic_batching { preferred_batch_size: [ 3 ] max_queue_delay_microseconds: 2000000 }
"""

TEXT_LENGTH = """
import numpy as np
from repoman import BackendError, ErrorKind
from repoman_python import Response

class Model:
    def execute(self, requests):
        responses = []
        for request in requests:
            texts = [t.decode() for t in request.input("TEXT").reshape(-1)]
            if not all(texts):
                responses.append(Response(error="empty text has no length"))
            elif "?" in texts:
                error = BackendError("no such text", ErrorKind.NOT_FOUND)
                responses.append(Response(error=error))
            else:
                lengths = np.array([[len(t)] for t in texts])  # int64, sent as INT32
                responses.append(Response({"LENGTH": lengths}))
        return responses
"""


def text_input(*texts: str) -> httpclient.InferInput:
    data = np.array([[t.encode()] for t in texts], dtype=object)
    tensor = httpclient.InferInput("TEXT", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return tensor


def test_served_over_http_with_a_per_request_error(tmp_path, server_factory):
    repo = tmp_path / "repo"
    (repo / "text_length").mkdir(parents=True)
    (repo / "text_length" / "config.pbtxt").write_text(TEXT_LENGTH_CONFIG)
    write_version(repo / "text_length", TEXT_LENGTH)
    server = server_factory(repo)
    with httpclient.InferenceServerClient(server.address, concurrency=3) as client:
        result = client.infer("text_length", [text_input("héllo", "hi")])
        assert result.as_numpy("LENGTH").tolist() == [[5], [2]]
        assert result.as_numpy("LENGTH").dtype == np.int32
        # NOTE: three at once fill the preferred batch of 3: the empty one fails alone.
        pending = [client.async_infer("text_length", [text_input(t)]) for t in ("abc", "", "de")]
        outcomes = []
        for request in pending:
            try:
                outcomes.append(request.get_result().as_numpy("LENGTH").tolist())
            except InferenceServerException as error:
                outcomes.append((error.status(), error.message()))
        stats = client.get_inference_statistics("text_length", "1")["model_stats"][0]
        with pytest.raises(InferenceServerException) as caught:
            client.infer("text_length", [text_input("?")])
    assert (caught.value.status(), caught.value.message()) == ("404", "no such text")
    assert outcomes == [
        [[3]],
        ("500", "model 'text_length' version 1: empty text has no length"),
        [[2]],
    ]
    assert stats["execution_count"] == 2  # the single request, then the three together


# ---- Triton-style models (triton_python_backend_utils) --------------------------------

TRITON_ECHO = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.args = args

    def execute(self, requests):
        {body}
"""


def test_a_triton_model_gets_string_args(tmp_path):
    code = TRITON_ECHO.format(body="return []")
    write_version(tmp_path / "tri", code)
    [proxy] = backends(tmp_path / "tri", ADD_ONE_CONFIG)
    # NOTE: in process, to look at the model object (the served backend runs it in a stub).
    backend = PythonBackend(proxy.context)
    backend.load()
    args = backend._model.args
    assert all(isinstance(value, str) for value in args.values())
    assert json.loads(args["model_config"]) == backend.context.config.as_dict()
    assert args["model_instance_device_id"] == "0" and args["model_version"] == "1"
    assert set(args) == {
        "model_config",
        "model_instance_kind",
        "model_instance_name",
        "model_instance_device_id",
        "model_repository",
        "model_version",
        "model_name",
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return []", "returned 0 responses for 2 requests"),
        ("return None", "returned a NoneType for 2 requests"),
        ("return [{}, {}]", "returned a dict for a pb_utils.InferenceResponse"),
        (
            "return [pb_utils.InferenceResponse(error='x') for r in requests]",
            "execute failed: TritonModelException: InferenceResponse error must be",
        ),
    ],
)
def test_a_wrong_triton_reply_fails_the_batch(tmp_path, body, message):
    backend = loaded(tmp_path / "tri", TRITON_ECHO.format(body=body))
    with pytest.raises(BackendError) as caught:
        run(backend, floats([1, 2]), floats([3, 4]))
    assert str(caught.value).startswith("tri/1/model.py: ")
    assert message in str(caught.value)


def test_a_wrong_shape_is_refused_for_repoman_models_too(tmp_path):
    code = """
    import numpy as np
    from repoman_python import Response

    class Model:
        def execute(self, requests):
            return [Response({"OUT": np.zeros((7, 3, 5), np.float32)}) for r in requests]
    """
    [result] = run(loaded(tmp_path / "shaped", code), floats([1, 2]))
    assert str(result) == (
        "shaped/1/model.py: output 'OUT' has shape [7, 3, 5]; the config expects [-1, 2] "
        "(-1: any size)"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return None", "must return the auto_complete_model_config it was given, got NoneType"),
        (
            "config.set_model_transaction_policy({'decoupled': True})\n        return config",
            "decoupled models are not supported by repoman yet",
        ),
    ],
)
def test_triton_auto_complete_config_says_what_is_wrong(tmp_path, body, message):
    code = f"""
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        {body}

    def execute(self, requests):
        return []
"""
    path = write_version(tmp_path / "auto", code)
    with pytest.raises(BackendError, match=message):
        registry().specs()[0].describe(path, {})


@pytest.mark.parametrize(
    ("dims", "batching", "shape", "fits"),
    [
        ((3,), True, (5, 3), True),
        ((3,), True, (1, 3), True),
        ((3,), True, (5, 4), False),
        ((3,), True, (3,), False),
        ((3,), True, (5, 3, 1), False),
        ((), True, (5,), True),
        ((), True, (), False),
        ((-1, 2), True, (5, 7, 2), True),
        ((-1, 2), True, (5, 7, 3), False),
        ((-1, 2), True, (7, 2), False),
        ((2, 2), False, (2, 2), True),
        ((2, 2), False, (1, 2, 2), False),
        ((-1,), False, (9,), True),
        ((-1,), False, (), False),
    ],
)
def test_an_output_must_have_its_configured_shape(dims, batching, shape, fits):
    tensor = TensorConfig("Y", DataType.FP32, dims)
    value = np.zeros(shape, dtype=np.float32)
    if fits:
        assert as_output(tensor, value, batching).shape == shape
    else:
        with pytest.raises(ValueError, match=r"output 'Y' has shape"):
            as_output(tensor, value, batching)
