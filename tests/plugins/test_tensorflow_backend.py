"""The TensorFlow SavedModel backend: real SavedModels in-process, over HTTP, and its lazy import."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tritonclient.http as httpclient

from repoman import BackendContext, BackendError, Batch, DataType, TensorConfig
from repoman.config import parse_model_config
from repoman.plugins import build_backend_registry, make_plugin_manager
from repoman.signature import compare
from tests.serverproc import ROOT

AFFINE = """
max_batch_size: 8
input [{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }]
"""
MIXED = """
max_batch_size: 0
input [{ name: "a" data_type: TYPE_INT32 dims: [ 2, 3 ] },
       { name: "b" data_type: TYPE_FP64 dims: [ 2, 1 ] }]
output [{ name: "scaled" data_type: TYPE_FP64 dims: [ 2, 3 ] },
        { name: "positive" data_type: TYPE_BOOL dims: [ 2, 3 ] }]
"""
STRINGS = """
max_batch_size: 4
input [{ name: "s" data_type: TYPE_STRING dims: [ 1 ] }]
output [{ name: "shout" data_type: TYPE_STRING dims: [ 1 ] },
        { name: "length" data_type: TYPE_INT32 dims: [ 1 ] }]
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Three small SavedModels: affine (plus a 'negate' signature), mixed dtypes, strings."""
    # NOTE: imported here, not at module level, so collecting the test suite stays fast.
    import tensorflow as tf

    root = tmp_path_factory.mktemp("savedmodels")
    spec = tf.TensorSpec

    class Affine(tf.Module):
        @tf.function(input_signature=[spec([None, 4], tf.float32, name="x")])
        def affine(self, x):
            return {"y": x * 2 + 1}

        @tf.function(input_signature=[spec([None, 4], tf.float32, name="x")])
        def negate(self, x):
            return {"z": -x}

    class Mixed(tf.Module):
        @tf.function(
            input_signature=[spec([2, 3], tf.int32, name="a"), spec([2, 1], tf.float64, name="b")]
        )
        def run(self, a, b):
            return {"scaled": tf.cast(a, tf.float64) * b, "positive": a > 0}

    class Strings(tf.Module):
        @tf.function(input_signature=[spec([None, 1], tf.string, name="s")])
        def run(self, s):
            return {"shout": tf.strings.upper(s) + b"!", "length": tf.strings.length(s)}

    affine, mixed, strings = Affine(), Mixed(), Strings()
    tf.saved_model.save(
        affine,
        str(root / "affine"),
        signatures={"serving_default": affine.affine, "negate": affine.negate},
    )
    tf.saved_model.save(mixed, str(root / "mixed"), signatures=mixed.run)
    tf.saved_model.save(strings, str(root / "strings"), signatures=strings.run)
    return root


@pytest.fixture(scope="module")
def registry():
    pm, report = make_plugin_manager()
    return build_backend_registry(pm, report)


def params(**values: str) -> str:
    """Config ``parameters`` entries in pbtxt."""
    return "".join(
        f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
        for key, value in values.items()
    )


def make_backend(registry, model_dir, body: str, *, load: bool = False):
    """A backend built the way the core builds one: config parsed, backend resolved from it."""
    text = 'name: "m"\nplatform: "tensorflow_savedmodel"\n' + textwrap.dedent(body)
    config = parse_model_config(text, filename="config.pbtxt", fmt="pbtxt", model_name="m")
    spec = registry.resolve(config)
    assert spec.name == "tensorflow"
    context = BackendContext(
        config=config, version=1, version_path=model_dir.parent, model_path=model_dir
    )
    backend = spec.factory(context)
    if load:
        backend.load()
    return backend


def describe(registry, model_dir, body: str):
    """What the backend's describe says of the model, for the config ``body`` picks."""
    text = 'name: "m"\nplatform: "tensorflow_savedmodel"\n' + textwrap.dedent(body)
    config = parse_model_config(text, filename="config.pbtxt", fmt="pbtxt", model_name="m")
    return registry.resolve(config).describe(model_dir, config.parameters)


