"""Model folders for the ensemble tests: Triton-style Python members, the bundled iris model
(ONNX), and ensembles wiring them together."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from tests.conftest import BUNDLED

# A Triton-style model.py computing ``y = <expr of x>`` per request; a request whose input
# trips ``refuse`` (an expression) gets an error of its own (the rest of its batch succeeds).
UNARY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "{inp}").as_numpy()
            if {refuse}:
                error = pb_utils.TritonError("{refusal}")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            y = {expr}
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("{out}", y)]))
        return responses
"""

JOIN = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "A").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "B").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SUM", a + b)]))
        return responses
"""

SPECIES = (b"setosa", b"versicolor", b"virginica")


def python_model(
    repo: Path,
    name: str,
    *,
    inp: str = "X",
    out: str = "Y",
    expr: str = "x * 2",
    dtype: str = "FP32",
    out_dtype: str = "",
    dims: str = "4",
    out_dims: str = "",
    refuse: str = "False",
    refusal: str = "refused",
    version: int = 1,
    batch: int = 64,
    source: str | None = None,
) -> Path:
    folder = repo / name
    (folder / str(version)).mkdir(parents=True, exist_ok=True)
    text = source or UNARY.format(inp=inp, out=out, expr=expr, refuse=refuse, refusal=refusal)
    (folder / str(version) / "model.py").write_text(textwrap.dedent(text))
    if source is None:
        config = f"""
