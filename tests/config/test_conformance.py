"""Triton's own invalid model configs: repoman must refuse each one for the same problem."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from repoman.config import load_model_config
from repoman.errors import ConfigError

CONFORMANCE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "triton_model_config"
)

# Case folder -> a regex one of repoman's issues (rendered as "file:line:col: error: field:
# message") must match. Implemented fields name the problem Triton's `expected` describes;
# fields repoman refuses name the field and say it is not supported.
_BATCH_INPUT = r"batch_input: `batch_input` is not supported by repoman"
_BATCH_OUTPUT = r"batch_output: `batch_output` is not supported by repoman"
_SEQUENCE = r"sequence_batching: `sequence_batching` is not supported by repoman"
_DIFFERENT_COUNT = (
    r"reshape: expected dims \[2, -1\] and reshape \[2, 2\] .*same element count, "
    r"found a variable count and 4"
)
_TRUNKS = (
    r"reshape: .*same element count between variable-size dimensions, found \[2, 1\] and \[{}\]"
)
_VARIABLE = r"reshape: .*same number of variable-size dimensions \(-1\), found 1 and 2"
_ZERO_RESHAPE = (
    r"reshape\.shape\[0\]: expected reshape dimension 0 of {} to be >= 1, or -1 .*found 0"
)

EXPECTED: dict[str, str] = {
    "batch_input_less_source0": _BATCH_INPUT,
    "batch_input_less_source1": _BATCH_INPUT,
    "batch_input_less_source2": _BATCH_INPUT,
    "batch_input_less_source3": _BATCH_INPUT,
    "batch_input_many_source0": _BATCH_INPUT,
    "batch_input_many_source1": _BATCH_INPUT,
    "batch_input_many_source2": _BATCH_INPUT,
    "batch_input_many_source3": _BATCH_INPUT,
    "batch_input_unknown_source": _BATCH_INPUT,
    "batch_output_duplicated_target": _BATCH_OUTPUT,
    "batch_output_less_source": _BATCH_OUTPUT,
    "batch_output_many_source": _BATCH_OUTPUT,
    "batch_output_unknown_source": _BATCH_OUTPUT,
    "batch_output_unknown_target": _BATCH_OUTPUT,
    "control_kind_end_multiple": _SEQUENCE,
    "control_kind_ready_multiple": _SEQUENCE,
    "control_kind_start_multiple": _SEQUENCE,
    "control_tensor_multiple": _SEQUENCE,
    "control_tensor_no_value": _SEQUENCE,
    "default_priority_level0": (
        r"default_priority_level: default_priority_level 0 is outside \[1, 3\]"
    ),
    "default_priority_level1": (
        r"default_priority_level: default_priority_level 5 is outside \[1, 3\]"
    ),
    "ensemble_scheduling_set": (
        r"ensemble_scheduling: ensemble scheduling cannot be set for model "
        r"'ensemble_scheduling_set' whose platform is not ensemble"
    ),
    "invalid_cpu": (
        r"instance_group\[0\]\.gpus: expected no gpus for instance group 'invalid_cpu_0' "
        r"of kind KIND_CPU, found gpus \[0\]"
    ),
    "invalid_gpu": (
        r"instance_group\[0\]\.gpus\[0\]: instance group 'invalid_gpu_0' lists gpu id "
        r"42; expected"
    ),
    "missing_datatype": (
        r"input\[0\]\.data_type: expected a `data_type` field in input\[0\] \('input'\), "
        r"found none"
    ),
    "negative_gpu": (
        r"instance_group\[1\]\.gpus\[0\]: instance group 'negative_gpu_1' lists gpu id "
        r"-1; expected"
    ),
    "negative_max_batch_size": r"max_batch_size: expected max_batch_size >= 0 .*found -2",
    "preserve_ordering0": (
        r"priority_levels: expected at most one priority level when preserve_ordering is "
        r"true, found priority_levels 3"
    ),
    "preserve_ordering1": (
        r"default_queue_policy\.timeout_action: expected timeout_action REJECT when "
        r"preserve_ordering is true .*found DELAY"
    ),
    "preserve_ordering2": (
        r"priority_queue_policy\[1\]\.timeout_action: expected timeout_action REJECT "
        r"when preserve_ordering is true .*found DELAY"
    ),
    "priority_level0": (
        r"priority_queue_policy\[0\]: priority_queue_policy level 0 is outside \[1, 3\]"
    ),
    "priority_level1": (
        r"priority_queue_policy\[4\]: priority_queue_policy level 4 is outside \[1, 3\]"
    ),
    "reshape_elementcount0": r"input\[0\]\.reshape: .*same element count, found 6 and 5",
    "reshape_elementcount1": r"input\[0\]\.reshape: .*same element count, found 15 and 10",
    "reshape_elementcount2": r"output\[0\]\.reshape: .*same element count, found 6 and 3",
    "reshape_elementcount3": r"output\[0\]\.reshape: .*same element count, found 15 and 30",
    "reshape_nobatch_empty0": (
        r"input\[0\]\.reshape: expected a non-empty reshape for input 'input', found "
        r"reshape \[\] \(a scalar\)"
    ),
    "reshape_nobatch_empty1": (
        r"output\[0\]\.reshape: expected a non-empty reshape for output 'output', found "
        r"reshape \[\] \(a scalar\)"
    ),
    "reshape_nobatch_variable0": r"input\[0\]\." + _DIFFERENT_COUNT,
    "reshape_nobatch_variable1": r"output\[0\]\." + _DIFFERENT_COUNT,
    "reshape_nobatch_variable2": r"input\[0\]\." + _TRUNKS.format("2, 2"),
    "reshape_nobatch_variable3": r"output\[0\]\." + _TRUNKS.format("1, 2"),
    "reshape_nobatch_variable4": r"input\[0\]\." + _VARIABLE,
    "reshape_nobatch_variable5": r"output\[0\]\." + _VARIABLE,
    "reshape_nobatch_zerodims0": r"input\[0\]\." + _ZERO_RESHAPE.format("input 'input'"),
    "reshape_nobatch_zerodims1": r"output\[0\]\." + _ZERO_RESHAPE.format("output 'output'"),
    "reshape_variable0": r"input\[0\]\." + _DIFFERENT_COUNT,
    "reshape_variable1": r"output\[0\]\." + _DIFFERENT_COUNT,
    "reshape_variable2": r"input\[0\]\." + _TRUNKS.format("2, 2"),
    "reshape_variable3": r"output\[0\]\." + _TRUNKS.format("1, 2"),
    "reshape_variable4": r"input\[0\]\." + _VARIABLE,
    "reshape_variable5": r"output\[0\]\." + _VARIABLE,
    "reshape_zerodims0": r"input\[0\]\." + _ZERO_RESHAPE.format("input 'input'"),
    "reshape_zerodims1": r"output\[0\]\." + _ZERO_RESHAPE.format("output 'output'"),
    "zerodims_input0": (
        r"input\[0\]\.dims\[1\]: expected dimension 1 of input 'input' to be >= 1, or -1 "
        r".*found 0"
    ),
    "zerodims_input1": (
        r"input\[0\]\.dims\[0\]: expected dimension 0 of input 'input' to be >= 1, or -1 "
        r".*found 0"
    ),
    "zerodims_output0": (
        r"output\[0\]\.dims\[2\]: expected dimension 2 of output 'output' to be >= 1, or "
        r"-1 .*found 0"
    ),
    "zerodims_output1": (
        r"output\[0\]\.dims\[0\]: expected dimension 0 of output 'output' to be >= 1, or "
        r"-1 .*found 0"
    ),
}

# Cases where Triton refuses a feature repoman does not have: nothing else may be reported.
_REFUSED_ONLY = (_BATCH_INPUT, _BATCH_OUTPUT, _SEQUENCE)


def _cases() -> list[str]:
    if not CONFORMANCE.is_dir():
        return []
    return sorted(path.name for path in CONFORMANCE.iterdir() if (path / "config.pbtxt").is_file())


CASES = _cases()


def test_conformance_cases_are_present() -> None:
    if not CONFORMANCE.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"the Triton conformance cases are missing: {CONFORMANCE}")
        pytest.skip(f"no Triton conformance cases at {CONFORMANCE}")
    assert CASES, f"no case folders in {CONFORMANCE}"


def test_every_case_is_mapped() -> None:
    if not CASES:
        pytest.skip("no conformance cases")
    assert sorted(EXPECTED) == CASES


@pytest.mark.parametrize("case", CASES)
def test_triton_invalid_config_is_refused_for_the_same_problem(tmp_path: Path, case: str) -> None:
    # The model folder is named after the case, as Triton's test repository names it.
    model_dir = tmp_path / case
    model_dir.mkdir()
    source = CONFORMANCE / case / "config.pbtxt"
    (model_dir / "config.pbtxt").write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    assert case in EXPECTED, f"add {case} to EXPECTED, reading {CONFORMANCE / case / 'expected'}"
    with pytest.raises(ConfigError) as info:
        load_model_config(model_dir, default_platform="onnxruntime_onnx")
    issues = info.value.issues
    pattern = EXPECTED[case]
    matching = [issue for issue in issues if re.search(pattern, str(issue))]
    assert matching, f"{pattern!r} matches none of:\n{info.value}"
    assert matching[0].line is not None and matching[0].column is not None
    if pattern in _REFUSED_ONLY:
        assert issues == matching


_SCHEMA_CASES = ("missing_datatype",)
ENSEMBLE_CASES = [case for case in CASES if (CONFORMANCE / case / "expected_ensemble").is_file()]


@pytest.mark.parametrize("case", ENSEMBLE_CASES)
def test_triton_case_as_an_ensemble_is_refused_without_its_steps(tmp_path: Path, case: str) -> None:
    # Triton runs each case a second time as an ensemble (expected_ensemble): a config
    # without ensemble_scheduling is then refused for that, whatever else it has.
    model_dir = tmp_path / case
    model_dir.mkdir()
    text = (CONFORMANCE / case / "config.pbtxt").read_text(encoding="utf-8")
    text = re.sub(r"^(platform|backend):.*$", "", text, flags=re.MULTILINE)
    (model_dir / "config.pbtxt").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_model_config(model_dir, default_platform="ensemble")
    if EXPECTED[case] in _REFUSED_ONLY or case in _SCHEMA_CASES:
        # NOTE: a refused field, or a schema error, is reported before any semantics.
        assert re.search(EXPECTED[case], str(info.value))
        return
    pattern = rf"platform: ensemble scheduling must be set for ensemble {case} whose platform"
    assert any(re.search(pattern, str(issue)) for issue in info.value.issues), str(info.value)
