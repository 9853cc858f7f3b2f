"""The distributions: build the sdist and (from it) the wheel, install the wheel into a fresh
virtualenv, serve the bundled repository from there. Nothing here uses the editable install.

Slow by nature (a build and a real `pip install`, from pip's cache when it has the packages);
each step prints how long it took. Skips, saying why, only when the package registry cannot
be reached.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import repoman
from tests.serverproc import ROOT, start_server

BUNDLED = ROOT / "model_repository"
# NOTE: what is never part of a source tree; everything else is copied for the build, so what
# is tested is the working tree as it is, committed or not.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".tools", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
    "*.tuned.*", "*.tune.svg",
)
PACKAGES = {"repoman": ROOT / "repoman", **{
    name: ROOT / "plugins" / name
    for name in ("repoman_onnxruntime", "repoman_tensorflow", "repoman_python")
}}
TF_MODEL = """platform: "tensorflow_savedmodel"
max_batch_size: 4
input [{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }]
"""


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path


def progress(config: pytest.Config, message: str) -> None:
    """A line on the terminal as the step happens, whatever the capture mode."""
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n[distribution] {message}", flush=True)


def run(command: list[str | Path], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, **kwargs
    )


def clean_env() -> dict[str, str]:
    """The environment without what points Python at this checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def skip_if_offline(result: subprocess.CompletedProcess[str], what: str) -> None:
    output = result.stdout + result.stderr
    offline = re.search(
        r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
        r"resolution|Network is unreachable|No matching distribution found for setuptools",
        output,
    )
    if result.returncode != 0 and offline:
        pytest.skip(f"the package registry is unreachable, so {what} cannot be tested: "
                    f"{offline.group(0)}")


@pytest.fixture(scope="module")
def dists(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Dists:
    """The sdist, and the wheel `python -m build` makes FROM that sdist (its default)."""
    if run([sys.executable, "-m", "build", "--version"]).returncode != 0:
        pytest.fail("`build` is not installed: it is in the [test] extra (`make test` installs it)")
    work = tmp_path_factory.mktemp("dist")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    progress(pytestconfig, "building the sdist, then the wheel from it (python -m build)")
    started = time.monotonic()
    # NOTE: an isolated build (build's default): setuptools comes from the registry, as it
    # would for anyone building the sdist, not from the test environment.
    built = run([sys.executable, "-m", "build", "--outdir", work / "out", source], timeout=600)
    skip_if_offline(built, "building the distributions")
    assert built.returncode == 0, built.stdout + built.stderr
    [sdist] = (work / "out").glob("repoman-*.tar.gz")
    [wheel] = (work / "out").glob("repoman-*.whl")
    progress(pytestconfig, f"built {sdist.name} and {wheel.name} in {time.monotonic() - started:.1f} s")
    return Dists(sdist, wheel)


@pytest.fixture(scope="module")
def installed(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory, dists: Dists
) -> Iterator[Path]:
    """A fresh virtualenv with the wheel installed the way a user installs it (dependencies
    and all, no extras): its bin/ folder."""
    target = tmp_path_factory.mktemp("venv") / "venv"
    progress(pytestconfig, f"installing {dists.wheel.name} into a fresh virtualenv")
    started = time.monotonic()
    venv.EnvBuilder(with_pip=True).create(target)
    pip = run([target / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check",
               "--progress-bar", "off", dists.wheel], env=clean_env(), timeout=900)
    skip_if_offline(pip, "installing the wheel")
    assert pip.returncode == 0, pip.stdout + pip.stderr
    progress(pytestconfig, f"installed in {time.monotonic() - started:.1f} s")
    yield target / "bin"


def test_the_installed_wheel_serves_the_bundled_repository(
    installed: Path, dists: Dists, tmp_path: Path
) -> None:
    python = installed / "python"
    where = run([python, "-c", "import repoman, repoman_onnxruntime as o; print(repoman.__file__, o.__file__)"],
                env=clean_env(), cwd=tmp_path, check=True).stdout
    assert str(ROOT) not in where and str(installed.parent) in where, where
    # the core does not pull TensorFlow in: a TF model needs the [tensorflow] extra
    assert run([python, "-c", "import tensorflow"], env=clean_env(), cwd=tmp_path).returncode != 0
    version = run([installed / "repoman", "--version"], env=clean_env(), cwd=tmp_path, check=True)
    assert version.stdout == f"repoman {repoman.__version__}\n"
    assert f"repoman-{repoman.__version__}-" in dists.wheel.name

    repository = tmp_path / "models"
    shutil.copytree(BUNDLED, repository)
    (repository / "tf" / "1" / "model.savedmodel").mkdir(parents=True)
    (repository / "tf" / "config.pbtxt").write_text(TF_MODEL)
    server = start_server(repository, launcher=[str(installed / "repoman")], cwd=tmp_path,
                          env={"PYTHONPATH": ""})
    try:
        request = (ROOT / "examples" / "digits_request.json").read_bytes()
        status, answer = server.request("POST", "/v2/models/digits/infer", request,
                                        {"Content-Type": "application/json"})
        assert status == 200, answer
        label = next(o for o in answer["outputs"] if o["name"] == "label")
        assert label["data"] == [0], answer
        status, answer = server.get("/v2/models/iris")
        assert status == 200, answer
        status, index = server.request("POST", "/v2/repository/index")
        assert status == 200, index
        [tf] = [entry for entry in index if entry["name"] == "tf"]
        assert tf["state"] == "FAILED", tf
        assert "install it with: pip install 'repoman[tensorflow]'" in tf["reason"], tf
        # The status page's files are package data: the installed wheel serves them.
        for path in ("/", "/status.js", "/status.css"):
            with urllib.request.urlopen(server.url + path, timeout=10) as response:
                assert response.status == 200 and response.read(), path
    finally:
        assert server.stop() == 0, server.log()


def test_the_sdist_holds_what_a_rebuild_needs_and_the_wheel_holds_every_package_file(
    dists: Dists,
) -> None:
    # the wheel was built from the sdist alone, so what it holds, the sdist held
    with zipfile.ZipFile(dists.wheel) as wheel:
        names = set(wheel.namelist())
        info = f"repoman-{repoman.__version__}.dist-info"
        metadata = wheel.read(f"{info}/METADATA").decode()
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                assert f"{package}/{path.relative_to(folder).as_posix()}" in names, path
    assert "repoman/config/model_config.schema.json" in names
    assert json.loads((ROOT / "schemas" / "model_config.schema.json").read_text())
    for plugin in ("onnxruntime = repoman_onnxruntime", "tensorflow = repoman_tensorflow",
                   "python = repoman_python", "repoman = repoman.cli:main"):
        assert plugin in entry_points, entry_points
    requires = re.findall(r"^Requires-Dist: (.*)$", metadata, re.M)
    core = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("onnxruntime") for r in core), core
    assert not any(r.startswith("tensorflow") for r in core), core
    extras = set(re.findall(r"^Provides-Extra: (.*)$", metadata, re.M))
    assert {"tensorflow", "all", "test"} <= extras, extras

    with tarfile.open(dists.sdist) as sdist:
        top = f"repoman-{repoman.__version__}"
        held = {name.removeprefix(f"{top}/") for name in sdist.getnames()}
    for needed in ("pyproject.toml", "README.md", "repoman/config/model_config.schema.json",
                   "plugins/repoman_python/stub.py", "repoman/py.typed"):
        assert needed in held, needed
