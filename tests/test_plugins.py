"""Plugin discovery for real: a pip-installed entry point, drop-in files, blocking, breakage."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap
from types import ModuleType

import numpy as np
import pytest
import tritonclient.http as httpclient

from repoman import hookimpl, hookspecs
from repoman.plugins import build_backend_registry, make_plugin_manager
from tests.conftest import BUNDLED, ROOT
from tests.fakes import EchoBackend, write_model

GUIDE = ROOT / "docs" / "plugins.md"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """The third-party package in tests/thirdparty_plugin, pip-installed into a folder."""
    target = tmp_path_factory.mktemp("site")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT / "tests" / "thirdparty_plugin"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return target


def test_a_pip_installed_entry_point_plugin_serves_a_model(
    tmp_path, installed_plugin, server_factory
):
    repo = tmp_path / "repo"
    write_model(
        repo,
        "twice",
        backend="doubler",
        extra='parameters { key: "factor" value: { string_value: "3" } }\n',
    )
    server = server_factory(repo, env={"PYTHONPATH": str(installed_plugin)})
    with httpclient.InferenceServerClient(server.address) as client:
        inp = httpclient.InferInput("INPUT", [1, 4], "FP32")
        inp.set_data_from_numpy(np.arange(4, dtype=np.float32).reshape(1, 4))
        result = client.infer("twice", [inp]).as_numpy("OUTPUT")
    assert result.tolist() == [[0.0, 3.0, 6.0, 9.0]]
    listing = subprocess.run(
        [sys.executable, "-m", "repoman", "plugins"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={"PYTHONPATH": str(installed_plugin), "PATH": "/usr/bin:/bin"},
    )
    assert re.search(r"doubler\s+platforms: doubler\s+plugin: doubler", listing.stdout), (
        listing.stdout
    )


def test_a_dropped_in_file_is_a_plugin(tmp_path, server_factory):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    source = (ROOT / "tests" / "thirdparty_plugin" / "repoman_doubler" / "__init__.py").read_text()
    (plugins / "my_doubler.py").write_text(source)
    repo = tmp_path / "repo"
    write_model(repo, "twice", backend="doubler")
    server = server_factory(repo, "--plugins-dir", str(plugins))
    with httpclient.InferenceServerClient(server.address) as client:
        assert client.is_model_ready("twice")


def test_the_repository_sibling_plugins_folder_is_the_default(tmp_path, server_factory):
    (tmp_path / "plugins").mkdir()
    source = (ROOT / "tests" / "thirdparty_plugin" / "repoman_doubler" / "__init__.py").read_text()
    (tmp_path / "plugins" / "sibling_doubler.py").write_text(source)
    repo = tmp_path / "model_repository"
    write_model(repo, "twice", backend="doubler")
    server = server_factory(repo)
    with httpclient.InferenceServerClient(server.address) as client:
        assert client.is_model_ready("twice")


def test_a_broken_plugin_is_named_and_the_server_still_serves(tmp_path, server_factory):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken.py").write_text("raise ImportError('this plugin needs a missing library')\n")
    (plugins / "badhook.py").write_text(
        "from repoman import hookimpl\n\n@hookimpl\ndef repoman_register_backends(registry):\n"
        "    raise RuntimeError('cannot register')\n"
    )
    server = server_factory(BUNDLED, "--plugins-dir", str(plugins))
    with httpclient.InferenceServerClient(server.address) as client:
        assert client.is_model_ready("digits")
    log = server.log()
    assert "plugin broken could not be loaded" in log and "missing library" in log
    assert "plugin badhook" in log and "cannot register" in log
    listing = subprocess.run(
        [sys.executable, "-m", "repoman", "plugins", "--plugins-dir", str(plugins)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert listing.returncode == 1
    assert "broken (FAILED" in listing.stdout and "onnxruntime" in listing.stdout


def test_a_blocked_plugin_is_not_loaded(tmp_path, server_factory):
    server = server_factory(BUNDLED, "--block-plugin", "onnxruntime")
    status, answer = server.request("POST", "/v2/models/digits/infer", b"{}")
    assert status == 503 and "onnxruntime_onnx" in answer["error"]
    pm, report = make_plugin_manager(blocked=["onnxruntime"])
    assert "onnxruntime" not in build_backend_registry(pm, report)
    assert report.blocked == ["onnxruntime"]


def plugin_module(name: str, hook) -> ModuleType:
    """A plugin named ``name`` whose ``repoman_register_backends`` is ``hook``."""
    module = ModuleType(name)
    module.repoman_register_backends = hookimpl(hook)  # type: ignore[attr-defined]
    return module


def registering(backend: str):
    def hook(registry) -> None:
        registry.register(backend, EchoBackend, platforms=[f"{backend}_platform"])

    return hook


def raising(registry) -> None:
    raise RuntimeError("cannot register")


@pytest.mark.parametrize("order", ["raising first", "raising last"])
def test_a_raising_register_hook_is_reported_and_the_others_still_register(order):
    plugins = [
        plugin_module("first", registering("one")),
        plugin_module("second", registering("two")),
    ]
    bad = plugin_module("badhook", raising)
    plugins = [bad, *plugins] if order == "raising first" else [*plugins, bad]
    pm, report = make_plugin_manager(entry_points=False, extra=plugins)
    registry = build_backend_registry(pm, report)
    assert report.failed == {"badhook": "repoman_register_backends failed: cannot register"}
    assert [(spec.name, spec.plugin) for spec in registry.specs()] == [
        ("one", "first"),
        ("two", "second"),
    ]


def test_a_backend_name_taken_by_another_plugin_fails_the_second_plugin_naming_the_first():
    plugins = [
        plugin_module("first", registering("echo")),
        plugin_module("second", registering("echo")),
    ]
    pm, report = make_plugin_manager(entry_points=False, extra=plugins)
    registry = build_backend_registry(pm, report)
    assert [(spec.name, spec.plugin) for spec in registry.specs()] == [("echo", "first")]
    assert report.failed == {
        "second": "repoman_register_backends failed: backend 'echo' is already registered by first"
    }


def test_the_built_in_backends_import_their_libraries_only_when_a_model_needs_them():
    """Registering and listing every built-in backend imports no backend module; describing
    an ONNX model imports onnxruntime, and only it."""
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from repoman.cli import main
        from repoman.plugins import build_backend_registry, make_plugin_manager

        HEAVY = ("onnxruntime", "tensorflow", "repoman_onnxruntime.backend",
                 "repoman_tensorflow.backend", "repoman_python.backend")
        pm, report = make_plugin_manager()
        registry = build_backend_registry(pm, report)
        assert {{"onnxruntime", "tensorflow", "python"}} <= {{s.name for s in registry.specs()}}, report
        main(["plugins"])
        assert not [m for m in HEAVY if m in sys.modules], [m for m in HEAVY if m in sys.modules]
        [onnx] = [s for s in registry.specs() if s.name == "onnxruntime"]
        onnx.describe(Path({str(BUNDLED / "digits" / "1" / "model.onnx")!r}), {{}})
        assert [m for m in HEAVY if m in sys.modules] == ["onnxruntime", "repoman_onnxruntime.backend"]
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "onnxruntime_onnx" in done.stdout and "tensorflow_savedmodel" in done.stdout


def test_every_hook_is_in_the_plugin_guide_with_its_signature():
    guide = GUIDE.read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("repoman_")]
    assert hooks, "no hook specifications found"
    for name in hooks:
        signature = inspect.signature(getattr(hookspecs, name))
        params = ", ".join(f"{p.name}: {p.annotation}" for p in signature.parameters.values())
        assert f"{name}({params})" in guide, f"{name}({params}) is not in {GUIDE}"


def test_the_guide_example_backend_runs(tmp_path, server_factory):
    """The worked example in the guide is real code: extract it, drop it in, serve with it."""
    guide = GUIDE.read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, flags=re.S)
    example = next(b for b in blocks if "repoman_register_backends" in b and "class " in b)
    assert len(example.strip().splitlines()) <= 40
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "example.py").write_text(example)
    repo = tmp_path / "repo"
    write_model(
        repo,
        "scaled",
        backend="scale",
        extra='parameters { key: "factor" value: { string_value: "0.5" } }\n',
    )
    server = server_factory(repo, "--plugins-dir", str(plugins))
    with httpclient.InferenceServerClient(server.address) as client:
        inp = httpclient.InferInput("INPUT", [2, 4], "FP32")
        inp.set_data_from_numpy(np.full((2, 4), 4.0, dtype=np.float32))
        assert client.infer("scaled", [inp]).as_numpy("OUTPUT").tolist() == [[2.0] * 4] * 2
