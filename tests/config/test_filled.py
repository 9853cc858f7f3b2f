"""What auto-complete filled in, as paths into the normalised config (a pure function)."""

from __future__ import annotations

import pytest

from repoman.config.filled import filled_paths

X = {"name": "x", "data_type": "TYPE_FP32", "dims": [4]}


@pytest.mark.parametrize(
    ("before", "after", "paths"),
    [
        ({"name": "m"}, {"name": "m"}, ()),
        ({}, {"backend": "onnxruntime", "max_batch_size": 8}, ("backend", "max_batch_size")),
        ({"max_batch_size": 8}, {"max_batch_size": 16}, ("max_batch_size",)),
        ({}, {"input": [X]}, ("input",)),
        ({"input": [X]}, {"input": [X, {**X, "name": "y"}]}, ("input.y",)),
        ({"input": [{"name": "x"}]}, {"input": [X]}, ("input.x.data_type", "input.x.dims")),
        ({"output": [X]}, {"output": [X]}, ()),
    ],
)
def test_paths_name_what_was_added_or_changed(before, after, paths):
    assert filled_paths(before, after) == paths


def test_a_config_keeps_what_auto_complete_filled_in(tmp_path):
    from repoman.config import parse_model_config

    def complete(doc):
        return {**doc, "input": [X], "output": [{**X, "name": "out"}]}

    config = parse_model_config(
        'name: "m"\nbackend: "b"\nmax_batch_size: 4\n',
        filename="config.pbtxt",
        fmt="pbtxt",
        model_name="m",
        complete=complete,
    )
    assert config.auto_completed == ("input", "output")
    assert {t.name for t in config.inputs} == {"x"}
