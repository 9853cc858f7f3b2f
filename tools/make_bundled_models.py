"""Train the bundled example models on real data and export them to ONNX.

Reproducible (fixed seeds, fixed 75/25 train/test split with ``random_state=0``). It writes:

* ``model_repository/digits/1/model.onnx`` -- an MLP classifier trained on scikit-learn's bundled
  ``load_digits`` (8x8 images, pixel values 0..16).
  Input ``pixels`` FP32 [batch, 64] (raw 0..16 values, standardisation happens inside the graph);
  outputs ``probabilities`` FP32 [batch, 10] and ``label`` INT64 [batch, 1].
* ``model_repository/iris/1/model.onnx`` -- a multinomial logistic regression on ``load_iris``.
  Input ``features`` FP32 [batch, 4]; outputs ``probabilities`` FP32 [batch, 3] and
  ``label`` INT64 [batch, 1].
* ``examples/digits_request.json`` -- a KServe v2 JSON inference request for one held-back image.
* ``examples/heldout.json`` -- correctly (and confidently) classified held-back test samples with
  their true labels, plus each model's test-split accuracy.

The ONNX graphs are written by hand with ``onnx.helper`` from the trained weights (Sub/Div for the
scaler, MatMul/Add/Relu per layer, Softmax, ArgMax), so tensor names are clean and the batch
dimension is dynamic. Each graph is checked with onnxruntime against the scikit-learn predictions
on the whole test split.

Usage: ``.venv/bin/python tools/make_bundled_models.py [--repo DIR] [--examples DIR]``
Requires the ``models`` extra (onnx, scikit-learn) plus onnxruntime.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parent.parent
SEED = 0
TEST_SIZE = 0.25
OPSET = 17
IR_VERSION = 8  # understood by every onnxruntime >= 1.10
MIN_CONFIDENCE = 0.9  # held-out examples must be classified correctly with at least this prob.


def build_onnx(
    name: str,
    input_name: str,
    scaler: StandardScaler,
    layers: list[tuple[np.ndarray, np.ndarray]],
    doc: str,
) -> onnx.ModelProto:
    """Standardise -> (MatMul, Add, Relu)* -> MatMul, Add -> Softmax; ArgMax -> label."""
    n_in = layers[0][0].shape[0]
    n_out = layers[-1][0].shape[1]
    inits = [
        numpy_helper.from_array(scaler.mean_.astype(np.float32), "scaler_mean"),
        numpy_helper.from_array(scaler.scale_.astype(np.float32), "scaler_scale"),
    ]
    nodes = [
        helper.make_node("Sub", [input_name, "scaler_mean"], ["centered"], name="center"),
        helper.make_node("Div", ["centered", "scaler_scale"], ["scaled"], name="scale"),
    ]
    x = "scaled"
    for i, (w, b) in enumerate(layers):
        last = i == len(layers) - 1
        inits += [
            numpy_helper.from_array(w.astype(np.float32), f"W{i}"),
            numpy_helper.from_array(b.astype(np.float32), f"B{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [x, f"W{i}"], [f"mm{i}"], name=f"matmul{i}"),
            helper.make_node("Add", [f"mm{i}", f"B{i}"], [f"z{i}"], name=f"bias{i}"),
        ]
        x = f"z{i}"
        if not last:
            nodes.append(helper.make_node("Relu", [x], [f"h{i}"], name=f"relu{i}"))
            x = f"h{i}"
    nodes += [
        helper.make_node("Softmax", [x], ["probabilities"], name="softmax", axis=1),
        helper.make_node("ArgMax", [x], ["label"], name="argmax", axis=1, keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", n_in])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_out]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch", 1]),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="repoman/tools/make_bundled_models.py",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def verify(model: onnx.ModelProto, input_name: str, pipe: Pipeline, x_test: np.ndarray) -> None:
    """Run the ONNX graph with onnxruntime and compare against scikit-learn on the test split."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    probs, label = sess.run(["probabilities", "label"], {input_name: x_test.astype(np.float32)})
    assert probs.dtype == np.float32 and label.dtype == np.int64
    assert label.shape == (len(x_test), 1), label.shape
    sk_probs = pipe.predict_proba(x_test)
    sk_label = pipe.predict(x_test)
    max_diff = float(np.abs(probs - sk_probs).max())
    assert max_diff < 1e-4, f"probabilities differ from scikit-learn by {max_diff}"
    mismatches = int((label[:, 0] != sk_label).sum())
    assert mismatches == 0, f"{mismatches} labels differ from scikit-learn"
    # One row at a time too: the dynamic batch dimension must accept batch 1.
    (one,) = sess.run(["label"], {input_name: x_test[:1].astype(np.float32)})
    assert one.shape == (1, 1) and one[0, 0] == sk_label[0]
    print(
        f"  onnxruntime == scikit-learn on all {len(x_test)} test rows "
        f"(max |dprob| = {max_diff:.2e})"
    )


def pick_heldout(pipe: Pipeline, x: np.ndarray, y: np.ndarray, n: int) -> list[int]:
    """Indices of confidently, correctly classified test rows, round-robin over the classes."""
    probs = pipe.predict_proba(x)
    pred = probs.argmax(axis=1)
    good = (pred == y) & (probs.max(axis=1) >= MIN_CONFIDENCE)
    per_class = {c: [int(i) for i in np.flatnonzero(good & (y == c))] for c in np.unique(y)}
    picked: list[int] = []
    while len(picked) < n:
        before = len(picked)
        for c in sorted(per_class):
            if per_class[c] and len(picked) < n:
                picked.append(per_class[c].pop(0))
        if len(picked) == before:
            raise RuntimeError("not enough correctly classified test samples")
    return picked


