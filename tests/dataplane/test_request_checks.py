"""ExpectedInputs: what a config rules out is refused from a declared name, datatype and shape;
inputs it checked are not checked again against the same config."""

from __future__ import annotations

import numpy as np
import pytest

from repoman.config.model import ModelConfig, TensorConfig
from repoman.dataplane.request_checks import ExpectedInputs, check_request
from repoman.errors import InvalidRequest
from repoman.inference import InferRequest
from repoman.types import DataType


def config(max_batch_size: int = 8, dims: tuple[int, ...] = (4,)) -> ModelConfig:
    return ModelConfig(
        name="m",
        platform="",
        backend="fake",
        max_batch_size=max_batch_size,
        inputs=(TensorConfig("a", DataType.FP32, dims), TensorConfig("b", DataType.BYTES, (-1,))),
        outputs=(TensorConfig("y", DataType.FP32, dims),),
    )


@pytest.mark.parametrize(
    ("max_batch_size", "name", "datatype", "shape"),
    [
        (8, "a", DataType.FP32, [1, 4]),
        (8, "a", DataType.FP32, [8, 4]),
        (8, "b", DataType.BYTES, [3, 1000]),
        (0, "a", DataType.FP32, [4]),
    ],
)
def test_what_the_config_takes_passes(max_batch_size, name, datatype, shape) -> None:
    ExpectedInputs(config(max_batch_size)).check_input(name, datatype, shape)


@pytest.mark.parametrize(
    ("max_batch_size", "name", "datatype", "shape", "message"),
    [
        (8, "c", DataType.FP32, [1, 4], "unexpected input 'c' for model 'm' (its inputs: a, b)"),
        (8, "x" * 5000, DataType.FP32, [1, 4], "'xxxxxxxx"),
        (8, "a", DataType.INT64, [1, 4], "expected datatype FP32, found INT64"),
        (8, "a", DataType.FP32, [9, 4], "batch size 9 exceeds the model's max_batch_size 8"),
        (8, "a", DataType.FP32, [2_000_000, 4], "max_batch_size 8"),
        (8, "a", DataType.FP32, [0, 4], "the batch dimension is 0"),
        (8, "a", DataType.FP32, [1, 5], "expected shape [-1, 4], found [1, 5]"),
        (8, "a", DataType.FP32, [4], "expected shape [-1] + [4]"),
        (8, "a", DataType.FP32, [1] * 30, "expected shape [-1] + [4]"),
        (0, "a", DataType.FP32, [1, 4], "expected shape [4], found [1, 4]"),
    ],
)
def test_what_the_config_rules_out_is_refused(max_batch_size, name, datatype, shape, message):
    with pytest.raises(InvalidRequest) as caught:
        ExpectedInputs(config(max_batch_size)).check_input(name, datatype, shape)
    assert message in caught.value.message
    assert len(caught.value.message) < 300


def test_more_inputs_than_the_config_declares_are_refused_by_count() -> None:
    expected = ExpectedInputs(config())
    expected.check_count(2)
    with pytest.raises(
        InvalidRequest, match=r"the request has 3 inputs; model 'm' takes 2 \(a, b\)"
    ):
        expected.check_count(3)


def test_inputs_checked_while_decoding_are_checked_again_only_against_another_config() -> None:
    checked_against = config()
    expected = ExpectedInputs(checked_against)
    expected.check_input("a", DataType.FP32, [2, 4])
    expected.check_input("b", DataType.BYTES, [2, 3])
    request = InferRequest(
        "m",
        inputs={
            "a": np.zeros((2, 4), np.float32),
            "b": np.array([[b"x"] * 3] * 2, dtype=object),
        },
    )
    assert expected.covers(checked_against, 2)
    assert set(check_request(checked_against, request, expected)) == {"a", "b"}
    # NOTE: the version was swapped for one whose config wants 5 columns: a full check.
    swapped = config(dims=(5,))
    assert not expected.covers(swapped, 2)
    with pytest.raises(InvalidRequest, match=r"expected shape \[-1, 5\], found \[2, 4\]"):
        check_request(swapped, request, expected)
    # Only some inputs checked (one still to come): not covered.
    partly = ExpectedInputs(checked_against)
    partly.check_input("a", DataType.FP32, [2, 4])
    assert not partly.covers(checked_against, 2)


def test_inputs_checked_while_decoding_must_still_agree_on_the_batch_size() -> None:
    cfg = config()
    expected = ExpectedInputs(cfg)
    expected.check_input("a", DataType.FP32, [2, 4])
    expected.check_input("b", DataType.BYTES, [3, 1])
    request = InferRequest(
        "m",
        inputs={"a": np.zeros((2, 4), np.float32), "b": np.array([[b"x"]] * 3, dtype=object)},
    )
    with pytest.raises(InvalidRequest, match="disagree on the batch size"):
        check_request(cfg, request, expected)
