"""The v2 body codec against the real tritonclient: its request bodies in, its parser on ours."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from repoman.config.model import ModelConfig, TensorConfig
from repoman.dataplane.request_checks import ExpectedInputs
from repoman.errors import BackendError, InvalidRequest
from repoman.inference import InferRequest, InferResponse, RequestedOutput
from repoman.server.decode import decode_infer_request
from repoman.server.encode import encode_error, encode_infer_response
from repoman.types import DataType

NUMERIC = [t for t in DataType if t is not DataType.BYTES]


def sample(datatype: DataType, shape: tuple[int, ...], *, text: bool = False) -> np.ndarray:
    """A deterministic array of ``datatype`` that includes the type's extreme values."""
    rng = np.random.default_rng(hash((datatype.value, shape)) % 2**32)
    count = int(np.prod(shape))
    if datatype is DataType.BYTES:
        pool: list[bytes] = [b"", b"a", "h\u00e9llo \u2603".encode(), b"x" * 300]
        if not text:
            pool += [b"\x00\xff\xfe", b"\x00"]
        flat = [pool[i % len(pool)] for i in range(count)]
        array = np.empty(count, dtype=object)
        array[:] = flat
        return array.reshape(shape)
    dtype = datatype.numpy_dtype
    if datatype is DataType.BOOL:
        flat_array = rng.integers(0, 2, count).astype(bool)
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        flat_array = rng.integers(int(info.min), int(info.max), count, dtype=dtype, endpoint=True)
        flat_array[: min(count, 2)] = [info.min, info.max][: min(count, 2)]
    else:
        flat_array = (rng.standard_normal(count) * 1000).astype(dtype)
        if count >= 3:
            flat_array[:3] = [np.finfo(dtype).max, np.finfo(dtype).smallest_subnormal, -0.0]
    return flat_array.reshape(shape)


def client_request(
    arrays: dict[str, np.ndarray], *, binary: bool, outputs: Any = None, **kwargs: Any
) -> InferRequest:
    """Encode ``arrays`` with tritonclient exactly as its HTTP client would, then decode."""
    inputs = []
    for name, array in arrays.items():
        datatype = DataType.from_numpy(array.dtype).value
        tensor = httpclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, **kwargs
    )
    return decode_infer_request(body, header_length=json_size, model_name="m", model_version=None)


def client_result(
    response: InferResponse, request: InferRequest | None = None
) -> tuple[httpclient.InferResult, int | None]:
    """Encode ``response`` and parse it with tritonclient's own response parser."""
    request = request or InferRequest(model_name=response.model_name)
    body, header_length = encode_infer_response(response, request)
    parsed = httpclient.InferenceServerClient.parse_response_body(body, header_length=header_length)
    return parsed, header_length


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected)


SHAPES = [(2, 3), (1,), (0, 4), (), (2, 1, 2, 3)]


# --- requests from tritonclient --------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", list(DataType), ids=lambda t: t.value)
def test_tritonclient_request_decodes_to_the_same_array(
    datatype: DataType, binary: bool, shape: tuple[int, ...]
) -> None:
    array = sample(datatype, shape, text=not binary)
    request = client_request({"x": array}, binary=binary)
    assert_same(request.inputs["x"], array)


def test_several_inputs_mixing_binary_and_json_keep_their_order_and_data() -> None:
    a = sample(DataType.FP32, (3, 2))
    b = sample(DataType.BYTES, (4,))
    c = sample(DataType.INT8, (5,))
    inputs = []
    for name, array, binary in [("a", a, True), ("b", b, True), ("c", c, False)]:
        tensor = httpclient.InferInput(
            name, list(array.shape), DataType.from_numpy(array.dtype).value
        )
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs)
    request = decode_infer_request(body, header_length=json_size, model_name="m", model_version=3)
    assert list(request.inputs) == ["a", "b", "c"]
    for name, array in [("a", a), ("b", b), ("c", c)]:
        assert_same(request.inputs[name], array)
    assert request.model_name == "m" and request.model_version == 3


