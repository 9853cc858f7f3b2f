"""KServe v2 inference request bodies over HTTP: bytes (JSON and binary tensors) -> InferRequest."""

from __future__ import annotations

import math
from collections.abc import Container
from typing import Any

import numpy as np

from repoman.dataplane.request_checks import ExpectedInputs
from repoman.errors import InvalidRequest
from repoman.inference import InferRequest, RequestedOutput
from repoman.server.codec_tensors import (
    decode_binary_tensor,
    decode_json_tensor,
    describe_json,
    is_utf8_text,
    json_loads,
    json_preview,
)
from repoman.types import DataType

__all__ = [
    "DEFAULT_MAX_ELEMENTS",
    "MAX_RANK",
    "check_shape",
    "decode_infer_request",
    "decode_outputs",
    "parameters_of",
    "parse_datatype",
    "request_parameters",
]

DEFAULT_MAX_ELEMENTS = 64 * 1024 * 1024
"""The most elements one input may declare (checked before anything is allocated)."""

MAX_RANK = 32
"""The most dimensions one input may declare: numpy builds up to 32 (numpy 1) or 64 (numpy 2)."""

_DATATYPE_NAMES = ", ".join(t.value for t in DataType)


def decode_infer_request(
    body: bytes,
    *,
    header_length: int | None,
    model_name: str,
    model_version: int | None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    expected: ExpectedInputs | None = None,
) -> InferRequest:
    """Decode a v2 ``/infer`` request body.

    ``header_length`` is the ``Inference-Header-Content-Length`` header: the JSON header is
    that many leading bytes and the rest holds each binary input, in input order. None means
    the whole body is JSON. Inputs come back shaped as declared, numpy dtypes as
    ``DataType.numpy_dtype`` (BYTES: object arrays of ``bytes``), all read-only: binary inputs
    are usually views of ``body``. Every malformed body raises InvalidRequest, nothing else.
    ``expected`` (the routed version's config) refuses inputs it rules out before their
    tensors are decoded.
    """
    header, binary = _split_body(body, header_length)
    document = json_loads(header)
    if not isinstance(document, dict):
        raise InvalidRequest(f"request JSON must be an object, found {type(document).__name__}")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequest(f"request 'id' must be a string, found {describe_json(request_id)}")
    if request_id is not None and not is_utf8_text(request_id):
        # NOTE: JSON may spell a lone surrogate ("\ud800"); it cannot be sent back as UTF-8.
        raise InvalidRequest("request 'id' must be valid Unicode text (found a lone surrogate)")
    parameters = request_parameters(document)
    inputs = _decode_inputs(document.get("inputs"), binary, header_length, max_elements, expected)
    return InferRequest(
        model_name=model_name,
        model_version=model_version,
        id=request_id,
        inputs=inputs,
        outputs=decode_outputs(document.get("outputs")),
        parameters=parameters,
    )