backend: "python"
max_batch_size: {batch}
input [{{ name: "{inp}" data_type: TYPE_{dtype} dims: [ {dims} ] }}]
output [{{ name: "{out}" data_type: TYPE_{out_dtype or dtype} dims: [ {out_dims or dims} ] }}]
dynamic_batching {{ max_queue_delay_microseconds: 2000 }}
"""
        (folder / "config.pbtxt").write_text(config)
    return folder


def iris(repo: Path) -> None:
    folder = repo / "iris"
    (folder / "1").mkdir(parents=True)
    shutil.copy(BUNDLED / "iris" / "1" / "model.onnx", folder / "1" / "model.onnx")
    config = (BUNDLED / "iris" / "config.yaml").read_text()
    assert "dynamic_batching" in config  # NOTE: the bundled iris batches: members must
    (folder / "config.yaml").write_text(config)


def ensemble(repo: Path, name: str, text: str, version: int = 1) -> Path:
    folder = repo / name
    (folder / str(version)).mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(textwrap.dedent(text))
    return folder


def step(model: str, inputs: dict[str, str], outputs: dict[str, str], version: int = -1) -> str:
    maps = "".join(f'    input_map {{ key: "{k}" value: "{v}" }}\n' for k, v in inputs.items())
    maps += "".join(f'    output_map {{ key: "{k}" value: "{v}" }}\n' for k, v in outputs.items())
    return f'  step {{\n    model_name: "{model}"\n    model_version: {version}\n{maps}  }}\n'


def species_pipeline(repo: Path) -> None:
    """millimetres -> (python) centimetres -> (ONNX) iris -> (python) species name."""
    python_model(repo, "to_cm", inp="MM", out="CM", expr="x / 10")
    iris(repo)
    python_model(
        repo,
        "name_species",
        inp="PROBS",
        out="NAME",
        dims="3",
        out_dtype="STRING",
        out_dims="1",
        expr=f"np.array([[{SPECIES!r}[int(i)]] for i in x.argmax(axis=1)], dtype=np.object_)",
    )
    ensemble(
        repo,
        "species",
        """
        platform: "ensemble"
        max_batch_size: 16
        input [{ name: "MEASURES_MM" data_type: TYPE_FP32 dims: [ 4 ] }]
        output [{ name: "SPECIES" data_type: TYPE_STRING dims: [ 1 ] },
                { name: "LABEL" data_type: TYPE_INT64 dims: [ 1 ] }]
        ensemble_scheduling {
        """
        + step("to_cm", {"MM": "MEASURES_MM"}, {"CM": "cm"})
        + step("iris", {"features": "cm"}, {"probabilities": "probs", "label": "LABEL"})
        + step("name_species", {"PROBS": "probs"}, {"NAME": "SPECIES"})
        + "}\n",
    )


def fan_pipeline(repo: Path) -> None:
    """x -> double and negate side by side -> join: SUM = 2x + (-x) = x; DOUBLED = 2x."""
    python_model(repo, "double", expr="x * 2")
    python_model(repo, "negate", expr="-x")
    python_model(repo, "join", source=JOIN)
    (repo / "join" / "config.pbtxt").write_text(
        """
backend: "python"
max_batch_size: 64
input [{ name: "A" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "B" data_type: TYPE_FP32 dims: [ 4 ] }]
output [{ name: "SUM" data_type: TYPE_FP32 dims: [ 4 ] }]
dynamic_batching { max_queue_delay_microseconds: 2000 }
"""
    )
    ensemble(
        repo,
        "fan",
        """
        platform: "ensemble"
        max_batch_size: 8
        input [{ name: "IN" data_type: TYPE_FP32 dims: [ 4 ] }]
        output [{ name: "SUM" data_type: TYPE_FP32 dims: [ 4 ] },
                { name: "DOUBLED" data_type: TYPE_FP32 dims: [ 4 ] }]
        ensemble_scheduling {
        """
        + step("double", {"X": "IN"}, {"Y": "doubled"})
        + step("negate", {"X": "IN"}, {"Y": "negated"})
        + step("join", {"A": "doubled", "B": "negated"}, {"SUM": "SUM"})
        + step("copy", {"X": "doubled"}, {"Y": "DOUBLED"})
        + "}\n",
    )
    python_model(repo, "copy", expr="x")


def fragile_pipeline(repo: Path) -> None:
    """x -> double -> fragile (refuses a negative value, per request)."""
    python_model(repo, "fragile", expr="x + 1", refuse="(x < 0).any()", refusal="negative input")
    ensemble(
        repo,
        "fragile_pipe",
        """
        platform: "ensemble"
        max_batch_size: 8
        input [{ name: "IN" data_type: TYPE_FP32 dims: [ 4 ] }]
        output [{ name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] }]
        ensemble_scheduling {
        """
        + step("double", {"X": "IN"}, {"Y": "doubled"})
        + step("fragile", {"X": "doubled"}, {"Y": "OUT"})
        + "}\n",
    )


def orphan_pipeline(repo: Path) -> None:
    """An ensemble whose second step's member ('ghost') is not in the repository."""
    ensemble(
        repo,
        "orphan",
        """
        platform: "ensemble"
        max_batch_size: 8
        input [{ name: "IN" data_type: TYPE_FP32 dims: [ 4 ] }]
        output [{ name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] }]
        ensemble_scheduling {
        """
        + step("double", {"X": "IN"}, {"Y": "doubled"})
        + step("ghost", {"X": "doubled"}, {"Y": "OUT"})
        + "}\n",
    )


def nested_pipeline(repo: Path) -> None:
    """An ensemble whose first step is the ensemble 'fan' (needs fan_pipeline):
    IN -> fan -> (SUM = x, DOUBLED = 2x) -> double(DOUBLED) = 4x as OUT."""
    ensemble(
        repo,
        "nested",
        """
        platform: "ensemble"
        max_batch_size: 8
        input [{ name: "IN" data_type: TYPE_FP32 dims: [ 4 ] }]
        output [{ name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] },
                { name: "SUM" data_type: TYPE_FP32 dims: [ 4 ] }]
        ensemble_scheduling {
        """
        + step("fan", {"IN": "IN"}, {"SUM": "SUM", "DOUBLED": "doubled"})
        + step("double", {"X": "doubled"}, {"Y": "OUT"})
        + "}\n",
    )