def test_json_floats_with_nan_and_infinity_from_tritonclient_decode() -> None:
    array = np.array([np.nan, np.inf, -np.inf, 1.5], dtype=np.float32)
    assert_same(client_request({"x": array}, binary=False).inputs["x"], array)


def test_request_id_parameters_and_requested_outputs_are_kept() -> None:
    outputs = [
        httpclient.InferRequestedOutput("y", binary_data=False),
        httpclient.InferRequestedOutput("z"),
    ]
    request = client_request(
        {"x": sample(DataType.FP32, (2,))},
        binary=True,
        outputs=outputs,
        request_id="req-7",
        sequence_id=42,
        sequence_start=True,
        priority=2,
        timeout=1000,
        parameters={"custom": "value"},
    )
    assert request.id == "req-7"
    assert request.outputs == [RequestedOutput("y", False), RequestedOutput("z", True)]
    assert request.parameters == {
        "sequence_id": 42,
        "sequence_start": True,
        "sequence_end": False,
        "priority": 2,
        "timeout": 1000,
        "custom": "value",
    }


def test_no_requested_outputs_means_all_outputs_and_tritonclient_asks_for_binary() -> None:
    request = client_request({"x": sample(DataType.FP32, (2,))}, binary=False)
    assert request.outputs is None
    assert request.parameters == {"binary_data_output": True}
    assert request.id is None


def test_nested_json_data_is_accepted_in_row_major_order() -> None:
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]}]}
    ).encode()
    request = decode_infer_request(body, header_length=None, model_name="m", model_version=None)
    assert_same(request.inputs["x"], np.array([[1, 2], [3, 4]], dtype=np.int32))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_decoded_inputs_are_read_only_native_and_aligned(binary: bool) -> None:
    # Ids of 1..8 characters move the binary part through every offset modulo 8.
    for request_id in ["i" * n for n in range(1, 9)]:
        request = client_request(
            {"x": sample(DataType.FP64, (3, 3)), "y": sample(DataType.INT16, (4,))},
            binary=binary,
            request_id=request_id,
        )
        for array in request.inputs.values():
            assert not array.flags.writeable
            assert array.flags.aligned
            assert array.dtype.isnative


# --- responses parsed by tritonclient --------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", list(DataType), ids=lambda t: t.value)
def test_response_parses_with_tritonclient_to_the_same_array(
    datatype: DataType, binary: bool, shape: tuple[int, ...]
) -> None:
    array = sample(datatype, shape, text=not binary)
    response = InferResponse(model_name="m", model_version=1, outputs={"y": array})
    request = InferRequest(model_name="m", outputs=[RequestedOutput("y", binary)])
    result, header_length = client_result(response, request)
    assert (header_length is not None) == binary
    if datatype is DataType.BYTES and not binary:
        # tritonclient turns JSON strings into str objects, as it does against Triton.
        array = np.vectorize(lambda b: b.decode(), otypes=[object])(array).reshape(shape)
    assert_same(result.as_numpy("y"), array)


def test_every_fp16_value_survives_the_json_response_exactly() -> None:
    values = np.arange(2**16, dtype=np.uint16).view(np.float16)
    values = values[np.isfinite(values)]
    response = InferResponse(model_name="m", model_version=1, outputs={"y": values})
    request = InferRequest(model_name="m", outputs=[RequestedOutput("y", False)])
    result, _ = client_result(response, request)
    np.testing.assert_array_equal(result.as_numpy("y").view(np.uint16), values.view(np.uint16))


