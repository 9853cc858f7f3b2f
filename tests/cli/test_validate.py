"""`repoman validate`: compiler-style findings and exit codes, without a server."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import BUNDLED, ROOT

CONFORMANCE = ROOT.parent / "shared" / "conformance" / "triton_model_config"
LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+):(?P<col>\d+): error: (?P<field>[^:]+): .+")


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "repoman", "validate", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_the_bundled_repository_is_valid():
    run = validate(str(BUNDLED))
    assert run.returncode == 0, run.stdout + run.stderr
    models = [folder for folder in BUNDLED.iterdir() if any(folder.glob("config.*"))]
    versions = [v for folder in models for v in folder.iterdir() if v.name.isdigit()]
    assert len(models) >= 6  # digits, iris, the iris_species pipeline and iris_bls
    expected = f"{len(models)} model(s), {len(versions)} version(s) checked: 0 error(s)"
    assert expected in run.stdout


def test_every_conformance_case_is_an_error_with_a_location():
    if not CONFORMANCE.is_dir():
        pytest.skip("../shared/conformance is not here")
    run = validate(str(CONFORMANCE), "--default-platform", "onnxruntime_onnx")
    assert run.returncode == 1
    cases = sorted(p.name for p in CONFORMANCE.iterdir() if p.is_dir())
    for case in cases:
        lines = [
            line
            for line in run.stdout.splitlines()
            if f"/{case}/" in line or line.startswith(f"{CONFORMANCE / case}:")
        ]
        assert any(": error: " in line for line in lines), f"no error for {case}"
    located = [line for line in run.stdout.splitlines() if LINE.match(line)]
    assert len(located) >= len(cases) - 5  # a few errors are about the whole file
    assert f"{len(cases)} model(s)" in run.stdout.splitlines()[-1]


def test_a_config_that_does_not_match_its_model_file_is_caught(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED / "digits", repo / "digits")
    config = repo / "digits" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "pixels"', 'name: "image"'))
    shutil.copytree(BUNDLED / "iris", repo / "iris")
    (repo / "iris" / "1" / "model.onnx").unlink()
    (repo / "broken").mkdir()
    (repo / "broken" / "config.pbtxt").write_text("max_batch_size: -1\nfoo: 1\n")
    run = validate(str(repo))
    assert run.returncode == 1
    out = run.stdout
    assert "input[0].name: expected one of the model's inputs (pixels), found 'image'" in out
    assert "expected the model file model.onnx, found none" in out
    assert re.search(r"broken/config\.pbtxt:2:1: error: foo: .*unknown field", out), out
    assert "3 model(s)" in out and "error(s)" in out


def test_a_missing_repository_is_an_error():
    run = validate("/nonexistent/repo")
    assert run.returncode == 1 and "expected a folder" in run.stdout
