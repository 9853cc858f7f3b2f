"""The ensemble's wiring against its members' configs, case by case; and the steps a request needs."""

from __future__ import annotations

from repoman.config import parse_model_config
from repoman.config.model import ModelConfig
from repoman.pipeline.graph import check_members, members, plan


def model(name: str, text: str) -> ModelConfig:
    return parse_model_config(text, filename=f"{name}/config.pbtxt", fmt="pbtxt", model_name=name)


def member(
    name: str,
    inputs: str = "x:FP32:4",
    outputs: str = "y:FP32:4",
    batch: int = 8,
) -> ModelConfig:
    def tensors(kind: str, spec: str) -> str:
        out = ""
        for entry in spec.split():
            tensor, dtype, dims = entry.split(":")
            shape = ", ".join(dims.split(","))
            out += f'{kind} {{ name: "{tensor}" data_type: TYPE_{dtype} dims: [ {shape} ] }}\n'
        return out

    return model(
        name,
        f'backend: "python"\nmax_batch_size: {batch}\n'
        + tensors("input", inputs)
        + tensors("output", outputs),
    )


def pipeline(batch: int = 8, out_dims: str = "4", out_type: str = "FP32") -> ModelConfig:
    return model(
        "pipe",
        f"""
platform: "ensemble"
max_batch_size: {batch}
input {{ name: "IN" data_type: TYPE_FP32 dims: [ 4 ] }}
output {{ name: "OUT" data_type: TYPE_{out_type} dims: [ {out_dims} ] }}
ensemble_scheduling {{
  step {{ model_name: "pre" input_map {{ key: "x" value: "IN" }} output_map {{ key: "y" value: "mid" }} }}
  step {{ model_name: "post" input_map {{ key: "x" value: "mid" }} output_map {{ key: "y" value: "OUT" }} }}
}}
""",
    )


def test_members_that_fit_give_no_problem() -> None:
    assert check_members(pipeline(), [member("pre"), member("post")]) == []


def test_members_are_listed_once_in_step_order() -> None:
    assert members(pipeline()) == ("pre", "post")
    assert members(member("pre")) == ()


def test_a_member_that_does_not_batch_is_refused() -> None:
    problems = check_members(pipeline(), [member("pre", batch=0), member("post")])
    assert problems[0] == (
        "step 0 ('pre'): the ensemble takes batches of up to 8 (max_batch_size 8) but model "
        "'pre' does not batch (max_batch_size 0)"
    )
    # its tensors then lack the batch dimension the ensemble's have, and that is said too
    assert problems[1].endswith("has shape [-1, 4] but input 'x' of step 0 ('pre') expects [4]")


def test_a_member_with_a_smaller_batch_is_refused() -> None:
    [problem] = check_members(pipeline(), [member("pre"), member("post", batch=4)])
    assert problem.startswith("step 1 ('post'): the ensemble takes batches of up to 8 but model")
    assert "accepts at most 4" in problem


def test_a_batching_member_of_an_ensemble_that_does_not_batch_fits() -> None:
    text = pipeline(batch=0).normalised
    assert text["max_batch_size"] == 0
    ensemble = model(
        "pipe",
        """
platform: "ensemble"
input { name: "IN" data_type: TYPE_FP32 dims: [ 1, 4 ] }
output { name: "OUT" data_type: TYPE_FP32 dims: [ 1, 4 ] }
ensemble_scheduling {
  step { model_name: "pre" input_map { key: "x" value: "IN" } output_map { key: "y" value: "OUT" } }
}
""",
    )
    assert check_members(ensemble, [member("pre")]) == []


def test_an_unknown_member_input_is_refused() -> None:
    problems = check_members(pipeline(), [member("pre", inputs="a:FP32:4"), member("post")])
    assert problems == [
        "step 0 ('pre'): input_map names input 'x', which model 'pre' does not have "
        "(its inputs: a)",
        "step 0 ('pre'): input 'a' of model 'pre' is not mapped: expected input_map to "
        "provide every input that is not optional",
    ]


def test_an_unknown_member_output_is_refused() -> None:
    problems = check_members(pipeline(), [member("pre", outputs="z:FP32:4"), member("post")])
    assert problems == [
        "step 0 ('pre'): output_map names output 'y', which model 'pre' does not have "
        "(its outputs: z)"
    ]


def test_a_data_type_mismatch_between_producer_and_consumer_is_refused() -> None:
    problems = check_members(pipeline(), [member("pre", outputs="y:INT64:4"), member("post")])
    assert problems == [
        "ensemble tensor 'mid': output 'y' of step 0 ('pre') is INT64 but input 'x' of "
        "step 1 ('post') expects FP32"
    ]


def test_a_shape_mismatch_between_producer_and_consumer_is_refused() -> None:
    problems = check_members(pipeline(), [member("pre", outputs="y:FP32:5"), member("post")])
    assert problems == [
        "ensemble tensor 'mid': output 'y' of step 0 ('pre') has shape [-1, 5] but input "
        "'x' of step 1 ('post') expects [-1, 4]"
    ]


def test_an_ensemble_input_that_does_not_fit_its_consumer_is_refused() -> None:
    problems = check_members(pipeline(), [member("pre", inputs="x:FP32:3"), member("post")])
    assert problems == [
        "ensemble tensor 'IN': ensemble input 'IN' has shape [-1, 4] but input 'x' of "
        "step 0 ('pre') expects [-1, 3]"
    ]


def test_an_ensemble_output_that_does_not_fit_its_producer_is_refused() -> None:
    problems = check_members(pipeline(out_type="INT32"), [member("pre"), member("post")])
    assert problems == [
        "ensemble tensor 'OUT': output 'y' of step 1 ('post') is FP32 but ensemble output "
        "'OUT' expects INT32"
    ]


def test_a_variable_dimension_fits_a_fixed_one() -> None:
    assert check_members(pipeline(), [member("pre", outputs="y:FP32:-1"), member("post")]) == []


def fan() -> ModelConfig:
    return model(
        "fan",
        """
platform: "ensemble"
max_batch_size: 8
input { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] }
output { name: "SUM" data_type: TYPE_FP32 dims: [ 4 ] }
output { name: "LEFT" data_type: TYPE_FP32 dims: [ 4 ] }
ensemble_scheduling {
  step { model_name: "a" input_map { key: "x" value: "IN" } output_map { key: "y" value: "l" } }
  step { model_name: "b" input_map { key: "x" value: "IN" } output_map { key: "y" value: "r" } }
  step { model_name: "join" input_map [ { key: "x" value: "l" }, { key: "z" value: "r" } ]
         output_map { key: "y" value: "SUM" } }
  step { model_name: "copy" input_map { key: "x" value: "l" } output_map { key: "y" value: "LEFT" } }
}
""",
    )


def test_a_request_runs_only_the_steps_its_outputs_need() -> None:
    wiring = plan(fan())
    assert wiring.needed(("SUM", "LEFT")) == (0, 1, 2, 3)
    assert wiring.needed(("LEFT",)) == (0, 3)
    assert wiring.needed(("SUM",)) == (0, 1, 2)
    assert wiring.consumers["l"] == (2, 3)
    assert wiring.reads[2] == frozenset({"l", "r"})