def test_random_fp32_bit_patterns_survive_the_json_response_exactly() -> None:
    bits = np.random.default_rng(0).integers(0, 2**32, 200_000, dtype=np.uint32)
    values = bits.view(np.float32)
    values = values[np.isfinite(values)]
    response = InferResponse(model_name="m", model_version=1, outputs={"y": values})
    request = InferRequest(model_name="m", outputs=[RequestedOutput("y", False)])
    result, _ = client_result(response, request)
    np.testing.assert_array_equal(result.as_numpy("y").view(np.uint32), values.view(np.uint32))


def test_non_finite_json_floats_reach_tritonclient() -> None:
    values = np.array([np.nan, np.inf, -np.inf, 2.5], dtype=np.float32)
    response = InferResponse(model_name="m", model_version=1, outputs={"y": values})
    request = InferRequest(model_name="m", outputs=[RequestedOutput("y", False)])
    result, _ = client_result(response, request)
    assert_same(result.as_numpy("y"), values)


def test_response_document_has_triton_fields_and_only_the_requested_outputs_in_order() -> None:
    outputs: dict[str, np.ndarray] = {
        "a": np.zeros(2, np.float32),
        "b": np.ones(3, np.int64),
        "c": np.ones(1, bool),
    }
    response = InferResponse(
        model_name="m", model_version=4, outputs=outputs, parameters={"sequence_id": 3}
    )
    request = InferRequest(
        model_name="m", id="r1", outputs=[RequestedOutput("c", False), RequestedOutput("a", True)]
    )
    result, header_length = client_result(response, request)
    document = result.get_response()
    assert document["model_name"] == "m"
    assert document["model_version"] == "4"
    assert document["id"] == "r1"
    assert document["parameters"] == {"sequence_id": 3}
    assert [o["name"] for o in document["outputs"]] == ["c", "a"]
    assert document["outputs"][0] == {"name": "c", "datatype": "BOOL", "shape": [1], "data": [True]}
    assert document["outputs"][1]["parameters"] == {"binary_data_size": 8}
    assert header_length is not None
    assert_same(result.as_numpy("a"), outputs["a"])


def test_all_outputs_follow_binary_data_output_when_none_are_named() -> None:
    outputs: dict[str, np.ndarray] = {
        "a": np.arange(3, dtype=np.float32),
        "b": np.arange(2, dtype=np.uint8),
    }
    response = InferResponse(model_name="m", model_version=1, outputs=outputs)
    for flag, expect_binary in [(True, True), (False, False), (None, False)]:
        parameters = {} if flag is None else {"binary_data_output": flag}
        request = InferRequest(model_name="m", parameters=parameters)
        result, header_length = client_result(response, request)
        assert [o["name"] for o in result.get_response()["outputs"]] == ["a", "b"]
        assert (header_length is not None) == expect_binary
        for name, array in outputs.items():
            assert_same(result.as_numpy(name), array)


def test_an_output_without_a_binary_choice_takes_the_request_default() -> None:
    response = InferResponse(model_name="m", model_version=1, outputs={"a": np.ones(2)})
    request = InferRequest(
        model_name="m", outputs=[RequestedOutput("a")], parameters={"binary_data_output": True}
    )
    result, header_length = client_result(response, request)
    assert header_length is not None
    assert "binary_data_size" in result.get_output("a")["parameters"]


def test_response_without_id_omits_it_and_an_empty_json_body_has_no_header_length() -> None:
    response = InferResponse(model_name="m", model_version=1, outputs={"a": np.ones(2)})
    request = InferRequest(model_name="m", outputs=[RequestedOutput("a", False)])
    body, header_length = encode_infer_response(response, request)
    assert header_length is None
    assert set(json.loads(body)) == {"model_name", "model_version", "outputs"}


def test_non_utf8_bytes_output_is_sent_binary_even_when_json_was_asked() -> None:
    array = np.array([b"\xff\x00", b"ok"], dtype=object)
    response = InferResponse(model_name="m", model_version=1, outputs={"s": array})
    request = InferRequest(model_name="m", outputs=[RequestedOutput("s", False)])
    result, header_length = client_result(response, request)
    assert header_length is not None
    assert_same(result.as_numpy("s"), array)


