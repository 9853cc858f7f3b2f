"""Config fields that name files: a relative name inside its folder, never any file elsewhere."""

from __future__ import annotations

import json

import pytest

from repoman.config import parse_model_config
from tests.config.conftest import IssuesOf

BASE = """name: "m"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""


def warmup_file(name: str) -> str:
    return (
        'model_warmup [ { name: "w" batch_size: 1 inputs { key: "x" value { '
        f'data_type: TYPE_FP32 dims: [ 4 ] input_data_file: "{name}" }} }} }} ]'
    )


BAD_NAMES = [
    "/anywhere/evil.py",
    "../../evil.py",
    "..",
    "sub/../../evil.py",
    "./model.py",
    "sub//model.py",
    "sub/",
    "sub\\\\model.py",
    "model\\x00.py",
    "a" * 300,
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_default_model_filename_must_stay_in_the_version_folder(
    issues_of: IssuesOf, name: str
) -> None:
    issues = issues_of(BASE + f'backend: "python"\ndefault_model_filename: "{name}"\n')
    (issue,) = issues
    assert issue.field == "default_model_filename"
    assert issue.line == 6 and "expected" in issue.message and "found" in issue.message
    assert "inside the version folder" in issue.hint


@pytest.mark.parametrize("name", BAD_NAMES[:4])
def test_a_json_load_override_is_checked_the_same_way(name: str) -> None:
    text = json.dumps(
        {
            "backend": "python",
            "max_batch_size": 0,
            "default_model_filename": name,
            "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
            "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}],
        }
    )
    with pytest.raises(Exception, match="default_model_filename: expected"):
        parse_model_config(text, filename="<load request config>", fmt="yaml", model_name="m")


@pytest.mark.parametrize("name", ["model.onnx", "model.savedmodel", "onnx/model.onnx", "a..b"])
def test_relative_names_inside_the_folder_pass(name: str) -> None:
    text = BASE + f'default_model_filename: "{name}"\n'
    config = parse_model_config(text, filename="config.pbtxt", fmt="pbtxt", model_name="m")
    assert config.default_model_filename == name


def test_an_empty_default_model_filename_means_the_backends_default() -> None:
    text = BASE + 'default_model_filename: ""\n'
    config = parse_model_config(text, filename="config.pbtxt", fmt="pbtxt", model_name="m")
    assert config.default_model_filename == ""


@pytest.mark.parametrize("name", ["/etc/passwd", "../../1/model.onnx", ""])
def test_a_warmup_input_data_file_must_stay_in_warmup(issues_of: IssuesOf, name: str) -> None:
    (issue,) = issues_of(BASE + warmup_file(name))
    assert issue.field == "model_warmup[0].inputs[x].input_data_file"
    assert "warmup/" in issue.hint


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('cc_model_filenames { key: "7.5" value: "/tmp/x.plan" }', "cc_model_filenames[7.5]"),
        (
            'output [ { name: "z" data_type: TYPE_FP32 dims: [ 4 ] '
            'label_filename: "../../labels.txt" } ]',
            "output[1].label_filename",
        ),
    ],
    ids=["cc_model_filenames", "label_filename"],
)
def test_ignored_fields_that_name_files_are_checked_too(
    issues_of: IssuesOf, extra: str, field: str
) -> None:
    issues = issues_of(BASE + extra)
    assert [issue.field for issue in issues] == [field]