def _split_body(body: bytes, header_length: int | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    if not 0 <= header_length <= len(body):
        raise InvalidRequest(
            f"Inference-Header-Content-Length is {header_length}, the body has {len(body)} bytes"
        )
    view = memoryview(body)
    return bytes(view[:header_length]), view[header_length:]


def request_parameters(document: dict[str, Any]) -> dict[str, Any]:
    """The request-level ``parameters`` of a request ``document``, checked."""
    parameters = parameters_of(document, "request")
    binary_output = parameters.get("binary_data_output")
    if binary_output is not None and not isinstance(binary_output, bool):
        raise InvalidRequest(
            "request parameter 'binary_data_output' must be true or false, "
            f"found {describe_json(binary_output)}"
        )
    return parameters


def parameters_of(holder: dict[str, Any], kind: str, name: str = "") -> dict[str, Any]:
    """``holder``'s ``parameters`` object (``kind``/``name`` say whose, for the message)."""
    parameters = holder.get("parameters")
    if parameters is None:
        return {}
    what = f"{kind} '{name}'" if name else kind
    if not isinstance(parameters, dict):
        raise InvalidRequest(
            f"{what} 'parameters' must be a JSON object, found {describe_json(parameters)}"
        )
    if "shared_memory_region" in parameters:
        raise InvalidRequest(f"{what}: shared memory is not supported; send the data in the body")
    return parameters


def _decode_inputs(
    entries: Any,
    binary: memoryview,
    header_length: int | None,
    max_elements: int,
    expected: ExpectedInputs | None,
) -> dict[str, np.ndarray]:
    if not isinstance(entries, list):
        raise InvalidRequest("request must have an 'inputs' array")
    if expected is not None:
        expected.check_count(len(entries))
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for position, entry in enumerate(entries):
        name = _entry_name(entry, "input", position, inputs, "given")
        datatype = parse_datatype(name, entry.get("datatype"))
        shape, count = check_shape(name, entry.get("shape"), max_elements)
        if expected is not None:
            expected.check_input(name, datatype, shape)
        parameters = parameters_of(entry, "input", name)
        size = parameters.get("binary_data_size")
        if size is not None:
            if "data" in entry:
                raise InvalidRequest(
                    f"input '{name}' has both 'data' and 'binary_data_size'; give one"
                )
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidRequest(
                    f"input '{name}': binary_data_size must be a non-negative integer, "
                    f"found {describe_json(size)}"
                )
            if offset + size > len(binary):
                where = (
                    "there is no Inference-Header-Content-Length header"
                    if header_length is None
                    else f"only {len(binary) - offset} binary bytes remain"
                )
                raise InvalidRequest(f"input '{name}': binary_data_size is {size} but {where}")
            chunk = binary[offset : offset + size]
            offset += size
            array = decode_binary_tensor(name, datatype, shape, count, chunk)
        elif "data" in entry:
            array = decode_json_tensor(name, datatype, shape, count, entry["data"])
        else:
            raise InvalidRequest(f"input '{name}' needs 'data' or 'parameters.binary_data_size'")
        array.flags.writeable = False
        inputs[name] = array
    if offset != len(binary):
        raise InvalidRequest(
            f"the body has {len(binary) - offset} bytes after the last binary input "
            "(binary_data_size values do not add up to the binary part)"
        )
    return inputs


def parse_datatype(name: str, value: Any) -> DataType:
    if value is None:
        raise InvalidRequest(f"input '{name}' has no 'datatype'")
    try:
        return DataType.from_protocol_name(value)
    except (KeyError, TypeError):
        raise InvalidRequest(
            f"input '{name}': unknown datatype {json_preview(value)}, "
            f"expected one of {_DATATYPE_NAMES}"
        ) from None


def check_shape(name: str, value: Any, max_elements: int) -> tuple[list[int], int]:
    """The declared shape and its element count, refused when it exceeds ``max_elements``."""
    if type(value) is list and len(value) > MAX_RANK:
        raise InvalidRequest(
            f"input '{name}': 'shape' has {len(value)} dimensions, at most {MAX_RANK} are allowed"
        )
    # NOTE: ``type(d) is int`` also refuses bools (True is an int, but not of type int).
    if type(value) is not list or not all(type(d) is int and d >= 0 for d in value):
        raise InvalidRequest(
            f"input '{name}': 'shape' must be a list of non-negative integers, "
            f"found {describe_json(value)}"
        )
    count = math.prod(value)
    # The zero-free product bounds every dimension too, so even an empty tensor cannot
    # declare a dimension numpy would refuse to build.
    if count > max_elements or (count == 0 and math.prod(d for d in value if d) > max_elements):
        raise InvalidRequest(
            f"input '{name}': shape {json_preview(value)} is too large "
            f"(at most {max_elements} elements)"
        )
    return value, count


def decode_outputs(entries: Any) -> list[RequestedOutput] | None:
    # NOTE: an empty list asks for nothing in particular, like an absent one: every output.
    if entries is None or entries == []:
        return None
    if not isinstance(entries, list):
        raise InvalidRequest(f"request 'outputs' must be an array, found {describe_json(entries)}")
    outputs: list[RequestedOutput] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        name = _entry_name(entry, "output", position, seen, "requested")
        seen.add(name)
        parameters = parameters_of(entry, "output", name)
        if parameters.get("classification", 0) != 0:
            raise InvalidRequest(
                f"output '{name}': the 'classification' parameter is not supported; "
                "request the raw output and rank it on the client"
            )
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidRequest(
                f"output '{name}': binary_data must be true or false, found {describe_json(binary)}"
            )
        outputs.append(RequestedOutput(name, binary))
    return outputs


def _entry_name(entry: Any, kind: str, position: int, seen: Container[str], verb: str) -> str:
    """The name of ``inputs[position]`` / ``outputs[position]``, checked: an object with a
    non-empty string name not ``seen`` before."""
    if not isinstance(entry, dict):
        raise InvalidRequest(
            f"{kind}s[{position}] must be a JSON object, found {describe_json(entry)}"
        )
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{kind}s[{position}] needs a non-empty string 'name'")
    if name in seen:
        raise InvalidRequest(f"{kind} '{name}' is {verb} more than once")
    return name
