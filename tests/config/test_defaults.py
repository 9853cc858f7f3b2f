"""Defaults filled the way Triton reports them, and the model name checked against its folder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from repoman.config import InstanceGroup, VersionPolicy, parse_model_config
from repoman.errors import ConfigIssue

IssuesOf = Callable[..., list[ConfigIssue]]

TENSORS = """input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""


def parse(text: str, **kwargs: Any) -> Any:
    return parse_model_config(text, filename="config.pbtxt", fmt="pbtxt", **kwargs)


def test_a_minimal_config_gets_triton_defaults() -> None:
    config = parse(TENSORS, model_name="dense", default_platform="onnxruntime_onnx")
    doc = config.normalised
    assert doc["name"] == "dense"
    assert doc["platform"] == "onnxruntime_onnx"
    assert doc["max_batch_size"] == 0
    assert doc["version_policy"] == {"latest": {"num_versions": 1}}
    assert doc["instance_group"] == [{"name": "dense_0", "kind": "KIND_CPU", "count": 1}]
    assert list(doc) == [
        "name",
        "platform",
        "version_policy",
        "max_batch_size",
        "input",
        "output",
        "instance_group",
    ]
    assert config.version_policy == VersionPolicy(kind="latest", num_versions=1)
    assert config.instance_groups == (InstanceGroup(name="dense_0"),)


@pytest.mark.parametrize(
    ("extra", "platform", "backend"),
    [
        ("", "onnxruntime_onnx", ""),
        ('platform: "tensorflow_savedmodel"', "tensorflow_savedmodel", ""),
        ('backend: "python"', "", "python"),
    ],
)
def test_default_platform_applies_only_without_platform_or_backend(
    extra: str, platform: str, backend: str
) -> None:
    config = parse(TENSORS + extra, model_name="m", default_platform="onnxruntime_onnx")
    assert (config.platform, config.backend) == (platform, backend)


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ("instance_group [ { count: 3 }, { } ]", [("m_0", "KIND_CPU", 3), ("m_1", "KIND_CPU", 1)]),
        ('instance_group { name: "g" kind: KIND_MODEL }', [("g", "KIND_MODEL", 1)]),
        ("instance_group { kind: KIND_AUTO }", [("m_0", "KIND_CPU", 1)]),
        ("instance_group { gpus: [ 0 ] }", [("m_0", "KIND_GPU", 1)]),
        ("instance_group [ ]", [("m_0", "KIND_CPU", 1)]),
    ],
)
def test_instance_group_defaults(
    gpu_count: Callable[[int], None], groups: str, expected: list[tuple[str, str, int]]
) -> None:
    gpu_count(1)
    config = parse(TENSORS + groups, model_name="m")
    assert [(g.name, g.kind, g.count) for g in config.instance_groups] == expected


def test_latest_without_num_versions_means_one() -> None:
    config = parse(TENSORS + "version_policy { latest { } }", model_name="m")
    assert config.normalised["version_policy"] == {"latest": {"num_versions": 1}}


def test_name_must_match_the_folder(issues_of: IssuesOf) -> None:
    [issue] = issues_of('name: "other"\n' + TENSORS, model_name="m")
    assert (issue.field, issue.line, issue.column) == ("name", 1, 7)
    assert issue.message == "expected the model folder's name 'm', found 'other'"


def test_name_is_required_without_a_folder(issues_of: IssuesOf) -> None:
    [issue] = issues_of(TENSORS, model_name=None)
    assert issue.field == "name"
    assert "expected a `name` field" in issue.message


def test_name_given_without_a_folder_is_kept() -> None:
    assert parse('name: "solo"\n' + TENSORS).name == "solo"


def test_an_empty_name_is_an_error(issues_of: IssuesOf) -> None:
    [issue] = issues_of('name: ""\n' + TENSORS, model_name=None)
    assert (issue.field, issue.line, issue.column) == ("name", 1, 7)
    assert issue.message == "expected a model name, found ''"
