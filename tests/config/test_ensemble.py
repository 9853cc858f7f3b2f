"""An ensemble's own config: each way its steps can be miswired, refused one by one."""

from __future__ import annotations

import pytest

from repoman.config import parse_model_config
from repoman.config.model import EnsembleStep
from tests.config.conftest import IssuesOf


def ensemble(steps: str, inputs: str = "IN", outputs: str = "OUT", extra: str = "") -> str:
    tensors = "".join(
        f'{kind} {{ name: "{name}" data_type: TYPE_FP32 dims: [ 4 ] }}\n'
        for kind, names in (("input", inputs), ("output", outputs))
        for name in names.split()
    )
    return f'platform: "ensemble"\nmax_batch_size: 8\n{tensors}{extra}ensemble_scheduling {{\n{steps}}}\n'


def step(model: str, inputs: dict[str, str], outputs: dict[str, str], version: int = -1) -> str:
    maps = "".join(f'  input_map {{ key: "{k}" value: "{v}" }}\n' for k, v in inputs.items())
    maps += "".join(f'  output_map {{ key: "{k}" value: "{v}" }}\n' for k, v in outputs.items())
    return f' step {{\n  model_name: "{model}"\n  model_version: {version}\n{maps} }}\n'


PRE = step("pre", {"x": "IN"}, {"y": "mid"})
POST = step("post", {"x": "mid"}, {"y": "OUT"})


def messages(issues_of: IssuesOf, text: str) -> list[str]:
    return [f"{issue.field}: {issue.message}" for issue in issues_of(text)]


def test_a_two_step_ensemble_is_parsed_into_its_steps() -> None:
    config = parse_model_config(
        ensemble(PRE + POST), filename="config.pbtxt", fmt="pbtxt", model_name="m"
    )
    assert config.is_ensemble
    assert config.ensemble_steps == (
        EnsembleStep("pre", -1, {"x": "IN"}, {"y": "mid"}),
        EnsembleStep("post", -1, {"x": "mid"}, {"y": "OUT"}),
    )
    assert config.as_dict()["ensemble_scheduling"]["step"][1]["model_name"] == "post"


def test_a_fan_out_fan_in_graph_is_accepted() -> None:
    steps = (
        step("a", {"x": "IN"}, {"y": "left"})
        + step("b", {"x": "IN"}, {"y": "right"})
        + step("join", {"l": "left", "r": "right"}, {"y": "OUT"})
    )
    config = parse_model_config(
        ensemble(steps), filename="config.pbtxt", fmt="pbtxt", model_name="m"
    )
    assert [s.model_name for s in config.ensemble_steps] == ["a", "b", "join"]


def test_steps_may_be_written_in_any_order() -> None:
    parse_model_config(ensemble(POST + PRE), filename="config.pbtxt", fmt="pbtxt", model_name="m")


def test_ensemble_scheduling_needs_the_ensemble_platform(issues_of: IssuesOf) -> None:
    text = ensemble(PRE + POST).replace('platform: "ensemble"', 'backend: "python"')
    [issue] = issues_of(text)
    assert issue.field == "ensemble_scheduling" and issue.line is not None
    assert "cannot be set for model 'm' whose platform is not ensemble" in issue.message
    assert 'found backend "python"' in issue.message


def test_the_ensemble_platform_needs_steps(issues_of: IssuesOf) -> None:
    text = ensemble("").split("ensemble_scheduling")[0]
    [issue] = issues_of(text)
    assert issue.field == "platform"
    assert "ensemble scheduling must be set for ensemble m" in issue.message


def test_an_empty_step_list_is_refused(issues_of: IssuesOf) -> None:
    assert messages(issues_of, ensemble("")) == [
        "ensemble_scheduling: expected at least one step in ensemble_scheduling, found none"
    ]


def test_a_step_without_a_model_is_refused(issues_of: IssuesOf) -> None:
    text = ensemble(PRE.replace('model_name: "pre"', 'model_name: ""') + POST)
    assert messages(issues_of, text) == [
        "ensemble_scheduling.step[0].model_name: expected a model_name for step 0, found none"
    ]


def test_a_step_without_inputs_or_outputs_is_refused(issues_of: IssuesOf) -> None:
    text = ensemble(' step { model_name: "lonely" }\n')
    assert messages(issues_of, text) == [
        "ensemble_scheduling.step[0]: expected at least one entry in input_map of step 0 "
        "('lonely'), found none",
        "ensemble_scheduling.step[0]: expected at least one entry in output_map of step 0 "
        "('lonely'), found none",
    ]


