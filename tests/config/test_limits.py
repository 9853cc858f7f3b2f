"""Upper limits on config values: each refused value names its field and the limit."""

from __future__ import annotations

import json

import pytest

from repoman.config import parse_model_config
from repoman.errors import ConfigError
from tests.config.conftest import IssuesOf

X = 'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
Y = 'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'


def config(extra: str = "", *, batch: int = 8, inputs: str = X) -> str:
    return f'name: "m"\nmax_batch_size: {batch}\n{inputs}{Y}{extra}\n'


def warmup(dims: str, batch: int = 1, data_type: str = "TYPE_FP32", name: str = "x") -> str:
    return (
        f'model_warmup [ {{ name: "w" batch_size: {batch} inputs {{ key: "{name}" value {{ '
        f"data_type: {data_type} dims: [ {dims} ] zero_data: true }} }} }} ]"
    )


RANK_17 = ", ".join(["1"] * 17)
TOO_BIG = [
    ("max_batch_size", config(batch=2**40), "max_batch_size", "<= 1048576, found 1099511627776"),
    ("queue_delay", config(f"dynamic_batching {{ max_queue_delay_microseconds: {2**63 - 1} }}"),
     "dynamic_batching.max_queue_delay_microseconds", "<= 10000000, found 9223372036854775807"),
    ("queue_timeout",
     config("dynamic_batching { default_queue_policy { default_timeout_microseconds: "
            f"{2**63 - 1} }} }}"),
     "dynamic_batching.default_queue_policy.default_timeout_microseconds", "<= 3600000000"),
    ("priority_levels", config("dynamic_batching { priority_levels: 1000000000 }"),
     "dynamic_batching.priority_levels", "<= 256, found 1000000000"),
    ("default_level", config("dynamic_batching { default_priority_level: 1000000000 }"),
     "dynamic_batching.default_priority_level", "<= 256, found 1000000000"),
    ("preferred", config("dynamic_batching { preferred_batch_size: [ 2097152 ] }"),
     "dynamic_batching.preferred_batch_size[0]", "<= 1048576, found 2097152"),
    ("allowed", config("dynamic_batching { allowed_batch_sizes: [ 2097152 ] }"),
     "dynamic_batching.allowed_batch_sizes[0]", "<= 1048576, found 2097152"),
    ("max_queue_size",
     config(f"dynamic_batching {{ default_queue_policy {{ max_queue_size: {2**40} }} }}"),
     "dynamic_batching.default_queue_policy.max_queue_size", "<= 4294967295"),
    ("instance_count", config("instance_group { count: 1000000 }"), "instance_group[0].count",
     "<= 64, found 1000000"),
    ("num_versions", config(f"version_policy {{ latest {{ num_versions: {2**40} }} }}"),
     "version_policy.latest.num_versions", "<= 4294967295"),
    ("dims_value", config(inputs=f'input [ {{ name: "x" data_type: TYPE_FP32 dims: [ {2**63} ] }} ]\n'),
     "input[0].dims[0]", "<= 9223372036854775807"),
    ("dims_rank", config(inputs=f'input [ {{ name: "x" data_type: TYPE_FP32 dims: [ {RANK_17} ] }} ]\n'),
     "input[0].dims", "at most 16 entries in input[0].dims, found 17"),
    ("reshape_rank",
     config(inputs=f'input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 1 ] reshape {{ shape: [ {RANK_17} ] }} }} ]\n'),
     "input[0].reshape.shape", "at most 16 entries"),
    ("warmup_rank", config(warmup(RANK_17)), "model_warmup[0].inputs[x].dims", "at most 16"),
    ("warmup_samples", config("model_warmup [ " + ", ".join(
        ['{ name: "w" batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP32 dims: [ 4 ] '
         "zero_data: true } } }"] * 65) + " ]"),
     "model_warmup", "at most 64 entries in model_warmup, found 65"),
    ("rate_limiter", config(f"instance_group {{ rate_limiter {{ priority: {2**40} }} }}"),
     "instance_group[0].rate_limiter.priority", "<= 4294967295"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "field", "message"), [case[1:] for case in TOO_BIG], ids=[c[0] for c in TOO_BIG]
)
def test_values_over_the_limit_are_refused(
    issues_of: IssuesOf, text: str, field: str, message: str
) -> None:
    issues = issues_of(text)
    matching = [issue for issue in issues if issue.field == field]
    assert matching, issues
    assert "expected" in matching[0].message and message in matching[0].message, matching[0]
    assert matching[0].line is not None


def test_instances_are_limited_across_groups(issues_of: IssuesOf) -> None:
    (issue,) = issues_of(config("instance_group [ { count: 40 }, { count: 40 } ]"))
    assert issue.field == "instance_group"
    assert issue.message == "expected at most 64 instances in all instance groups, found 80"


@pytest.mark.parametrize(
    ("sample", "found"),
    [
        (warmup("4194304, 5", batch=1), "83886080 bytes"),  # 4 Mi x 5 FP32
        (warmup("1048576, 4", batch=8), "134217728 bytes"),  # the batch rows count
        (warmup("16777217", data_type="TYPE_STRING"), "134217736 bytes"),  # 8 bytes per entry
    ],
    ids=["elements", "batch", "bytes-entries"],
)
def test_a_warmup_sample_is_at_most_64_mib(issues_of: IssuesOf, sample: str, found: str) -> None:
    inputs = X.replace("dims: [ 4 ]", "dims: [ -1, -1 ]")
    issues = issues_of(config(sample, inputs=inputs))
    (issue,) = [issue for issue in issues if issue.field == "model_warmup[0]"]
    assert issue.message == (
        f"expected a warm-up sample of at most 67108864 bytes (64 MiB) in all, found {found}"
    )


def test_values_at_the_limits_pass() -> None:
    text = config(
        "dynamic_batching { max_queue_delay_microseconds: 10000000 priority_levels: 256 "
        "default_priority_level: 256 }\ninstance_group { count: 64 }\n"
        + warmup(", ".join(["1"] * 15) + ", 2097152", batch=8),
        batch=1048576,
        inputs=f'input [ {{ name: "x" data_type: TYPE_FP32 dims: [ {", ".join(["-1"] * 16)} ] }} ]\n',
    )
    parsed = parse_model_config(text, filename="config.pbtxt", fmt="pbtxt", model_name="m")
    assert parsed.max_batch_size == 1048576 and parsed.instance_count == 64


def test_a_config_with_thousands_of_issues_reports_the_first_hundred() -> None:
    config = {
        "max_batch_size": 0,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [2**63] * 5_000}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [-5]} for _ in range(500)],
    }
    with pytest.raises(ConfigError) as info:
        parse_model_config(json.dumps(config), filename="<load>", fmt="json", model_name="m")
    issues = info.value.issues
    assert len(issues) == 101 and len(str(info.value)) < 20_000
    assert issues[-1].message == "more issues not shown: only the first 100 are reported"