def mismatches(registry, model_dir, body: str) -> str:
    """Every way the config disagrees with the SavedModel, as the core reports it."""
    text = 'name: "m"\nplatform: "tensorflow_savedmodel"\n' + textwrap.dedent(body)
    config = parse_model_config(text, filename="config.pbtxt", fmt="pbtxt", model_name="m")
    signature = registry.resolve(config).describe(model_dir, config.parameters)
    return "; ".join(f"{name}: {message}" for name, message in compare(config, signature))


def test_batch_of_requests_is_split_back(saved, registry):
    backend = make_backend(registry, saved / "affine", AFFINE, load=True)
    assert mismatches(registry, saved / "affine", AFFINE) == ""  # what the core checks
    signature = describe(registry, saved / "affine", AFFINE)
    assert signature.inputs == (TensorConfig("x", DataType.FP32, (-1, 4)),)
    assert signature.outputs == (TensorConfig("y", DataType.FP32, (-1, 4)),)
    requests = [
        {"x": np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) + start}
        for start, rows in ((0, 2), (100, 1), (200, 3))
    ]
    results = backend.execute(Batch(requests, output_names=("y",), input_names=("x",)))
    assert len(results) == 3
    for request, result in zip(requests, results, strict=True):
        assert result["y"].dtype == np.float32
        np.testing.assert_array_equal(result["y"], request["x"] * 2 + 1)
    backend.unload()


def test_two_inputs_of_different_types_without_batching(saved, registry):
    assert mismatches(registry, saved / "mixed", MIXED) == ""
    backend = make_backend(registry, saved / "mixed", MIXED, load=True)
    a = np.array([[1, -2, 3], [0, 5, -6]], dtype=np.int32)
    b = np.array([[0.5], [2.0]], dtype=np.float64)
    batch = Batch([{"a": a, "b": b}], ("scaled", "positive"), ("a", "b"), batching=False)
    (result,) = backend.execute(batch)
    np.testing.assert_array_equal(result["scaled"], a * b)
    assert result["scaled"].dtype == np.float64
    np.testing.assert_array_equal(result["positive"], a > 0)
    backend.unload()


def test_strings_in_and_out(saved, registry):
    backend = make_backend(registry, saved / "strings", STRINGS, load=True)
    requests = [
        {"s": np.array([[b"ab"], [b"tensor"]], dtype=object)},
        {"s": np.array([["\u00e9t\u00e9".encode()]], dtype=object)},
    ]
    first, second = backend.execute(Batch(requests, ("shout", "length"), ("s",)))
    assert first["shout"].dtype == object
    assert first["shout"].tolist() == [[b"AB!"], [b"TENSOR!"]]
    np.testing.assert_array_equal(first["length"], [[2], [6]])
    assert second["shout"].tolist() == [["\u00e9T\u00e9!".encode()]]  # upper() is ASCII-only
    np.testing.assert_array_equal(second["length"], [[5]])  # bytes, not characters


def test_signature_name_selects_another_signature(saved, registry):
    body = AFFINE.replace('"y"', '"z"') + params(signature_name="negate")
    backend = make_backend(registry, saved / "affine", body, load=True)
    x = np.ones((2, 4), dtype=np.float32)
    (result,) = backend.execute(Batch([{"x": x}], ("z",), ("x",)))
    np.testing.assert_array_equal(result["z"], -x)
    backend.unload()
    # the backend loads again after an unload
    backend.load()
    (result,) = backend.execute(Batch([{"x": x}], ("z",), ("x",)))
    np.testing.assert_array_equal(result["z"], -x)
    # the described signature is the one the config picks, too
    assert describe(registry, saved / "affine", body).outputs == (
        TensorConfig("z", DataType.FP32, (-1, 4)),
    )


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (AFFINE.replace('"x"', '"w"'), ["input[0].name", "inputs (x)", "'w'", "needs input(s) x"]),
        (AFFINE.replace('"y"', '"z"'), ["output[0].name", "outputs (y)", "'z'"]),
        (
            AFFINE.replace("FP32", "FP64", 1),
            ["input[0].data_type", "the model says TYPE_FP32", "the config says TYPE_FP64"],
        ),
        (AFFINE.replace("[ 4 ] }]\noutput", "[ 2, 2 ] }]\noutput"), ["[4]", "[2, 2]"]),
    ],
    ids=["missing-input", "missing-output", "dtype", "rank"],
)
def test_config_disagreeing_with_the_signature_is_found_before_loading(
    saved, registry, body, words
):
    found = mismatches(registry, saved / "affine", body)
    for word in words:
        assert word in found


