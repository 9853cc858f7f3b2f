"""Triton's semantic checks: each bad config names the field, the values and where they are."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from repoman.config import parse_model_config, triton_rules
from repoman.errors import ConfigIssue

IssuesOf = Callable[..., list[ConfigIssue]]

INPUT = 'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]'
OUTPUT = 'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]'


def config(extra: str = "", *, batch: int = 8, inputs: str = INPUT, outputs: str = OUTPUT) -> str:
    return f'name: "m"\nmax_batch_size: {batch}\n{inputs}\n{outputs}\n{extra}\n'


def tensor(dims: str, reshape: str | None = None, name: str = "x", kind: str = "input") -> str:
    block = f'{kind} [ {{ name: "{name}" data_type: TYPE_FP32 dims: [ {dims} ]'
    if reshape is not None:
        block += f" reshape {{ shape: [ {reshape} ] }}"
    return block + " } ]"


def warmup(body: str) -> str:
    return f'model_warmup [ {{ name: "w" batch_size: 1 {body} }} ]'


ZERO_X = 'inputs { key: "x" value { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } }'

BAD = [
    ("negative_batch", config(batch=-1), "max_batch_size",
     r">= 0 \(0 turns batching off\), found -1"),
    ("no_input", config(inputs=""), "input", r"expected at least one input, found none"),
    ("no_output", config(outputs=""), "output", r"expected at least one output, found none"),
    ("empty_dims", config(inputs=tensor("")), "input[0].dims",
     r"at least one dimension for input 'x', found dims \[\]"),
    ("dims_minus_2", config(inputs=tensor("2, -2")), "input[0].dims[1]",
     r"dimension 1 of input 'x' to be >= 1, or -1 .*found -2"),
    ("output_dims_0", config(outputs=tensor("0", kind="output", name="y")), "output[0].dims[0]",
     r"dimension 0 of output 'y' .*found 0"),
    ("reshape_minus_3", config(inputs=tensor("4", "-3")), "input[0].reshape.shape[0]",
     r"reshape dimension 0 of input 'x' to be >= 1, or -1 .*found -3"),
    ("reshape_count", config(inputs=tensor("4", "3")), "input[0].reshape",
     r"dims \[4\] and reshape \[3\] of input 'x' .*same element count, found 4 and 3"),
    ("reshape_scalar_count", config(inputs=tensor("2", "")), "input[0].reshape",
     r"same element count, found 2 and 1"),
    ("reshape_scalar_nobatch", config(inputs=tensor("1", ""), batch=0), "input[0].reshape",
     r"non-empty reshape for input 'x', found reshape \[\]"),
    ("reshape_variable_count", config(inputs=tensor("2, -1", "-1, -1")), "input[0].reshape",
     r"same number of variable-size dimensions \(-1\), found 1 and 2"),
    ("reshape_variable_trunks", config(inputs=tensor("6, -1", "2, -1, 3")), "input[0].reshape",
     r"between variable-size dimensions, found \[6, 1\] and \[2, 3\]"),
    ("duplicate_input", config(inputs=INPUT + "\n" + INPUT), "input[1].name",
     r"unique input names, found 'x' again \(first as input\[0\]\)"),
    ("duplicate_output", config(outputs=OUTPUT + "\n" + OUTPUT), "output[1].name",
     r"unique output names, found 'y' again"),
    ("empty_input_name", config(inputs=tensor("4", name="")), "input[0].name",
     r"non-empty input name, found ''"),
    ("preferred_0", config("dynamic_batching { preferred_batch_size: [ 0 ] }"),
     "dynamic_batching.preferred_batch_size[0]", r"preferred batch size >= 1, found 0"),
    ("preferred_over_max", config("dynamic_batching { preferred_batch_size: [ 4, 16 ] }"),
     "dynamic_batching.preferred_batch_size[1]", r"<= max_batch_size 8, found 16"),
    ("batching_without_batch", config("dynamic_batching { }", batch=0), "dynamic_batching",
     r"max_batch_size > 0 for dynamic_batching .*found max_batch_size 0"),
    ("negative_delay", config("dynamic_batching { max_queue_delay_microseconds: -5 }"),
     "dynamic_batching.max_queue_delay_microseconds", r">= 0, found -5"),
    ("negative_levels", config("dynamic_batching { priority_levels: -1 }"),
     "dynamic_batching.priority_levels", r"priority_levels >= 0, found -1"),
    ("default_level_high",
     config("dynamic_batching { priority_levels: 3 default_priority_level: 4 }"),
     "dynamic_batching.default_priority_level", r"default_priority_level 4 is outside \[1, 3\]"),
    ("policy_without_levels", config("dynamic_batching { priority_queue_policy { key: 1 } }"),
     "dynamic_batching.priority_queue_policy[1]",
     r"priority_levels >= 1 for priority_queue_policy level 1, found priority_levels 0"),
    ("ordering_levels",
     config("dynamic_batching { preserve_ordering: true priority_levels: 2 "
            "default_priority_level: 1 }"),
     "dynamic_batching.priority_levels", r"at most one priority level .*found priority_levels 2"),
    ("ordering_delay",
     config("dynamic_batching { preserve_ordering: true priority_levels: 1 "
            "default_priority_level: 1 priority_queue_policy { key: 1 value { "
            "timeout_action: DELAY } } }"),
     "dynamic_batching.priority_queue_policy[1].timeout_action",
     r"timeout_action REJECT when preserve_ordering is true .*found DELAY"),
    ("queue_size", config("dynamic_batching { default_queue_policy { max_queue_size: -1 } }"),
     "dynamic_batching.default_queue_policy.max_queue_size", r"max_queue_size >= 0, found -1"),
    ("queue_timeout",
     config("dynamic_batching { default_queue_policy { default_timeout_microseconds: -1 } }"),
     "dynamic_batching.default_queue_policy.default_timeout_microseconds", r">= 0, found -1"),
    ("allowed_order", config("dynamic_batching { allowed_batch_sizes: [ 2, 2, 8 ] }"),
     "dynamic_batching.allowed_batch_sizes[1]", r"strictly ascending order, found 2 after 2"),
    ("allowed_zero", config("dynamic_batching { allowed_batch_sizes: [ 0, 8 ] }"),
     "dynamic_batching.allowed_batch_sizes[0]", r"allowed batch size >= 1, found 0"),
    ("allowed_last", config("dynamic_batching { allowed_batch_sizes: [ 1, 4 ] }"),
     "dynamic_batching.allowed_batch_sizes[1]", r"equal max_batch_size 8, found 4"),
    ("count_0", config("instance_group { count: 0 }"), "instance_group[0].count",
     r"count >= 1 for instance group 'm_0', found 0"),
    ("cpu_gpus", config("instance_group { kind: KIND_CPU gpus: [ 1, 2 ] }"),
     "instance_group[0].gpus",
     r"no gpus for instance group 'm_0' of kind KIND_CPU, found gpus \[1, 2\]"),
    ("no_gpu_visible", config("instance_group [ { }, { kind: KIND_GPU gpus: [ 0 ] } ]"),
     "instance_group[1].gpus[0]",
     r"'m_1' lists gpu id 0; expected no gpu ids, as no GPU is visible"),
    ("latest_0", config("version_policy { latest { num_versions: 0 } }"),
     "version_policy.latest.num_versions", r"num_versions >= 1, found 0"),
    ("specific_empty", config("version_policy { specific { } }"), "version_policy.specific",
     r"at least one version in specific.versions, found none"),
    ("specific_0", config("version_policy { specific { versions: [ 2, 0 ] } }"),
     "version_policy.specific.versions[1]", r"version number >= 1, found 0"),
    ("policy_none", config("version_policy { }"), "version_policy",
     r"exactly one of latest, all, specific, found none"),
    ("policy_two", config("version_policy { all { } latest { } }"), "version_policy",
     r"exactly one of latest, all, specific, found latest and all"),
    ("warmup_name", config(f'model_warmup {{ batch_size: 1 {ZERO_X} }}'), "model_warmup[0]",
     r"non-empty `name` for the warmup, found none"),
    ("warmup_batch_0", config(warmup(ZERO_X).replace("batch_size: 1", "batch_size: 0")),
     "model_warmup[0].batch_size", r"batch_size from 1 to 8 \(max_batch_size 8\), found 0"),
    ("warmup_batch_nobatch", config(warmup(ZERO_X).replace("size: 1", "size: 2"), batch=0),
     "model_warmup[0].batch_size", r"from 1 to 1 \(max_batch_size 0\), found 2"),
    ("warmup_no_inputs", config(warmup("")), "model_warmup[0]",
     r"at least one entry in the warmup's inputs, found none"),
    ("warmup_unknown_input", config(warmup(ZERO_X.replace('"x"', '"z"'))),
     "model_warmup[0].inputs[z]", r"name of a model input \('x'\), found 'z'"),
    ("warmup_no_type", config(warmup(ZERO_X.replace("data_type: TYPE_FP32", ""))),
     "model_warmup[0].inputs[x]", r"`data_type` for warmup input 'x', found none"),
    ("warmup_dims", config(warmup(ZERO_X.replace("[ 4 ]", "[ -1 ]"))),
     "model_warmup[0].inputs[x].dims[0]", r"warmup dimensions >= 1 .*found -1"),
    ("warmup_two_sources",
     config(warmup(ZERO_X.replace("zero_data", "random_data: true zero_data"))),
     "model_warmup[0].inputs[x]", r"exactly one of zero_data, .*found zero_data and random_data"),
    ("warmup_no_source", config(warmup(ZERO_X.replace("zero_data: true", ""))),
     "model_warmup[0].inputs[x]",
     r"exactly one of zero_data, random_data, input_data_file, found none"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "field", "message"), [case[1:] for case in BAD], ids=[case[0] for case in BAD]
)
def test_semantic_issue(issues_of: IssuesOf, text: str, field: str, message: str) -> None:
    issues = issues_of(text)
    matching = [issue for issue in issues if issue.field == field]
    assert matching, f"no issue for {field}: {issues}"
    assert re.search(message, matching[0].message), matching[0].message
    assert matching[0].line is not None
    for issue in issues:
        assert "expected" in issue.message and "found" in issue.message, issue.message


GOOD = [
    ("plain", config()),
    ("no_batching", config(batch=0)),
    ("variable_dims", config(inputs=tensor("-1, 3"))),
    ("reshape_scalar_batching", config(inputs=tensor("1", ""))),
    ("reshape_variable", config(inputs=tensor("2, -1, 3", "2, 1, -1, 3"))),
    ("reshape_same_count", config(inputs=tensor("2, 6", "3, 4"), batch=0)),
    ("priorities", config("dynamic_batching { priority_levels: 3 default_priority_level: 3 "
                          "priority_queue_policy { key: 1 value { timeout_action: DELAY } } }")),
    ("ordering_one_level", config("dynamic_batching { preserve_ordering: true priority_levels: 1 "
                                  "default_priority_level: 1 }")),
    ("allowed", config("dynamic_batching { allowed_batch_sizes: [ 1, 2, 8 ] }")),
    ("warmup", config(warmup(ZERO_X))),
    ("specific", config("version_policy { specific { versions: [ 1, 3 ] } }")),
    ("model_kind", config("instance_group { kind: KIND_MODEL }")),
]  # fmt: skip


@pytest.mark.parametrize("text", [case[1] for case in GOOD], ids=[case[0] for case in GOOD])
def test_valid_configs_pass(text: str) -> None:
    config_ = parse_model_config(text, filename="config.pbtxt", fmt="pbtxt", model_name="m")
    assert config_.name == "m"


@pytest.mark.parametrize(
    ("gpus", "visible", "bad"),
    [("0, 1", 2, None), ("2", 2, 2), ("-1", 4, -1), ("0", 0, 0)],
)
def test_gpu_ids_are_checked_against_visible_gpus(
    gpu_count: Callable[[int], None], gpus: str, visible: int, bad: int | None
) -> None:
    gpu_count(visible)
    text = config(f"instance_group {{ kind: KIND_GPU gpus: [ {gpus} ] }}")
    if bad is None:
        parsed = parse_model_config(text, filename="config.pbtxt", fmt="pbtxt")
        assert parsed.instance_groups[0].gpus == tuple(int(g) for g in gpus.split(","))
        return
    with pytest.raises(Exception, match=rf"lists gpu id {bad}; expected") as info:
        parse_model_config(text, filename="config.pbtxt", fmt="pbtxt")
    assert "instance_group[0].gpus" in str(info.value)


def test_semantic_issue_positions_in_pbtxt(issues_of: IssuesOf) -> None:
    text = config(
        "dynamic_batching {\n  preferred_batch_size: [ 4, 16 ]\n}", inputs=tensor("4", "3")
    )
    issues = issues_of(text)
    located = {(issue.field, issue.line, issue.column) for issue in issues}
    assert located == {
        ("input[0].reshape", 3, 54),
        ("dynamic_batching.preferred_batch_size[1]", 6, 30),
    }


def test_visible_gpu_count_reads_the_driver_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.undo()  # the autouse fixture replaced the function under test
    folder = tmp_path / "gpus"
    monkeypatch.setattr(triton_rules, "_GPU_DIR", folder)
    assert triton_rules.visible_gpu_count() == 0
    for bus in ("0000:01:00.0", "0000:02:00.0"):
        (folder / bus).mkdir(parents=True)
    assert triton_rules.visible_gpu_count() == 2
