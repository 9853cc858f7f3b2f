"""The resolver: configs auto-completed from the model file (never overriding what the user
wrote) and checked against it before anything loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tritonclient.http as httpclient

from repoman.backends import BackendRegistry
from repoman.config import load_model_config
from repoman.errors import ConfigError, RepomanError
from repoman.plugins import build_backend_registry, make_plugin_manager
from repoman.source.resolve import Resolver
from repoman.source.scan import ScanOptions, read_model
from tests.conftest import BUNDLED, ROOT

DIGITS_ONNX = BUNDLED / "digits" / "1" / "model.onnx"


@pytest.fixture(scope="module")
def completer():
    pm, report = make_plugin_manager()
    return Resolver(build_backend_registry(pm, report))


def model_dir(tmp_path, config: str | None = None, name: str = "auto"):
    folder = tmp_path / name
    (folder / "1").mkdir(parents=True)
    shutil.copy(DIGITS_ONNX, folder / "1" / "model.onnx")
    if config is not None:
        (folder / "config.pbtxt").write_text(config)
    return folder


def resolve(folder, resolver):
    return resolver.resolve(read_model(folder, ScanOptions(), now=0.0))


def load(folder, resolver):
    """The model's config as the server would serve it, or the error it would report."""
    resolved = resolve(folder, resolver)
    if resolved.error is not None:
        raise resolved.error
    return resolved.config


def test_a_folder_with_only_a_model_file_gets_a_whole_config(tmp_path, completer):
    config = load(model_dir(tmp_path), completer)
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == 4 and config.dynamic_batching is not None
    assert [(t.name, t.data_type.value, t.dims) for t in config.inputs] == [
        ("pixels", "FP32", (64,))
    ]
    assert [(t.name, t.dims) for t in config.outputs] == [("probabilities", (10,)), ("label", (1,))]


def test_a_partial_config_is_completed_and_keeps_what_the_user_wrote(tmp_path, completer):
    folder = model_dir(
        tmp_path, 'platform: "onnxruntime_onnx"\nmax_batch_size: 16\ninput [{ name: "pixels" }]\n'
    )
    config = load(folder, completer)
    assert config.max_batch_size == 16 and config.platform == "onnxruntime_onnx"
    assert config.dynamic_batching is None  # the user set max_batch_size: nothing added
    assert config.inputs[0].dims == (64,) and config.inputs[0].data_type.value == "FP32"
    assert {t.name for t in config.outputs} == {"probabilities", "label"}


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ('input [{ name: "pixels" data_type: TYPE_INT32 }]\n', ["TYPE_FP32", "TYPE_INT32"]),
        ('input [{ name: "pixels" dims: [ 32 ] }]\n', ["[64]", "[32]"]),
        ('input [{ name: "image" }]\n', ["pixels", "'image'"]),
    ],
    ids=["dtype-conflict", "dims-conflict", "unknown-name"],
)
def test_conflicts_are_errors_showing_both_values(tmp_path, completer, config, words):
    folder = model_dir(tmp_path, 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n' + config)
    with pytest.raises(ConfigError) as caught:
        load(folder, completer)
    for word in words:
        assert word in str(caught.value)


def test_a_complete_config_is_left_alone(tmp_path, completer):
    text = (BUNDLED / "digits" / "config.pbtxt").read_text()
    folder = model_dir(tmp_path, text, name="digits")
    assert load(folder, completer).as_dict() == load_model_config(BUNDLED / "digits").as_dict()


def test_no_model_file_a_backend_knows_is_a_clear_error(tmp_path, completer):
    folder = tmp_path / "mystery"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "weights.bin").write_bytes(b"?")
    with pytest.raises(ConfigError, match=r"model\.onnx"):
        load(folder, completer)


