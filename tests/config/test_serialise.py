"""Writing the normalised dict back out: pbtxt and YAML both parse back to the same dict."""

from __future__ import annotations

import pytest

from repoman.config import config_to_pbtxt, config_to_yaml, parse_model_config

FULL = r"""
name: "full"
platform: "onnxruntime_onnx"
max_batch_size: 8
default_model_filename: "model.onnx"
input [
  { name: "x", data_type: TYPE_FP32, dims: [ 2, -1 ], format: FORMAT_NCHW, optional: true },
  { name: "s", data_type: TYPE_STRING, dims: [ 1 ], reshape { shape: [ ] } }
]
output [ { name: "y", data_type: TYPE_INT64, dims: [ 6 ], reshape { shape: [ 2, 3 ] } } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 250
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy { timeout_action: DELAY, default_timeout_microseconds: 10 }
  priority_queue_policy { key: 1 value { max_queue_size: 4 allow_timeout_override: true } }
  allowed_batch_sizes: [ 2, 4, 8 ]
}
instance_group [ { count: 2 kind: KIND_CPU }, { name: "spare" } ]
version_policy { specific { versions: [ 1, 4 ] } }
parameters { key: "quote\"d\n" value { string_value: "tab\there \\ back" } }
parameters { key: "empty" value { } }
optimization {
  priority: PRIORITY_MAX
  execution_accelerators {
    cpu_execution_accelerator [ { name: "openvino" parameters { key: "p" value: "v" } } ]
  }
}
model_warmup [
  {
    name: "w"
    batch_size: 4
    count: 2
    inputs { key: "x" value { data_type: TYPE_FP32 dims: [ 2, 3 ] random_data: true } }
    inputs { key: "s" value { data_type: TYPE_STRING dims: [ 1 ] input_data_file: "s.bin" } }
  }
]
"""


@pytest.fixture
def full() -> dict[str, object]:
    return parse_model_config(FULL, filename="config.pbtxt", fmt="pbtxt").normalised


def test_pbtxt_round_trip_gives_the_same_dict(full: dict[str, object]) -> None:
    text = config_to_pbtxt(full)
    again = parse_model_config(text, filename="again.pbtxt", fmt="pbtxt")
    assert again.normalised == full
    assert "data_type: TYPE_FP32" in text  # enums are written bare, as protobuf expects
    assert 'name: "full"' in text


def test_yaml_round_trip_gives_the_same_dict(full: dict[str, object]) -> None:
    text = config_to_yaml(full)
    again = parse_model_config(text, filename="again.yaml", fmt="yaml")
    assert again.normalised == full


def test_pbtxt_output_is_stable(full: dict[str, object]) -> None:
    text = config_to_pbtxt(full)
    again = parse_model_config(text, filename="again.pbtxt", fmt="pbtxt").normalised
    assert config_to_pbtxt(again) == text


def test_pbtxt_writes_maps_as_key_value_entries() -> None:
    text = config_to_pbtxt({"parameters": {"k": {"string_value": "v"}}})
    assert text == 'parameters {\n  key: "k"\n  value {\n    string_value: "v"\n  }\n}\n'


def test_pbtxt_writes_integer_map_keys_bare() -> None:
    text = config_to_pbtxt({"dynamic_batching": {"priority_queue_policy": {"2": {}}}})
    assert "key: 2\n" in text
