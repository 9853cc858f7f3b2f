"""triton_python_backend_utils as repoman provides it: Triton's documented model-side API."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from repoman_python import pb_utils
from repoman_python.pb_utils import (
    InferenceRequest,
    InferenceResponse,
    Tensor,
    TritonError,
    TritonModelException,
)

CONFIG = {
    "input": [{"name": "A", "data_type": "TYPE_FP32", "dims": [2]}],
    "output": [{"name": "B", "data_type": "TYPE_STRING", "dims": [1]}],
}


def test_tensor_wraps_a_numpy_array():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = Tensor("X", array)
    assert tensor.name() == "X" and tensor.as_numpy() is array and tensor.is_cpu()
    assert tensor.shape() == [2, 3] and tensor.triton_dtype() == "TYPE_FP32"
    with pytest.raises(TritonModelException, match="takes a numpy array, got list"):
        Tensor("X", [1, 2])


def test_dlpack_round_trip_for_capsules_and_dlpack_objects():
    array = np.arange(4, dtype=np.int32)
    from_capsule = Tensor.from_dlpack("C", Tensor("X", array).to_dlpack())
    from_object = Tensor.from_dlpack("O", array)
    assert from_capsule.name() == "C" and from_capsule.as_numpy().tolist() == [0, 1, 2, 3]
    assert from_object.as_numpy().dtype == np.int32
    with pytest.raises(TritonModelException, match="has no DLPack form"):
        Tensor("S", np.array([b"a"], dtype=object)).to_dlpack()


def test_a_received_request_and_lookups_by_name():
    a = Tensor("A", np.zeros(2, np.float32))
    request = InferenceRequest._received([a], ["B"], request_id="r1", parameters={"k": 1})
    assert request.inputs() == [a] and request.requested_output_names() == ["B"]
    assert request.request_id() == "r1" and request.correlation_id() == 0
    assert json.loads(request.parameters()) == {"k": 1} and request.flags() == 0
    assert pb_utils.get_input_tensor_by_name(request, "A") is a
    assert pb_utils.get_input_tensor_by_name(request, "Z") is None
    response = InferenceResponse([Tensor("B", np.array([b"x"], dtype=object))])
    assert pb_utils.get_output_tensor_by_name(response, "B").as_numpy().tolist() == [b"x"]
    assert pb_utils.get_output_tensor_by_name(response, "A") is None
    assert not response.has_error() and response.error() is None


def test_building_a_request_to_call_another_model_says_bls_is_not_supported():
    with pytest.raises(TritonModelException, match=r"BLS.*not supported"):
        InferenceRequest(model_name="other", requested_output_names=["Y"], inputs=[])


def test_responses_and_errors():
    error = TritonError("bad input", TritonError.INVALID_ARG)
    response = InferenceResponse(output_tensors=[], error=error)
    assert response.has_error() and response.error().message() == "bad input"
    assert response.error().code() == TritonError.INVALID_ARG
    assert TritonError("x").code() == TritonError.INTERNAL
    codes = ["UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE", "UNSUPPORTED"]
    codes += ["ALREADY_EXISTS", "CANCELLED"]
    assert [getattr(TritonError, c) for c in codes] == list(range(8))
    with pytest.raises(
        TritonModelException, match=r"must be pb_utils\.Tensor objects, got ndarray"
    ):
        InferenceResponse([np.zeros(1)])
    with pytest.raises(TritonModelException, match=r"must be a pb_utils\.TritonError, got str"):
        InferenceResponse(error="oops")


def test_config_lookups():
    assert pb_utils.get_input_config_by_name(CONFIG, "A")["dims"] == [2]
    assert pb_utils.get_output_config_by_name(CONFIG, "B")["data_type"] == "TYPE_STRING"
    assert pb_utils.get_input_config_by_name(CONFIG, "B") is None
    assert pb_utils.get_output_config_by_name({}, "B") is None


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("TYPE_FP32", np.float32),
        ("TYPE_INT64", np.int64),
        ("TYPE_BOOL", np.bool_),
        ("TYPE_STRING", np.object_),
        ("TYPE_FP16", np.float16),
        ("TYPE_UINT8", np.uint8),
    ],
)
def test_type_names_both_ways(name, kind):
    assert pb_utils.triton_string_to_numpy(name) is kind
    assert pb_utils.numpy_to_triton_string(kind) == name


def test_unknown_type_names_are_refused():
    assert pb_utils.numpy_to_triton_string(np.bytes_) == "TYPE_STRING"
    with pytest.raises(TritonModelException, match="unknown Triton data type 'TYPE_X'"):
        pb_utils.triton_string_to_numpy("TYPE_X")
    with pytest.raises(TritonModelException, match="no Triton data type for numpy complex64"):
        pb_utils.numpy_to_triton_string(np.complex64)


def test_auto_complete_config_object():
    config = pb_utils.ModelConfig({})
    config.set_max_batch_size(8)
    config.set_dynamic_batching()
    config.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [2]})
    config.add_input({"name": "A", "data_type": "TYPE_FP32"})  # the same again: no change
    config.add_output({"name": "B", "data_type": "TYPE_STRING", "dims": [1]})
    config.set_model_transaction_policy({"decoupled": False})
    assert config.as_dict() == dict(
        CONFIG,
        max_batch_size=8,
        dynamic_batching={},
        model_transaction_policy={"decoupled": False},
    )
    assert config.max_batch_size() == 8
    with pytest.raises(TritonModelException, match="'A' is already in the config"):
        config.add_input({"name": "A", "data_type": "TYPE_INT32"})
    with pytest.raises(TritonModelException, match="integer >= 0"):
        config.set_max_batch_size(-1)


def test_logger_writes_to_the_models_logger(caplog):
    caplog.set_level(logging.DEBUG)
    with pb_utils._logging_as("repoman.models.m"):
        pb_utils.Logger.log_info("hello")
        pb_utils.Logger.log_warn("careful")
        pb_utils.Logger.log_error("broken")
        pb_utils.Logger.log_verbose("details")
    pb_utils.Logger.log_info("outside")
    assert [(r.name, r.levelname, r.message) for r in caplog.records] == [
        ("repoman.models.m", "INFO", "hello"),
        ("repoman.models.m", "WARNING", "careful"),
        ("repoman.models.m", "ERROR", "broken"),
        ("repoman.models.m", "DEBUG", "details"),
        ("repoman.triton_python_backend_utils", "INFO", "outside"),
    ]


def test_sequence_flags():
    assert pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START == 1
    assert pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END == 2