def test_str_and_fixed_width_bytes_outputs_are_bytes_tensors() -> None:
    outputs = {"u": np.array(["a\u00e9", "b"]), "s": np.array([b"ab", b"c"])}
    response = InferResponse(model_name="m", model_version=1, outputs=outputs)
    result, _ = client_result(response, InferRequest(model_name="m"))
    assert result.get_output("u")["datatype"] == "BYTES"
    assert list(result.as_numpy("u")) == ["a\u00e9", "b"]
    assert list(result.as_numpy("s")) == ["ab", "c"]


def test_binary_response_of_a_non_contiguous_array_is_row_major() -> None:
    array = np.arange(12, dtype=np.int32).reshape(3, 4).T
    response = InferResponse(model_name="m", model_version=1, outputs={"y": array})
    request = InferRequest(model_name="m", outputs=[RequestedOutput("y", True)])
    result, _ = client_result(response, request)
    assert_same(result.as_numpy("y"), array)


def test_requesting_an_output_the_model_did_not_produce_is_invalid() -> None:
    response = InferResponse(model_name="m", model_version=1, outputs={"a": np.ones(1)})
    request = InferRequest(model_name="m", outputs=[RequestedOutput("nope")])
    with pytest.raises(InvalidRequest, match=r"'nope'.*did not produce"):
        encode_infer_response(response, request)


def test_an_output_dtype_without_a_v2_datatype_is_a_backend_error() -> None:
    response = InferResponse(model_name="m", model_version=1, outputs={"c": np.ones(1, complex)})
    with pytest.raises(BackendError, match="complex"):
        encode_infer_response(response, InferRequest(model_name="m"))


def test_encode_error_is_a_json_object_with_the_message() -> None:
    assert json.loads(encode_error('bad "thing"\n')) == {"error": 'bad "thing"\n'}


# --- bad requests ----------------------------------------------------------------------------


def body_of(document: Any, binary: bytes = b"") -> tuple[bytes, int | None]:
    header = json.dumps(document).encode()
    return header + binary, (len(header) if binary else None)


def one_input(**fields: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", **fields}]}


def json_input(datatype: Any, data: Any, shape: Any = None) -> dict[str, Any]:
    shape = [len(data)] if shape is None else shape
    return {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]}


def binary_input(datatype: str, shape: list[int], raw: bytes, size: int | None = None) -> Any:
    size = len(raw) if size is None else size
    entry = {
        "name": "x",
        "shape": shape,
        "datatype": datatype,
        "parameters": {"binary_data_size": size},
    }
    return body_of({"inputs": [entry]}, raw)


def with_output(**parameters: Any) -> dict[str, Any]:
    document = json_input("FP32", [1.0])
    document["outputs"] = [{"name": "y", "parameters": parameters}]
    return document


