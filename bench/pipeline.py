"""Pipeline benchmark (issue #16): a three-step pipeline as an ensemble vs one Python model doing
all three steps in-process; prints a table, it is not a timed test.

The pipeline is the bundled worked example: iris_preprocess (Python, mm -> cm) -> iris (ONNX)
-> iris_postprocess (Python, species name). The all-in-one model does the same three steps in
one Python ``execute`` per batch (onnxruntime in-process, one session). Both are served by one
repoman on 127.0.0.1 and driven by Triton's perf_analyzer (closed loop) at each concurrency;
the mean batch each member formed comes from its statistics (inference_count / execution_count
deltas). BLS is the bundled iris_bls: a Python model whose ``async def execute`` calls the three
members with ``async_exec`` (every request of its batch in flight at once).

``ensemble-onnx`` is the same ensemble with ONNX pre/post members (``iris_pre_onnx``: x / 10;
``iris_post_onnx``: ArgMax, Gather of the species names, ReduceMax): its steps run in the core
process, where the Python members each cost a round trip to their stub process per batch.
The gap between the two ensembles is what those hops cost. It needs the ``onnx`` package (the
``models`` extra) to write the two models; without it the row reads n/a.

Every variant is measured once per round, the variants in turn (``--rounds``, 3 by default),
and the table shows each one's median round: on a shared machine throughput drifts by tens of
percent within minutes, and variants measured minutes apart compare that drift, not the
variants. The ratio lines give the median of the per-round ratios and the spread.

``core µs/req`` is the server process's own CPU time (not its Python stubs') over a variant's
whole perf_analyzer run, divided by the requests it answered: when that process is the limit
(one core busy, the machine not), throughput follows it, and it drifts far less than
throughput does. The ratio lines add the all-in-one model's cost over the variant's.

``--max-batch N`` sets every model's ``max_batch_size`` alike (members, ensembles, all-in-one):
whether bigger batches change the ratio.

Usage: .venv/bin/python bench/pipeline.py [--concurrency 1 64] [--requests 1500] [--rounds 3]
       [--max-batch N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _load import PERF_ANALYZER, ROOT, Server, counts, http_get, log, run_perf  # noqa: E402

BUNDLED = ROOT / "model_repository"
MEMBERS = ("iris_preprocess", "iris", "iris_postprocess")
ONNX_MEMBERS = ("iris_pre_onnx", "iris", "iris_post_onnx")

# What each variant sends requests to, and the models whose batches it reports (None: not
# there yet).
VARIANTS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "ensemble": ("iris_species", MEMBERS),
    "ensemble-onnx": ("iris_species_onnx", ONNX_MEMBERS),
    "all-in-one": ("iris_allinone", ("iris_allinone",)),
    "bls": ("iris_bls", MEMBERS),
}

ALL_IN_ONE = '''
"""The iris pipeline in one Python model: mm -> cm, onnxruntime, species name, per batch."""

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

SPECIES = np.array([b"setosa", b"versicolor", b"virginica"], dtype=np.object_)


class TritonPythonModel:
    def initialize(self, args):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        path = f"{args['model_repository']}/{args['model_version']}/iris.onnx"
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        arrays = [
            pb_utils.get_input_tensor_by_name(r, "measurements_mm").as_numpy() for r in requests
        ]
        millimetres = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        probabilities = self.session.run(["probabilities"], {"features": millimetres / 10})[0]
        species = SPECIES[probabilities.argmax(axis=1)].reshape(-1, 1)
        confidence = probabilities.max(axis=1, keepdims=True).astype(np.float32)
        responses, start = [], 0
        for array in arrays:
            end = start + len(array)
            outputs = [
                pb_utils.Tensor("species", species[start:end]),
                pb_utils.Tensor("confidence", confidence[start:end]),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            start = end
        return responses
'''

ALL_IN_ONE_CONFIG = """
name: "iris_allinone"
backend: "python"
max_batch_size: 16
input [ { name: "measurements_mm" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [
  { name: "species" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "confidence" data_type: TYPE_FP32 dims: [ 1 ] }
]
dynamic_batching { max_queue_delay_microseconds: 500 }
"""


ONNX_MEMBER_CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 16
input [ {{ name: "{inp}" data_type: TYPE_FP32 dims: [ {in_dims} ] }} ]
output [ {outputs} ]
dynamic_batching {{ max_queue_delay_microseconds: 500 }}
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
"""


def onnx_members(repo: Path) -> bool:
    """Write iris_pre_onnx, iris_post_onnx and the ensemble iris_species_onnx; False when the
    onnx package is missing."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        log("onnx is not installed (pip install '.[models]'): no ensemble-onnx row")
        return False

    def save(name: str, graph: onnx.GraphProto, inp: str, in_dims: str, outputs: str) -> None:
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        (repo / name / "1").mkdir(parents=True)
        onnx.save(model, str(repo / name / "1" / "model.onnx"))
        config = ONNX_MEMBER_CONFIG.format(name=name, inp=inp, in_dims=in_dims, outputs=outputs)
        (repo / name / "config.pbtxt").write_text(config)

    floats = TensorProto.FLOAT
    pre = helper.make_graph(
        [helper.make_node("Div", ["measurements_mm", "ten"], ["features"])],
        "iris_pre",
        [helper.make_tensor_value_info("measurements_mm", floats, ["N", 4])],
        [helper.make_tensor_value_info("features", floats, ["N", 4])],
        [helper.make_tensor("ten", floats, [], [10.0])],
    )
    save(
        "iris_pre_onnx",
        pre,
        "measurements_mm",
        "4",
        '{ name: "features" data_type: TYPE_FP32 dims: [ 4 ] }',
    )
    post = helper.make_graph(
        [
            helper.make_node("ArgMax", ["probabilities"], ["best"], axis=1, keepdims=1),
            helper.make_node("Gather", ["names", "best"], ["species"], axis=0),
            helper.make_node("ReduceMax", ["probabilities"], ["confidence"], axes=[1], keepdims=1),
        ],
        "iris_post",
        [helper.make_tensor_value_info("probabilities", floats, ["N", 3])],
        [
            helper.make_tensor_value_info("species", TensorProto.STRING, ["N", 1]),
            helper.make_tensor_value_info("confidence", floats, ["N", 1]),
        ],
        [
            helper.make_tensor(
                "names", TensorProto.STRING, [3], [b"setosa", b"versicolor", b"virginica"]
            )
        ],
    )
    save(
        "iris_post_onnx",
        post,
        "probabilities",
        "3",
        '{ name: "species" data_type: TYPE_STRING dims: [ 1 ] }, '
        '{ name: "confidence" data_type: TYPE_FP32 dims: [ 1 ] }',
    )
    ensemble = (BUNDLED / "iris_species" / "config.pbtxt").read_text()
    ensemble = ensemble.replace('"iris_species"', '"iris_species_onnx"')
    ensemble = ensemble.replace('"iris_preprocess"', '"iris_pre_onnx"')
    ensemble = ensemble.replace('"iris_postprocess"', '"iris_post_onnx"')
    (repo / "iris_species_onnx" / "1").mkdir(parents=True)
    (repo / "iris_species_onnx" / "config.pbtxt").write_text(ensemble)
    return True


def repository(folder: Path, max_batch: int | None = None) -> Path:
    repo = folder / "repo"
    for name in (*MEMBERS, "iris_species", "iris_bls"):
        shutil.copytree(BUNDLED / name, repo / name)
    allinone = repo / "iris_allinone"
    (allinone / "1").mkdir(parents=True)
    (allinone / "config.pbtxt").write_text(ALL_IN_ONE_CONFIG)
    (allinone / "1" / "model.py").write_text(ALL_IN_ONE)
    shutil.copy(BUNDLED / "iris" / "1" / "model.onnx", allinone / "1" / "iris.onnx")
    if not onnx_members(repo):
        VARIANTS["ensemble-onnx"] = (None, ONNX_MEMBERS)
    if max_batch is not None:
        for config in (*repo.glob("*/config.pbtxt"), *repo.glob("*/config.yaml")):
            text = config.read_text()
            config.write_text(re.sub(r"max_batch_size: \d+", f"max_batch_size: {max_batch}", text))
    return repo


def measure(server: Server, variant: str, conc: int, args: argparse.Namespace) -> dict:
    model, members = VARIANTS[variant]
    row: dict = {"variant": variant, "concurrency": conc}
    if model is None:
        return row
    assert server.port is not None
    before = {m: counts(server.port, m) for m in members}
    cpu, served = server.cpu_seconds(), successes(server.port, model)
    stubs = server.children_cpu_seconds()
    cmd = [str(PERF_ANALYZER), "-m", model, "-u", f"127.0.0.1:{server.port}"]
    cmd += f"-i http --concurrency-range {conc} --measurement-mode count_windows".split()
    cmd += f"-s 1000 --measurement-request-count {args.requests} --max-trials 3".split()
    row.update(run_perf(cmd, args.step_timeout))
    done = successes(server.port, model)
    if served is not None and done is not None and done > served:
        # NOTE: the server process's own CPU (not its stubs'), over every request of the run
        row["core_us"] = (server.cpu_seconds() - cpu) / (done - served) * 1e6
        row["stubs_us"] = (server.children_cpu_seconds() - stubs) / (done - served) * 1e6
    for member in members:
        c0, c1 = before[member], counts(server.port, member)
        if c0 and c1 and c1[1] > c0[1]:
            row[f"batch:{member}"] = (c1[0] - c0[0]) / (c1[1] - c0[1])
    return row


def successes(port: int, model: str) -> int | None:
    """Requests ``model`` answered successfully so far (its statistics), or None."""
    status, body = http_get(port, f"/v2/models/{model}/stats")
    try:
        stats = json.loads(body)["model_stats"] if status == 200 else []
        return sum(int(each["inference_stats"]["success"]["count"]) for each in stats)
    except (ValueError, KeyError, TypeError):
        return None


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(rows: list[dict]) -> None:
    print(f"\nthree-step pipeline (pre -> ONNX -> post), {os.cpu_count()} cores, perf_analyzer")
    print("(each variant's median round)")
    head = (
        f"{'variant':<13} {'conc':>4} {'infer/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'core µs/req':>11} {'stubs µs/req':>12}  mean batch"
    )
    print(head)
    print("-" * (len(head) + 40))
    for row in rows:
        batches = ", ".join(
            f"{key.split(':', 1)[1]} {value:.1f}"
            for key, value in row.items()
            if key.startswith("batch:")
        )
        print(
            f"{row['variant']:<13} {row['concurrency']:>4} {fmt(row.get('infer_s'), '8.0f')} "
            f"{fmt(row.get('p50_ms'), '7.2f')} {fmt(row.get('p99_ms'), '7.2f')} "
            f"{fmt(row.get('core_us'), '11.1f')} {fmt(row.get('stubs_us'), '12.1f')}  "
            f"{batches or 'n/a'}"
        )
    print()


def median_rows(rounds: list[list[dict]]) -> list[dict]:
    """Per variant and concurrency, the round with the median throughput."""
    medians = []
    for index, row in enumerate(rounds[0]):
        measured = [each[index] for each in rounds if each[index].get("infer_s")]
        if not measured:
            medians.append(row)
            continue
        measured.sort(key=lambda r: r["infer_s"])
        medians.append(measured[(len(measured) - 1) // 2])
    return medians


def print_ratios(rounds: list[list[dict]]) -> None:
    """Each variant against the all-in-one model measured in the same round: the median of
    the rounds' ratios, and their spread."""
    for conc in sorted({row["concurrency"] for row in rounds[0]}):
        for variant in ("ensemble", "ensemble-onnx", "bls"):
            ratios, batches, costs = [], [], []
            for rows in rounds:
                found = {row["variant"]: row for row in rows if row["concurrency"] == conc}
                ensemble, whole = found.get(variant, {}), found.get("all-in-one", {})
                if ensemble.get("infer_s") and whole.get("infer_s"):
                    ratios.append(ensemble["infer_s"] / whole["infer_s"])
                    batches.append(min(v for k, v in ensemble.items() if k.startswith("batch:")))
                if ensemble.get("core_us") and whole.get("core_us"):
                    costs.append(whole["core_us"] / ensemble["core_us"])
            if not ratios:
                continue
            ratio, batch = statistics.median(ratios), statistics.median(batches)
            line = f"c{conc}: {variant} / all-in-one = {ratio:.1%}"
            if len(ratios) > 1:
                line += f" (rounds: {', '.join(f'{r:.0%}' for r in ratios)})"
            line += f"; smallest member mean batch {batch:.1f}"
            if costs:
                line += f"; core cost all-in-one / {variant} {statistics.median(costs):.0%}"
            if conc >= 64 and variant == "ensemble":
                ok = ratio >= 0.8 and batch > 1
                line += f"  (target >= 80% with mean batch > 1: {'PASS' if ok else 'FAIL'})"
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--requests", type=int, default=1500, help="per measurement window")
    parser.add_argument("--rounds", type=int, default=3, help="every variant once per round")
    parser.add_argument("--step-timeout", type=float, default=120)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--http-workers",
        type=int,
        default=1,
        help="the server's front-end processes (repoman serve --http-workers); with more "
        "than one, core µs/req is the core process's alone and stubs µs/req counts the "
        "front-ends too",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        help="every model's max_batch_size, members, ensembles and all-in-one alike "
        "(default: as bundled, 16)",
    )
    args = parser.parse_args()
    if not PERF_ANALYZER.exists():
        sys.exit(f"perf_analyzer is missing: {PERF_ANALYZER} (make test installs it)")
    with tempfile.TemporaryDirectory(prefix="repoman-pipeline-") as tmp:
        repo = repository(Path(tmp), args.max_batch)
        cmd = [sys.executable, "-m", "repoman", "serve", "--model-repository", str(repo)]
        cmd += ["--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0"]
        cmd += ["--model-control-mode", "none", "--http-workers", str(args.http_workers)]
        server = Server("repoman", cmd)
        try:
            server.wait_ready()
            rounds = []
            for round_ in range(1, max(1, args.rounds) + 1):
                rows = []
                for conc in args.concurrency:
                    for variant in VARIANTS:
                        log(f"round {round_}: {variant} at c{conc}")
                        started = time.monotonic()
                        rows.append(measure(server, variant, conc, args))
                        log(f"  {time.monotonic() - started:.1f}s")
                rounds.append(rows)
        finally:
            server.stop()
    print_table(median_rows(rounds))
    print_ratios(rounds)
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2))


if __name__ == "__main__":
    main()
