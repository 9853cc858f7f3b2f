"""KServe v2 inference over gRPC: ModelInferRequest -> InferRequest, InferResponse -> protobuf.

The checks and messages are the HTTP codec's (repoman.server.decode / encode); only what the
wire itself spells differently (typed ``contents``, ``raw_input_contents``) is read here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from repoman.dataplane.request_checks import ExpectedInputs
from repoman.errors import InvalidRequest
from repoman.inference import InferRequest, InferResponse
from repoman.server.codec_tensors import (
    decode_binary_tensor,
    decode_json_tensor,
    encode_binary_tensor,
    json_preview,
    object_array,
)
from repoman.server.decode import (
    DEFAULT_MAX_ELEMENTS,
    check_shape,
    decode_outputs,
    parameters_of,
    parse_datatype,
    request_parameters,
)
from repoman.server.encode import output_tensor
from repoman.types import DataType

__all__ = ["decode_infer_request", "encode_infer_response", "parameter_values"]

CONTENTS_FIELD: dict[DataType, str] = {
    DataType.BOOL: "bool_contents",
    DataType.UINT8: "uint_contents",
    DataType.UINT16: "uint_contents",
    DataType.UINT32: "uint_contents",
    DataType.UINT64: "uint64_contents",
    DataType.INT8: "int_contents",
    DataType.INT16: "int_contents",
    DataType.INT32: "int_contents",
    DataType.INT64: "int64_contents",
    DataType.FP32: "fp32_contents",
    DataType.FP64: "fp64_contents",
    DataType.BYTES: "bytes_contents",
}
"""Where InferTensorContents holds each datatype (FP16 has no field: raw contents only)."""


def parameter_values(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A protobuf ``map<string, InferParameter>`` (or ModelRepositoryParameter) as plain values."""
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = None if choice is None else getattr(parameter, choice)
    return values


def decode_infer_request(
    message: pb.ModelInferRequest,
    *,
    model_name: str,
    model_version: int | None,
    expected: ExpectedInputs | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> InferRequest:
    """The InferRequest a ModelInferRequest carries; InvalidRequest for anything malformed.

    Inputs come from ``raw_input_contents`` (one entry per input, in input order, as
    tritonclient sends them) or from each input's typed ``contents``; raw fixed-size inputs
    are read-only views of the message's bytes.
    """
    parameters = (
        request_parameters({"parameters": parameter_values(message.parameters)})
        if message.parameters
        else {}
    )
    outputs = None
    if message.outputs:
        outputs = decode_outputs(
            [
                {"name": output.name, "parameters": parameter_values(output.parameters)}
                for output in message.outputs
            ]
        )
    return InferRequest(
        model_name=model_name,
        model_version=model_version,
        id=message.id or None,
        inputs=_decode_inputs(message, expected, max_elements),
        outputs=outputs,
        parameters=parameters,
    )


def _decode_inputs(
    message: pb.ModelInferRequest, expected: ExpectedInputs | None, max_elements: int
) -> dict[str, np.ndarray]:
    entries = message.inputs
    raw = message.raw_input_contents
    if raw and len(raw) != len(entries):
        raise InvalidRequest(
            f"the request has {len(entries)} inputs and {len(raw)} raw_input_contents; "
            "give raw contents for every input, in input order, or for none"
        )
    if expected is not None:
        expected.check_count(len(entries))
    inputs: dict[str, np.ndarray] = {}
    for position, entry in enumerate(entries):
        name = entry.name
        if not name:
            raise InvalidRequest(f"inputs[{position}] needs a non-empty string 'name'")
        if name in inputs:
            raise InvalidRequest(f"input '{name}' is given more than once")
        datatype = parse_datatype(name, entry.datatype or None)
        shape, count = check_shape(name, list(entry.shape), max_elements)
        if expected is not None:
            expected.check_input(name, datatype, shape)
        if entry.parameters:
            parameters_of({"parameters": parameter_values(entry.parameters)}, "input", name)
        if raw:
            if entry.HasField("contents"):
                raise InvalidRequest(
                    f"input '{name}' has both 'contents' and raw_input_contents; give one"
                )
            array = _raw_tensor(name, datatype, shape, count, raw[position])
        elif entry.HasField("contents"):
            array = _typed_tensor(name, datatype, shape, count, entry.contents)
        else:
            raise InvalidRequest(f"input '{name}' needs 'contents' or raw_input_contents")
        array.flags.writeable = False
        inputs[name] = array
    return inputs


def _raw_tensor(
    name: str, datatype: DataType, shape: list[int], count: int, chunk: bytes
) -> np.ndarray:
    size = count * datatype.itemsize
    if datatype is not DataType.BYTES and len(chunk) != size:
        raise InvalidRequest(
            f"input '{name}': {datatype.value} shape {json_preview(shape)} needs {size} bytes, "
            f"its raw_input_contents has {len(chunk)}"
        )
    return decode_binary_tensor(name, datatype, shape, count, memoryview(chunk))


def _typed_tensor(
    name: str, datatype: DataType, shape: list[int], count: int, contents: pb.InferTensorContents
) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidRequest(
            f"input '{name}': {datatype.value} has no typed contents field; "
            "send it in raw_input_contents"
        )
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidRequest(
            f"input '{name}': shape {json_preview(shape)} needs {count} elements, "
            f"contents.{field} has {len(values)}"
        )
    if datatype is DataType.BYTES:
        return object_array(list(values)).reshape(shape)
    # NOTE: the JSON path's checks: a value out of the datatype's range is refused by name.
    return decode_json_tensor(name, datatype, shape, count, list(values))


def encode_infer_response(response: InferResponse, request: InferRequest) -> pb.ModelInferResponse:
    """The ModelInferResponse for ``request``: every output in ``raw_output_contents``, as
    Triton answers (the ones requested, in request order; else all, in the model's order).

    Raises InvalidRequest for a requested output the model did not produce, and BackendError
    for an output whose numpy dtype has no v2 datatype (the HTTP encoder's checks).
    """
    names = (
        list(response.outputs)
        if request.outputs is None
        else [output.name for output in request.outputs]
    )
    response_id = response.id if response.id is not None else request.id
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=str(response.model_version),
        id=response_id or "",
    )
    raw = message.raw_output_contents
    for name in names:
        array, datatype = output_tensor(response, name)
        message.outputs.add(name=name, datatype=datatype.value, shape=array.shape)
        raw.append(bytes(encode_binary_tensor(array, datatype)))
    for key, value in response.parameters.items():
        _set_parameter(message.parameters[key], value)
    return message


def _set_parameter(parameter: pb.InferParameter, value: Any) -> None:
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int) and -(2**63) <= value < 2**63:
        parameter.int64_param = value
    elif isinstance(value, float):
        parameter.double_param = value
    elif isinstance(value, str):
        parameter.string_param = value
    else:
        parameter.string_param = json.dumps(value, default=str)