def save(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    print(
        f"  wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
        f"({path.stat().st_size / 1024:.1f} KiB)"
    )


def make_digits(repo: Path) -> tuple[dict, list[float], int]:
    print("digits: training MLP (64 -> 64 relu -> 10 softmax) on load_digits ...")
    data = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        data.data, data.target, test_size=TEST_SIZE, random_state=SEED, stratify=data.target
    )
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            (
                "mlp",
                MLPClassifier(
                    hidden_layer_sizes=(64,), alpha=1.0, max_iter=1000, random_state=SEED
                ),
            ),
        ]
    ).fit(x_tr, y_tr)
    acc = float(pipe.score(x_te, y_te))
    print(f"  train rows {len(x_tr)}, test rows {len(x_te)}, held-out accuracy {acc:.4f}")
    mlp = pipe.named_steps["mlp"]
    model = build_onnx(
        "digits",
        "pixels",
        pipe.named_steps["scale"],
        list(zip(mlp.coefs_, mlp.intercepts_, strict=True)),
        f"MLP digit classifier (sklearn load_digits, 8x8 pixels 0..16); test accuracy {acc:.4f}",
    )
    verify(model, "pixels", pipe, x_te)
    save(model, repo / "digits" / "1" / "model.onnx")
    idx = pick_heldout(pipe, x_te, y_te, 20)
    pixels = [[float(v) for v in x_te[i]] for i in idx]
    labels = [int(y_te[i]) for i in idx]
    heldout = {
        "pixels": pixels,
        "labels": labels,
        "accuracy": round(acc, 4),
        "test_rows": len(x_te),
    }
    return heldout, pixels[0], labels[0]


def make_iris(repo: Path) -> dict:
    print("iris: training multinomial logistic regression on load_iris ...")
    data = load_iris()
    x_tr, x_te, y_tr, y_te = train_test_split(
        data.data, data.target, test_size=TEST_SIZE, random_state=SEED, stratify=data.target
    )
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            ("logreg", LogisticRegression(C=10.0, max_iter=1000, random_state=SEED)),
        ]
    ).fit(x_tr, y_tr)
    acc = float(pipe.score(x_te, y_te))
    print(f"  train rows {len(x_tr)}, test rows {len(x_te)}, held-out accuracy {acc:.4f}")
    lr = pipe.named_steps["logreg"]
    assert lr.coef_.shape == (3, 4), "expected a multinomial (one row per class) model"
    model = build_onnx(
        "iris",
        "features",
        pipe.named_steps["scale"],
        [(lr.coef_.T, lr.intercept_)],
        f"Logistic-regression iris classifier (sklearn load_iris); test accuracy {acc:.4f}",
    )
    verify(model, "features", pipe, x_te)
    save(model, repo / "iris" / "1" / "model.onnx")
    idx = pick_heldout(pipe, x_te, y_te, 10)
    return {
        "features": [[float(v) for v in x_te[i]] for i in idx],
        "labels": [int(y_te[i]) for i in idx],
        "classes": [str(n) for n in data.target_names],
        "accuracy": round(acc, 4),
        "test_rows": len(x_te),
    }


def dump_compact(obj: dict) -> str:
    """JSON with one line per sample row: readable in a diff, still small."""
    lines = ["{"]
    for i, (model, fields) in enumerate(obj.items()):
        lines.append(f' "{model}": {{')
        for j, (key, value) in enumerate(fields.items()):
            comma = "," if j < len(fields) - 1 else ""
            if isinstance(value, list) and value and isinstance(value[0], list):
                rows = ",\n   ".join(json.dumps(row) for row in value)
                lines.append(f'  "{key}": [\n   {rows}\n  ]{comma}')
            else:
                lines.append(f'  "{key}": {json.dumps(value)}{comma}')
        lines.append(" }" + ("," if i < len(obj) - 1 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--repo",
        type=Path,
        default=ROOT / "model_repository",
        help="model repository to write <model>/1/model.onnx into",
    )
    ap.add_argument(
        "--examples",
        type=Path,
        default=ROOT / "examples",
        help="directory for digits_request.json and heldout.json",
    )
    args = ap.parse_args()
    np.random.seed(SEED)

    digits, pixels, label = make_digits(args.repo)
    iris = make_iris(args.repo)

    args.examples.mkdir(parents=True, exist_ok=True)
    request = {
        "id": f"digits-heldout-label-{label}",
        "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": pixels}],
    }
    (args.examples / "digits_request.json").write_text(json.dumps(request) + "\n")
    (args.examples / "heldout.json").write_text(dump_compact({"digits": digits, "iris": iris}))
    print(
        f"examples: wrote digits_request.json (true label {label}) and heldout.json "
        f"({len(digits['labels'])} digits, {len(iris['labels'])} iris) in {args.examples}"
    )
    print(f"done: digits accuracy {digits['accuracy']:.4f}, iris accuracy {iris['accuracy']:.4f}")


if __name__ == "__main__":
    main()