def test_a_version_below_minus_one_is_refused(issues_of: IssuesOf) -> None:
    text = ensemble(step("pre", {"x": "IN"}, {"y": "mid"}, version=-2) + POST)
    [message] = messages(issues_of, text)
    assert message.startswith(
        "ensemble_scheduling.step[0].model_version: expected model_version -1"
    )
    assert message.endswith("found -2")


def test_a_tensor_produced_twice_is_refused(issues_of: IssuesOf) -> None:
    text = ensemble(PRE + step("other", {"x": "IN"}, {"y": "mid"}) + POST)
    assert messages(issues_of, text) == [
        "ensemble_scheduling.step[1].output_map[y]: ensemble tensor 'mid' is produced twice: "
        "by step 0 ('pre') and by step 1 ('other'); expected each tensor to have one producer"
    ]


def test_a_step_writing_an_ensemble_input_is_refused(issues_of: IssuesOf) -> None:
    text = ensemble(PRE + POST + step("again", {"x": "mid"}, {"y": "IN"}))
    [message] = messages(issues_of, text)
    assert "ensemble tensor 'IN' is produced twice: it is an ensemble input" in message


def test_a_tensor_never_produced_is_refused(issues_of: IssuesOf) -> None:
    text = ensemble(PRE + step("post", {"x": "mid", "z": "ghost"}, {"y": "OUT"}))
    assert messages(issues_of, text) == [
        "ensemble_scheduling.step[1].input_map[z]: ensemble tensor 'ghost' (input 'z' of "
        "step 1, 'post') is never produced: expected an ensemble input or a step's "
        "output_map to provide it"
    ]


def test_a_tensor_never_consumed_is_refused(issues_of: IssuesOf) -> None:
    text = ensemble(step("pre", {"x": "IN"}, {"y": "mid", "w": "spare"}) + POST)
    [issue] = issues_of(text)
    assert issue.field == "ensemble_scheduling.step[0].output_map[w]"
    assert "ensemble tensor 'spare' (output 'w' of step 0, 'pre') is never consumed" in (
        issue.message
    )


def test_an_ensemble_output_nobody_produces_is_refused(issues_of: IssuesOf) -> None:
    assert messages(issues_of, ensemble(PRE + POST, outputs="OUT EXTRA")) == [
        "output[1].name: ensemble output 'EXTRA' is never produced: expected a step whose "
        "output_map writes it"
    ]


def test_an_ensemble_input_nobody_uses_is_refused(issues_of: IssuesOf) -> None:
    [issue] = issues_of(ensemble(PRE + POST, inputs="IN UNUSED"))
    assert issue.field == "input[1].name"
    assert issue.message.startswith("ensemble input 'UNUSED' is not used by any step")


def test_a_cycle_is_refused_naming_its_steps(issues_of: IssuesOf) -> None:
    steps = (
        step("a", {"x": "IN", "back": "c_out"}, {"y": "a_out"})
        + step("b", {"x": "a_out"}, {"y": "b_out"})
        + step("c", {"x": "b_out"}, {"y": "c_out", "z": "OUT"})
    )
    [message] = messages(issues_of, ensemble(steps))
    assert message == (
        "ensemble_scheduling.step[0]: expected the steps to form a graph without cycles, "
        "found the cycle step 0 ('a') -> step 2 ('c') -> step 1 ('b') -> step 0 ('a')"
    )


def test_a_step_reading_its_own_output_is_a_cycle(issues_of: IssuesOf) -> None:
    steps = PRE + step("loop", {"x": "mid", "again": "loop_out"}, {"y": "loop_out", "z": "OUT"})
    [message] = messages(issues_of, ensemble(steps))
    assert "found the cycle step 1 ('loop') -> step 1 ('loop')" in message


@pytest.mark.parametrize("fmt", ["yaml"])
def test_an_ensemble_in_yaml(fmt: str) -> None:
    text = """
platform: ensemble
max_batch_size: 4
input: [{name: IN, data_type: FP32, dims: [4]}]
output: [{name: OUT, data_type: FP32, dims: [4]}]
ensemble_scheduling:
  step:
    - model_name: pre
      model_version: -1
      input_map: {x: IN}
      output_map: {y: OUT}
"""
    config = parse_model_config(text, filename="config.yaml", fmt=fmt, model_name="m")
    assert config.ensemble_steps == (EnsembleStep("pre", -1, {"x": "IN"}, {"y": "OUT"}),)