def test_repoman_config_prints_a_config_that_loads(tmp_path):
    folder = model_dir(tmp_path)
    for fmt, name in (("pbtxt", "config.pbtxt"), ("yaml", "config.yaml")):
        run = subprocess.run(
            [sys.executable, "-m", "repoman", "config", str(folder), "--format", fmt],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        written = tmp_path / f"copy_{fmt}" / "auto"
        written.mkdir(parents=True)
        (written / name).write_text(run.stdout)
        assert load_model_config(written).inputs[0].name == "pixels"


def test_a_config_less_model_is_served(tmp_path, server_factory):
    repo = tmp_path / "repo"
    model_dir(repo, name="bare_onnx")
    server = server_factory(repo)
    with httpclient.InferenceServerClient(server.address) as client:
        config = client.get_model_config("bare_onnx")
        assert config["max_batch_size"] == 4 and config["input"][0]["dims"] == [64]
        inp = httpclient.InferInput("pixels", [2, 64], "FP32")
        inp.set_data_from_numpy(np.zeros((2, 64), dtype=np.float32))
        assert client.infer("bare_onnx", [inp]).as_numpy("label").shape == (2, 1)


def test_auto_complete_can_be_turned_off(tmp_path, server_factory):
    repo = tmp_path / "repo"
    model_dir(repo, name="bare_onnx")
    server = server_factory(repo, "--disable-auto-complete-config")
    status, answer = server.request("POST", "/v2/models/bare_onnx/infer", b"{}")
    assert status == 503 and "config.pbtxt" in answer["error"]


def test_a_version_disagreeing_with_its_model_file_fails_before_loading(tmp_path, completer):
    text = (
        (BUNDLED / "digits" / "config.pbtxt").read_text().replace('name: "pixels"', 'name: "image"')
    )
    folder = model_dir(tmp_path, text, name="digits")
    resolved = resolve(folder, completer)
    assert resolved.error is None and resolved.wanted == (1,)
    (aspired,) = resolved.aspired().versions
    assert (
        "input[0].name: expected one of the model's inputs (pixels), found 'image'" in aspired.error
    )
    assert "the model needs input(s) pixels" in aspired.error


def test_a_model_file_is_described_once_while_it_does_not_change(tmp_path):
    calls = []
    pm, report = make_plugin_manager()
    onnx = next(s for s in build_backend_registry(pm, report).specs() if s.name == "onnxruntime")

    def describe(path, parameters):
        calls.append(path)
        return onnx.describe(path, parameters)

    registry = BackendRegistry()
    registry.register(
        "onnxruntime",
        onnx.factory,
        platforms=onnx.platforms,
        default_model_filename=onnx.default_model_filename,
        describe=describe,
    )
    counting = Resolver(registry)
    folder = model_dir(tmp_path)
    for _ in range(3):
        assert load(folder, counting).inputs[0].name == "pixels"
    assert len(calls) == 1
    os.utime(folder / "1" / "model.onnx", ns=(1, 1))
    load(folder, counting)
    assert len(calls) == 2


def test_a_symlink_out_of_the_repository_fails_that_version(tmp_path, completer):
    folder = model_dir(tmp_path / "repo")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (folder / "2").symlink_to(outside)
    resolved = resolve(folder, completer)
    assert isinstance(resolved.versions[2].error, RepomanError)
    assert "leads out of the repository" in str(resolved.versions[2].error)


def test_a_model_file_linked_from_elsewhere_in_the_repository_is_never_read(tmp_path):
    # NOTE: python's describe imports model.py: reading it would run it.
    repo = tmp_path / "repo"
    marker = tmp_path / "ran"
    (repo / "shared").mkdir(parents=True)
    (repo / "shared" / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    folder = repo / "m"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").symlink_to(repo / "shared" / "evil.py")
    (folder / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "x" data_type: TYPE_FP32 dims: [ 1 ] }]\n'
        'output [{ name: "y" data_type: TYPE_FP32 dims: [ 1 ] }]\n'
    )
    pm, report = make_plugin_manager()
    for auto_complete in (True, False):
        resolver = Resolver(build_backend_registry(pm, report), auto_complete=auto_complete)
        resolved = resolve(folder, resolver)
        assert "'model.py' leads out of" in str(resolved.versions[1].error)
    (folder / "config.pbtxt").unlink()  # auto-complete reads the model file too
    resolved = resolve(folder, Resolver(build_backend_registry(pm, report)))
    assert "'model.py' leads out of" in str(resolved.error)
    assert not marker.exists()


def test_load_overrides_do_not_pile_up_in_the_resolvers_caches(tmp_path):
    # NOTE: each load request may send a different config of up to 1 MiB; keeping them
    # as cache keys let anyone who may load grow the server without end.
    pm, report = make_plugin_manager()
    resolver = Resolver(build_backend_registry(pm, report))
    folder = read_model(model_dir(tmp_path, name="digits"), ScanOptions(), now=0.0)
    own = load(model_dir(tmp_path / "b", name="digits"), resolver)
    config = json.loads(json.dumps(own.as_dict()))
    for index in range(3):
        config["parameters"] = {"pad": {"string_value": "x" * 100_000 + str(index)}}
        resolved = resolver.resolve(folder, override=json.dumps(config))
        assert resolved.error is None and resolved.versions[1].error is None
    assert all(override is None for _, override, _ in resolver._resolved)
    assert max(len(repr(key)) for key in resolver._described) < 1000
    assert len(resolver._described) == 4  # the folder's own config, and one per override
