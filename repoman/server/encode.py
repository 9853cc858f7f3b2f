"""KServe v2 inference response bodies over HTTP: InferResponse -> bytes; errors as JSON."""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np

from repoman.errors import BackendError, InvalidRequest
from repoman.inference import InferRequest, InferResponse
from repoman.server.codec_tensors import (
    encode_binary_tensor,
    encode_json_tensor,
    json_dumps,
)
from repoman.types import DataType

__all__ = ["encode_error", "encode_infer_response", "output_tensor"]


def encode_infer_response(
    response: InferResponse, request: InferRequest
) -> tuple[bytes, int | None]:
    """Encode a v2 ``/infer`` response body for ``request``.

    Returns the body and the length of its JSON header, to send as
    ``Inference-Header-Content-Length``; None when no output is binary (the body is all JSON).
    Outputs are the ones requested, in request order (all of ``response.outputs``, in their
    order, when ``request.outputs`` is None). An output is binary when its RequestedOutput says
    so, or says nothing and the request parameter ``binary_data_output`` is true; a BYTES
    output that is not UTF-8 text goes binary either way (JSON strings cannot carry it).
    Raises InvalidRequest for a requested output the model did not produce, and BackendError
    for an output whose numpy dtype has no v2 datatype.
    """
    default_binary = request.parameters.get("binary_data_output") is True
    if request.outputs is None:
        wanted = [(name, default_binary) for name in response.outputs]
    else:
        wanted = [
            (output.name, default_binary if output.binary is None else output.binary)
            for output in request.outputs
        ]
    described: list[bytes] = []
    binary_parts: list[bytes | memoryview] = []
    for name, binary in wanted:
        array, datatype = output_tensor(response, name)
        head = _output_head(name, datatype) + json_dumps(array.shape)
        if not binary:
            try:
                described.append(head + b',"data":' + encode_json_tensor(array, datatype) + b"}")
                continue
            except UnicodeDecodeError:
                pass  # a non-UTF-8 BYTES output: send it binary
        raw = encode_binary_tensor(array, datatype)
        described.append(head + b',"parameters":{"binary_data_size":%d}}' % len(raw))
        binary_parts.append(raw)

    document: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": str(response.model_version),  # Triton sends the version as a string
    }
    response_id = response.id if response.id is not None else request.id
    if response_id is not None:
        document["id"] = response_id
    if response.parameters:
        document["parameters"] = response.parameters
    # The outputs are spliced in as bytes so that big arrays never pass through a dict.
    header = json_dumps(document)[:-1] + b',"outputs":[' + b",".join(described) + b"]}"
    if not binary_parts:
        return header, None
    return b"".join([header, *binary_parts]), len(header)


@functools.lru_cache(maxsize=1024)
def _output_head(name: str, datatype: DataType) -> bytes:
    """``{"name":...,"datatype":...,"shape":`` -- the same few outputs on every response."""
    return b'{"name":%s,"datatype":"%s","shape":' % (json_dumps(name), datatype.value.encode())


def output_tensor(response: InferResponse, name: str) -> tuple[np.ndarray, DataType]:
    try:
        array = np.asarray(response.outputs[name])
    except KeyError:
        produced = ", ".join(f"'{n}'" for n in response.outputs) or "none"
        raise InvalidRequest(
            f"output '{name}' was requested but model '{response.model_name}' "
            f"did not produce it (outputs: {produced})"
        ) from None
    try:
        return array, DataType.from_numpy(array.dtype)
    except KeyError:
        raise BackendError(
            f"model '{response.model_name}' returned output '{name}' with numpy dtype "
            f"{array.dtype}, which has no KServe v2 datatype"
        ) from None


def encode_error(message: str) -> bytes:
    """The v2 error body: ``{"error": message}``.

    NOTE: the stdlib encoder, not orjson: a message may quote client text holding a lone
    surrogate, which orjson refuses and which must not turn an error into a 500.
    """
    return json.dumps({"error": message}).encode()
