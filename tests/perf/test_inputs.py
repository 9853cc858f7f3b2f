"""Request bodies: shapes, perf_analyzer data files, and both tensor encodings, decoded back."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import orjson
import pytest
from yarl import URL

from repoman.perf.inputs import HEADER_LENGTH, build_bodies
from repoman.perf.model import InputSpec, Target
from repoman.perf.options import UsageError, concurrency_list, concurrency_range, shape_option
from repoman.types import DataType

URL_ = URL("http://127.0.0.1:1")


def target(*inputs: InputSpec, max_batch_size: int = 8) -> Target:
    return Target(URL_, "m", "", URL_ / "infer", max_batch_size, tuple(inputs))


def decode_binary(data: bytes, headers) -> tuple[dict, dict[str, bytes]]:
    length = int(headers[HEADER_LENGTH])
    header, rest = orjson.loads(data[:length]), data[length:]
    raw = {}
    for tensor in header["inputs"]:
        size = tensor["parameters"]["binary_data_size"]
        raw[tensor["name"]], rest = rest[:size], rest[size:]
    assert rest == b""
    return header, raw


def test_random_binary_body_has_batch_shape_and_asks_for_binary_outputs():
    spec = InputSpec("x", DataType.FP32, (3, -1))
    [body] = build_bodies(target(spec), "random", 4, {"x": [3, 2]}, binary=True)
    header, raw = decode_binary(body.data, body.headers)
    assert header["parameters"] == {"binary_data_output": True}
    assert header["inputs"][0]["shape"] == [4, 3, 2] and header["inputs"][0]["datatype"] == "FP32"
    values = np.frombuffer(raw["x"], "<f4")
    assert values.size == 24 and np.all((values >= 0) & (values < 1))


def test_variable_dims_without_shape_are_a_usage_error():
    with pytest.raises(UsageError, match="--shape x:3,N"):
        build_bodies(target(InputSpec("x", DataType.FP32, (3, -1))), "zero", 1, {}, binary=True)


def test_unbatched_models_take_no_batch_size():
    spec = InputSpec("x", DataType.INT64, (2,))
    [body] = build_bodies(target(spec, max_batch_size=0), "zero", 1, {}, binary=False)
    assert json.loads(body.data)["inputs"][0] == {
        "name": "x",
        "shape": [2],
        "datatype": "INT64",
        "data": [0, 0],
    }
    with pytest.raises(UsageError, match="does not batch"):
        build_bodies(target(spec, max_batch_size=0), "zero", 2, {}, binary=False)


def test_data_file_rows_round_robin_over_requests(tmp_path):
    spec_a = InputSpec("a", DataType.FP32, (2,))
    spec_s = InputSpec("s", DataType.BYTES, (1,))
    rows = [
        {"a": [0, 1], "s": ["zero"]},
        {"a": {"content": [[2, 3]], "shape": [2]}, "s": {"content": ["one"], "shape": [1]}},
        {"a": {"b64": base64.b64encode(np.array([4, 5], "<f4").tobytes()).decode()}, "s": ["two"]},
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"data": rows}))
    bodies = build_bodies(target(spec_a, spec_s), str(path), 2, {}, binary=True)
    assert len(bodies) == 3  # 3 rows, 2 a request: rows 0-1, 2-0, 1-2, then it repeats
    firsts = []
    for body in bodies:
        header, raw = decode_binary(body.data, body.headers)
        assert [t["shape"] for t in header["inputs"]] == [[2, 2], [2, 1]]
        firsts.append(np.frombuffer(raw["a"], "<f4")[0])
        (size,) = struct.unpack("<I", raw["s"][:4])
        assert raw["s"][4 : 4 + size] in (b"zero", b"one", b"two")
    assert firsts == [0, 4, 2]
    [as_json] = build_bodies(target(spec_a, spec_s), str(path), 3, {}, binary=False)
    assert json.loads(as_json.data)["inputs"][1]["data"] == ["zero", "one", "two"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"data": []}, "non-empty"),
        ({"rows": []}, "not a perf_analyzer data file"),
        ({"data": [{"b": [1, 2]}]}, "no data for input 'a'"),
        ({"data": [{"a": [1, 2, 3]}]}, "3 elements"),
        ({"data": [[{"a": [1, 2]}]]}, "sequence data"),
        ({"data": [{"a": ["x", "y"]}]}, "not FP32 data"),
    ],
)
def test_bad_data_files_say_what_is_wrong(tmp_path, document, message):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(document))
    with pytest.raises(UsageError, match=message):
        build_bodies(target(InputSpec("a", DataType.FP32, (2,))), str(path), 1, {}, binary=True)


def test_one_open_dimension_is_taken_from_the_data(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"data": [{"a": [1, 2, 3, 4, 5, 6]}]}))
    [body] = build_bodies(target(InputSpec("a", DataType.INT32, (-1, 2))), str(path), 1, {}, True)
    header, _ = decode_binary(body.data, body.headers)
    assert header["inputs"][0]["shape"] == [1, 3, 2]


@pytest.mark.parametrize(
    ("text", "levels"),
    [
        ("4", [4]),
        ("1:4", [1, 2, 3, 4]),
        ("1:16:4", [1, 5, 9, 13]),
        ("1:64:x2", [1, 2, 4, 8, 16, 32, 64]),
    ],
)
def test_concurrency_range(text, levels):
    assert concurrency_range(text) == levels


def test_concurrency_list_and_shape():
    assert concurrency_list("1,8,32") == [1, 8, 32]
    assert shape_option("ns:input:3,4") == ("ns:input", [3, 4])