def test_an_unknown_signature_name_fails_to_describe_and_to_load(saved, registry):
    body = AFFINE + params(signature_name="nope")
    with pytest.raises(BackendError, match=r"signature 'nope'.*negate, serving_default"):
        describe(registry, saved / "affine", body)
    backend = make_backend(registry, saved / "affine", body)
    with pytest.raises(BackendError, match=r"signature 'nope'.*negate, serving_default"):
        backend.load()


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("intra_op_thread_count", "many", "expected an integer, found 'many'"),
        ("inter_op_thread_count", "-2", "expected an integer >= 0, found -2"),
        ("allow_growth", "yes", "expected true or false, found 'yes'"),
        ("per_process_gpu_memory_fraction", "1.5", "expected a number in (0, 1], found '1.5'"),
    ],
)
def test_bad_parameter_values_are_refused(saved, registry, name, value, expected):
    backend = make_backend(registry, saved / "affine", AFFINE + params(**{name: value}))
    with pytest.raises(ValueError, match=re.escape(f"parameter {name}: {expected}")):
        backend.load()


@pytest.mark.parametrize("raw", ["0.5\n", " 0.5", "\u0660.\u0665", "1_0e-1", "0x1p-1"])
def test_the_memory_fraction_is_a_plain_ascii_number(raw):
    from repoman_tensorflow.runtime import RuntimeSettings

    with pytest.raises(ValueError, match="per_process_gpu_memory_fraction: expected a number"):
        RuntimeSettings.from_parameters({"per_process_gpu_memory_fraction": raw})
    fraction = RuntimeSettings.from_parameters({"per_process_gpu_memory_fraction": ".25"})
    assert fraction.memory_fraction == 0.25


def test_knobs_after_the_runtime_started_warn_and_gpu_knobs_are_accepted(saved, registry, caplog):
    body = AFFINE + params(
        intra_op_thread_count="3", allow_growth="true", per_process_gpu_memory_fraction="0.5"
    )
    with caplog.at_level(logging.DEBUG, logger="repoman_tensorflow"):
        backend = make_backend(registry, saved / "affine", body, load=True)
    # NOTE: building the SavedModels already started TensorFlow's runtime in this process.
    assert "intra_op_thread_count=3 has no effect" in caplog.text
    assert "TensorFlow sees no GPU" in caplog.text
    backend.unload()


def test_every_data_type_has_a_tensorflow_dtype(saved):
    from repoman_tensorflow.backend import TF_DTYPES

    assert set(TF_DTYPES) == set(DataType)
    for member, dtype in TF_DTYPES.items():
        if member is DataType.BYTES:
            assert dtype.name == "string"
        else:
            assert np.dtype(dtype.as_numpy_dtype) == member.numpy_dtype, member