BAD_REQUESTS: list[tuple[str, Any, str]] = [
    ("invalid json", (b'{"inputs": [', None), "not valid JSON"),
    ("not utf-8", (b"\xff\xfe\x00", None), "not valid JSON"),
    ("deeply nested", (b"[" * 100_000, None), "nested too deeply"),
    ("top level list", body_of([]), "must be an object"),
    ("no inputs", body_of({}), "'inputs'"),
    ("inputs not a list", body_of({"inputs": {}}), "'inputs'"),
    ("input not an object", body_of({"inputs": [3]}), r"inputs\[0\] must be a JSON object"),
    ("input without name", body_of({"inputs": [{"shape": [1]}]}), "'name'"),
    (
        "duplicate input",
        body_of({"inputs": json_input("FP32", [1])["inputs"] * 2}),
        "input 'x' is given more than once",
    ),
    ("no datatype", body_of(one_input(shape=[1], datatype=None, data=[1])), "no 'datatype'"),
    ("unknown datatype", body_of(json_input("FP8", [1])), 'unknown datatype "FP8"'),
    ("datatype not a string", body_of(json_input(["FP32"], [1])), "unknown datatype"),
    ("BF16 unsupported", body_of(json_input("BF16", [1])), 'unknown datatype "BF16"'),
    ("no shape", body_of({"inputs": [{"name": "x", "datatype": "FP32", "data": []}]}), "'shape'"),
    ("negative dim", body_of(json_input("FP32", [1], [-1])), "non-negative integers"),
    ("float dim", body_of(json_input("FP32", [1], [1.0])), "non-negative integers"),
    ("bool dim", body_of(json_input("FP32", [1], [True])), "non-negative integers"),
    ("string shape", body_of(json_input("FP32", [1], "1")), "non-negative integers"),
    ("huge shape", body_of(json_input("FP32", [], [2**40])), "too large"),
    ("rank 33", body_of(json_input("FP32", [1], [1] * 33)), "33 dimensions, at most 32"),
    ("rank 10000", body_of(json_input("FP32", [1], [1] * 10_000)), "10000 dimensions"),
    ("huge dim of empty", body_of(json_input("FP32", [], [0, 2**62])), "too large"),
    ("too few elements", body_of(json_input("FP32", [1.0], [2])), "needs 2 elements, 'data' has 1"),
    ("too many nested", body_of(json_input("INT32", [[1, 2], [3]], [2])), "needs 2 elements"),
    ("mixed nesting", body_of(json_input("INT32", [1, [2]], [2])), "mixes nested arrays"),
    ("data not array", body_of(json_input("FP32", 5, [1])), "'data' must be a JSON array"),
    ("string for float", body_of(json_input("FP32", ["1.0"])), 'numbers, found string "1.0"'),
    ("null for float", body_of(json_input("FP64", [None])), "found null"),
    ("object for int", body_of(json_input("INT8", [{}])), "found object"),
    ("bool for int", body_of(json_input("INT32", [1, True])), "integers, found boolean true"),
    ("float for int", body_of(json_input("INT64", [1.5])), "integers, found number 1.5"),
    ("bool for float", body_of(json_input("FP32", [False])), "found boolean"),
    ("int for bool", body_of(json_input("BOOL", [1])), "true/false, found integer 1"),
    ("number for bytes", body_of(json_input("BYTES", [1])), "strings, found integer"),
    ("uint8 300", body_of(json_input("UINT8", [1, 300])), "integer 300 is out of range for UINT8"),
    ("int8 -129", body_of(json_input("INT8", [-129])), "-129 is out of range for INT8"),
    ("uint64 negative", body_of(json_input("UINT64", [-1])), "out of range for UINT64"),
    (
        "uint64 2**64",
        body_of(json_input("UINT64", [2**64])),
        # orjson, when installed, reads integers past 64 bits as floats
        "out of range for UINT64|integers, found number",
    ),
    ("int64 2**63", body_of(json_input("INT64", [2**63])), "out of range for INT64"),
    ("fp16 70000", body_of(json_input("FP16", [1, 70000])), "70000 is out of range for FP16"),
    ("fp32 1e39", body_of(json_input("FP32", [1e39])), "out of range for FP32"),
    ("fp64 10**400", body_of(json_input("FP64", [10**400])), "out of range for FP64"),
    (
        "lone surrogate",
        (b'{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["\\ud800"]}]}', None),
        "not valid Unicode",
    ),
    ("binary size mismatch", binary_input("FP32", [2], b"\0" * 4), "needs 8 bytes, binary"),
    ("binary overrun", binary_input("FP32", [2], b"\0" * 4, 8), "only 4 binary bytes remain"),
    (
        "binary without header length",
        body_of(one_input(shape=[1], parameters={"binary_data_size": 4})),
        "no Inference-Header-Content-Length",
    ),
    (
        "trailing bytes",
        (binary_input("UINT8", [2], b"ab")[0] + b"zz", binary_input("UINT8", [2], b"ab")[1]),
        "2 bytes after the last binary input",
    ),
    ("trailing bytes, no binary input", (b'{"inputs":[]}xx', 13), "2 bytes after"),
    (
        "header length past the body",
        (b'{"inputs":[]}', 14),
        "Inference-Header-Content-Length is 14",
    ),
    ("negative header length", (b'{"inputs":[]}', -1), "Inference-Header-Content-Length is -1"),
    (
        "data and binary",
        body_of(one_input(data=[1, 2], parameters={"binary_data_size": 8}), b"\0" * 8),
        "both 'data' and 'binary_data_size'",
    ),
    (
        "negative binary size",
        body_of(one_input(parameters={"binary_data_size": -8}), b"\0" * 8),
        "non-negative integer",
    ),
    (
        "string binary size",
        body_of(one_input(parameters={"binary_data_size": "8"}), b"\0" * 8),
        "non-negative integer",
    ),
    ("neither data nor binary", body_of(one_input()), "needs 'data' or"),
    ("bool binary 2", binary_input("BOOL", [2], b"\x01\x02"), "BOOL binary data must be bytes 0"),
    ("bytes binary cut in prefix", binary_input("BYTES", [1], b"\x01\0"), "ends before element 0"),
    ("bytes binary overrun", binary_input("BYTES", [1], b"\x05\0\0\0ab"), "declares 5 bytes"),
    ("bytes binary leftover", binary_input("BYTES", [1], b"\x01\0\0\0abc"), "2 bytes left over"),
    ("bytes shape too big", binary_input("BYTES", [2**20], b"\0\0\0\0"), "element 1 of 1048576"),
    (
        "shared memory input",
        body_of(one_input(parameters={"shared_memory_region": "r"})),
        "shared memory is not supported",
    ),
    ("parameters not object", body_of({"inputs": [], "parameters": [1]}), "'parameters' must"),
    ("id not a string", body_of({"inputs": [], "id": 7}), "'id' must be a string"),
    (
        "binary_data_output not bool",
        body_of({"inputs": [], "parameters": {"binary_data_output": 1}}),
        "'binary_data_output' must be true or false",
    ),
    ("outputs not a list", body_of({"inputs": [], "outputs": {}}), "'outputs' must be an array"),
    ("output not an object", body_of({"inputs": [], "outputs": ["y"]}), r"outputs\[0\] must"),
    ("output without name", body_of({"inputs": [], "outputs": [{}]}), r"outputs\[0\] needs"),
    (
        "duplicate output",
        body_of({"inputs": [], "outputs": [{"name": "y"}, {"name": "y"}]}),
        "output 'y' is requested more than once",
    ),
    ("classification", body_of(with_output(classification=3)), "'classification'.*not supported"),
    ("binary_data not bool", body_of(with_output(binary_data="yes")), "binary_data must be true"),
    ("shared memory output", body_of(with_output(shared_memory_region="r")), "shared memory"),
]


