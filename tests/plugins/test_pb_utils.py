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


def test_a_request_to_call_a_model_runs_only_within_execute_and_never_decoupled():
    request = InferenceRequest(
        model_name="other", requested_output_names=["Y"], inputs=[], timeout=5
    )
    assert (request.model_name(), request.model_version(), request.timeout()) == ("other", -1, 5)
    with pytest.raises(TritonModelException, match=r"only from within execute"):
        request.exec()
    with pytest.raises(TritonModelException, match=r"decoupled models is not supported"):
        request.exec(decoupled=True)
    with pytest.raises(TritonModelException, match=r"pb_utils.Tensor"):
        InferenceRequest("other", ["Y"], [np.zeros(2)])


def test_responses_and_errors():
    error = TritonError("bad input", TritonError.INVALID_ARG)
    response = InferenceResponse(output_tensors=[], error=error)
    assert response.has_error() and response.error().message() == "bad input"
    assert response.error().code() == TritonError.INVALID_ARG
    assert TritonError("x").code() == TritonError.INTERNAL
    codes = ["UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE", "UNSUPPORTED"]
    codes += ["ALREADY_EXISTS", "CANCELLED"]
    assert [getattr(TritonError, c) for c in codes] == list(range(8))
    for wrong in (8, -1, "INVALID_ARG", True, None):
        with pytest.raises(TypeError, match=r"TritonError code must be one of"):
            TritonError("x", wrong)
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


# ---- custom metrics ------------------------------------------------------------------


@pytest.fixture
def owner():
    """Families made within a model's scope belong to it; dropped afterwards."""
    me = object()
    with pb_utils._logging_as("test", me):
        yield me
    pb_utils._forget_metrics(me)


def test_a_counter_counts_and_refuses_going_down(owner):
    family = pb_utils.MetricFamily("reqs", "Requests", pb_utils.MetricFamily.COUNTER)
    metric = family.Metric(labels={"route": "a"})
    metric.increment(2)
    metric.increment(0.5)
    assert metric.value() == 2.5
    with pytest.raises(pb_utils.TritonModelException, match="only goes up"):
        metric.increment(-1)
    with pytest.raises(pb_utils.TritonModelException, match="only a gauge"):
        metric.set(3)
    with pytest.raises(pb_utils.TritonModelException, match="only a histogram"):
        metric.observe(1)
    assert family.Metric(labels={"route": "a"}) is metric  # same labels, same metric
    assert pb_utils._metrics_snapshot(owner) == [
        ("reqs", "Requests", "counter", [((("route", "a"),), 2.5)])
    ]


def test_a_gauge_sets_and_moves_both_ways(owner):
    metric = pb_utils.MetricFamily("depth", "Depth", pb_utils.MetricFamily.GAUGE).Metric()
    metric.set(5)
    metric.increment(-2)
    assert metric.value() == 3.0


def test_a_histogram_observes_into_buckets(owner):
    family = pb_utils.MetricFamily("lat", "Latency", pb_utils.MetricFamily.HISTOGRAM)
    metric = family.Metric(labels={"k": "v"}, buckets=[1, 10])
    for value in (0.5, 1, 5, 50):
        metric.observe(value)
    [(_, _, kind, [(labels, payload)])] = pb_utils._metrics_snapshot(owner)
    assert (kind, labels, payload) == ("histogram", (("k", "v"),), ((1.0, 10.0), (2, 1, 1), 56.5))
    with pytest.raises(pb_utils.TritonModelException, match="use observe"):
        metric.increment(1)
    with pytest.raises(pb_utils.TritonModelException, match="value"):
        metric.value()
    with pytest.raises(pb_utils.TritonModelException, match="needs buckets"):
        family.Metric(labels={"k": "w"})
    with pytest.raises(pb_utils.TritonModelException, match="increasing"):
        family.Metric(labels={"k": "w"}, buckets=[5, 1])


def test_metric_mistakes_are_clear_errors(owner):
    with pytest.raises(pb_utils.TritonModelException, match="metric name"):
        pb_utils.MetricFamily("bad name", "", pb_utils.MetricFamily.COUNTER)
    with pytest.raises(pb_utils.TritonModelException, match="kind"):
        pb_utils.MetricFamily("ok", "", 7)
    counter = pb_utils.MetricFamily("ok", "", pb_utils.MetricFamily.COUNTER)
    with pytest.raises(pb_utils.TritonModelException, match="already exists as a counter"):
        pb_utils.MetricFamily("ok", "", pb_utils.MetricFamily.GAUGE)
    with pytest.raises(pb_utils.TritonModelException, match="reserved"):
        counter.Metric(labels={"model": "x"})
    with pytest.raises(pb_utils.TritonModelException, match="must be a string"):
        counter.Metric(labels={"n": 1})
    with pytest.raises(pb_utils.TritonModelException, match="only for a histogram"):
        counter.Metric(buckets=[1])
    with pytest.raises(pb_utils.TritonModelException, match="expected a number"):
        counter.Metric().increment("1")


def test_each_owner_sees_only_its_own_families(owner):
    pb_utils.MetricFamily("mine", "", pb_utils.MetricFamily.COUNTER).Metric().increment(1)
    other = object()
    with pb_utils._logging_as("other", other):
        pb_utils.MetricFamily("mine", "", pb_utils.MetricFamily.COUNTER).Metric().increment(7)
    assert [m[3][0][1] for m in pb_utils._metrics_snapshot(owner)] == [1.0]
    assert [m[3][0][1] for m in pb_utils._metrics_snapshot(other)] == [7.0]
    pb_utils._forget_metrics(other)
    assert pb_utils._metrics_snapshot(other) == []