def test_describe_reads_the_default_signature(saved, registry):
    (spec,) = [s for s in registry.specs() if s.name == "tensorflow"]
    assert spec.default_model_filename == "model.savedmodel"
    affine = spec.describe(saved / "affine", {})
    assert affine.inputs == (TensorConfig("x", DataType.FP32, (-1, 4)),)
    assert affine.outputs == (TensorConfig("y", DataType.FP32, (-1, 4)),)
    assert affine.batching
    mixed = spec.describe(saved / "mixed", {})
    assert [(t.name, t.data_type, t.dims) for t in mixed.inputs] == [
        ("a", DataType.INT32, (2, 3)),
        ("b", DataType.FP64, (2, 1)),
    ]
    assert {t.name: t.data_type for t in mixed.outputs} == {
        "positive": DataType.BOOL,
        "scaled": DataType.FP64,
    }
    assert not mixed.batching
    strings = spec.describe(saved / "strings", {})
    assert strings.inputs == (TensorConfig("s", DataType.BYTES, (-1, 1)),)
    assert strings.batching


def test_served_over_http(saved, tmp_path, server_factory):
    repo = tmp_path / "repo"
    (repo / "tfmodel").mkdir(parents=True)
    (repo / "tfmodel" / "config.pbtxt").write_text(
        'platform: "tensorflow_savedmodel"\n' + AFFINE + params(intra_op_thread_count="1")
    )
    shutil.copytree(saved / "affine", repo / "tfmodel" / "1" / "model.savedmodel")
    # no config at all: completed from the SavedModel's own signature
    shutil.copytree(saved / "strings", repo / "tfstrings" / "1" / "model.savedmodel")
    server = server_factory(repo)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    words = np.array([[b"hi"], [b"there"]], dtype=object)
    with httpclient.InferenceServerClient(server.address) as client:
        assert client.is_model_ready("tfmodel"), server.log()
        assert client.is_model_ready("tfstrings"), server.log()
        for binary in (True, False):
            inp = httpclient.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            out = httpclient.InferRequestedOutput("y", binary_data=binary)
            result = client.infer("tfmodel", [inp], outputs=[out])
            np.testing.assert_array_equal(result.as_numpy("y"), x * 2 + 1)

            inp = httpclient.InferInput("s", list(words.shape), "BYTES")
            inp.set_data_from_numpy(words, binary_data=binary)
            outs = [
                httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("shout", "length")
            ]
            result = client.infer("tfstrings", [inp], outputs=outs)
            shout = result.as_numpy("shout").ravel().tolist()
            assert [v if isinstance(v, bytes) else v.encode() for v in shout] == [b"HI!", b"THERE!"]
            np.testing.assert_array_equal(result.as_numpy("length"), [[2], [5]])


def test_plugin_registry_does_not_import_tensorflow():
    code = textwrap.dedent(
        """
        import sys
        from repoman.cli import main
        from repoman.plugins import build_backend_registry, make_plugin_manager

        pm, report = make_plugin_manager()
        assert "tensorflow" in build_backend_registry(pm, report), report
        main(["plugins"])
        assert "tensorflow" not in sys.modules, "the registry imported tensorflow"
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tensorflow_savedmodel" in done.stdout


def test_without_tensorflow_the_plugin_loads_and_a_tf_model_names_the_extra(tmp_path, monkeypatch):
    # NOTE: None in sys.modules makes `import tensorflow` fail as it does where the
    # [tensorflow] extra is not installed (the wheel test checks a real such install).
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    for name in ("repoman_tensorflow.backend", "repoman_tensorflow.runtime"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    pm, report = make_plugin_manager()
    registry = build_backend_registry(pm, report)
    assert "repoman_tensorflow" not in report.failed and "tensorflow" in registry
    config = parse_model_config(
        'platform: "tensorflow_savedmodel"\n' + AFFINE,
        filename="tf/config.pbtxt", fmt="pbtxt", model_name="tf",
    )
    spec = registry.resolve(config)
    for call in (lambda: spec.factory(None), lambda: spec.describe(tmp_path, {})):
        with pytest.raises(Exception, match=re.escape(
            "this backend needs the package 'tensorflow', which is not installed; "
            "install it with: pip install 'repoman[tensorflow]'"
        )):
            call()