@pytest.mark.parametrize(
    ("body", "expected"),
    [pytest.param(body, expected, id=case) for case, body, expected in BAD_REQUESTS],
)
def test_bad_request_is_invalid_with_a_message_naming_the_problem(
    body: tuple[bytes, int | None], expected: str
) -> None:
    raw, header_length = body
    with pytest.raises(InvalidRequest, match=expected):
        decode_infer_request(raw, header_length=header_length, model_name="m", model_version=1)


def test_max_elements_is_checked_against_the_declared_shape_before_the_data() -> None:
    raw, _ = body_of(json_input("FP32", [1.0] * 10, [10]))
    decode_infer_request(raw, header_length=None, model_name="m", model_version=1, max_elements=10)
    with pytest.raises(InvalidRequest, match="at most 9 elements"):
        decode_infer_request(
            raw, header_length=None, model_name="m", model_version=1, max_elements=9
        )


# --- properties ------------------------------------------------------------------------------

_shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)


@st.composite
def tensors(draw: st.DrawFn, *, text: bool) -> np.ndarray:
    datatype = draw(st.sampled_from(list(DataType)))
    shape = draw(_shapes)
    if datatype is DataType.BYTES:
        count = int(np.prod(shape))
        element = st.text(max_size=8).map(str.encode) if text else st.binary(max_size=8)
        array = np.empty(count, dtype=object)
        array[:] = draw(st.lists(element, min_size=count, max_size=count))
        return array.reshape(shape)
    return draw(hnp.arrays(datatype.numpy_dtype, shape))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), binary=st.booleans(), count=st.integers(1, 3))
def test_random_tensors_from_tritonclient_round_trip(
    data: st.DataObject, binary: bool, count: int
) -> None:
    arrays = {f"in{i}": data.draw(tensors(text=not binary)) for i in range(count)}
    request = client_request(arrays, binary=binary)
    assert list(request.inputs) == list(arrays)
    for name, array in arrays.items():
        assert_same(request.inputs[name], array)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), binary=st.booleans())
def test_random_tensors_reach_tritonclient_unchanged(data: st.DataObject, binary: bool) -> None:
    array = data.draw(tensors(text=not binary))
    response = InferResponse(model_name="m", model_version=1, outputs={"y": array})
    result, _ = client_result(
        response, InferRequest(model_name="m", outputs=[RequestedOutput("y", binary)])
    )
    if array.dtype == object and not binary:
        array = np.vectorize(lambda b: b.decode(), otypes=[object])(array).reshape(array.shape)
    assert_same(result.as_numpy("y"), array)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 400), junk=st.binary(max_size=6), header_shift=st.integers(-3, 3))
def test_damaged_bodies_raise_only_invalid_request(
    cut: int, junk: bytes, header_shift: int
) -> None:
    arrays = {"a": sample(DataType.BYTES, (3,)), "b": sample(DataType.FP32, (2, 2))}
    inputs = []
    for name, array in arrays.items():
        tensor = httpclient.InferInput(
            name, list(array.shape), DataType.from_numpy(array.dtype).value
        )
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs)
    damaged = body[:cut] + junk + body[cut + len(junk) :]
    # Any outcome but an exception other than InvalidRequest is fine.
    with contextlib.suppress(InvalidRequest):
        decode_infer_request(
            damaged, header_length=json_size + header_shift, model_name="m", model_version=1
        )


def test_a_rank_32_shape_decodes() -> None:
    body, length = body_of(json_input("FP32", [1.5], [1] * 32))
    request = decode_infer_request(body, header_length=length, model_name="m", model_version=None)
    assert request.inputs["x"].shape == (1,) * 32


def test_what_the_config_rules_out_is_refused_before_its_data_is_decoded() -> None:
    config = ModelConfig(
        name="m",
        platform="",
        backend="fake",
        max_batch_size=2,
        inputs=(TensorConfig("x", DataType.FP32, (2,)),),
        outputs=(TensorConfig("y", DataType.FP32, (2,)),),
    )
    expected = ExpectedInputs(config)

    def refusal(document: Any) -> str:
        body, length = body_of(document)
        with pytest.raises(InvalidRequest) as caught:
            decode_infer_request(
                body, header_length=length, model_name="m", model_version=None, expected=expected
            )
        return caught.value.message

    # The data is malformed each time: the config's refusal comes first.
    assert "unexpected input 'z'" in refusal(
        {"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 2], "data": "junk"}]}
    )
    assert "takes 1 (x)" in refusal({"inputs": [{"name": "x"}, {}, {}]})
    assert "max_batch_size 2" in refusal(json_input("FP32", "junk", [3, 2]))
    assert "found INT64" in refusal(json_input("INT64", "junk", [1, 2]))
