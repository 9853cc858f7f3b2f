"""Hardened configs through the real server: what a config, dropped in the repository or sent
with a load request, can no longer make the server do."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BUNDLED
from tests.serverproc import ServerProcess, start_server

PYTHON_CONFIG = {
    "backend": "python",
    "max_batch_size": 0,
    "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}],
}
PYTHON_MODEL = """
from repoman_python import Response

class Model:
    def execute(self, requests):
        return [Response({"y": r.input("x")}) for r in requests]
"""


def write_python_model(repo: Path, name: str, config: dict) -> Path:
    folder = repo / name
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text(textwrap.dedent(PYTHON_MODEL))
    (folder / "config.yaml").write_text(json.dumps(config))
    return folder


def evil_file(root: Path) -> tuple[Path, Path]:
    """A Python file that leaves a marker when anything imports it, and that marker."""
    marker = root / "evil_ran"
    evil = root / "elsewhere" / "evil.py"
    evil.parent.mkdir(parents=True)
    evil.write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "class Model:\n    def execute(self, requests):\n        return []\n"
    )
    return evil, marker


def load(server: ServerProcess, model: str, config: dict | str | None = None) -> tuple[int, str]:
    """POST a load request (``config``: a dict is sent as JSON, a str as it is)."""
    body = b""
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        body = json.dumps({"parameters": {"config": text}}).encode()
    status, answer = server.request("POST", f"/v2/repository/models/{model}/load", body)
    return status, answer.get("error", "")


def index(server: ServerProcess) -> dict[str, dict]:
    _, rows = server.request("POST", "/v2/repository/index", b"")
    return {row["name"]: row for row in rows}


@pytest.fixture(scope="module")
def explicit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    """One explicit-mode server for the load-request tests: a python model `m` and `digits`
    are loaded; each test sends overrides that must be refused while both keep serving."""
    root = tmp_path_factory.mktemp("explicit")
    repo = root / "repo"
    write_python_model(repo, "m", PYTHON_CONFIG)
    shutil.copytree(BUNDLED / "digits", repo / "digits")
    server = start_server(
        repo, "--model-control-mode", "explicit", "--load-model", "m", "--load-model", "digits"
    )
    yield server, root
    assert server.stop() == 0, server.log()


def still_serving(server: ServerProcess) -> bool:
    rows = index(server)
    return all(rows[name].get("state") == "READY" for name in ("m", "digits"))


# ---- 1. a config names files inside its version folder only --------------------------


def test_a_load_override_cannot_run_a_file_elsewhere_on_the_machine(explicit):
    server, root = explicit
    evil, marker = evil_file(root / "override")
    status, error = load(server, "m", {**PYTHON_CONFIG, "default_model_filename": str(evil)})
    assert status == 400, error
    assert "default_model_filename: expected a name relative to its folder" in error
    for name in ("../../elsewhere/evil.py", "1/../../../elsewhere/evil.py"):
        status, error = load(server, "m", {**PYTHON_CONFIG, "default_model_filename": name})
        assert status == 400 and "default_model_filename" in error, error
    assert not marker.exists()
    assert still_serving(server)


def test_a_load_override_cannot_tell_existing_files_from_missing_ones(explicit):
    server, _ = explicit
    digits = json.loads(json.dumps(PYTHON_CONFIG))  # onnxruntime reads the file: no python
    digits.update(backend="onnxruntime", default_model_filename="/etc/passwd")
    exists = load(server, "digits", digits)
    digits["default_model_filename"] = "/no/such/file"
    missing = load(server, "digits", digits)
    assert exists[0] == missing[0] == 400
    assert exists[1].replace("/etc/passwd", "X") == missing[1].replace("/no/such/file", "X")
    assert still_serving(server)


def test_a_config_in_the_repository_cannot_run_a_file_elsewhere(tmp_path, server_factory):
    evil, marker = evil_file(tmp_path)
    repo = tmp_path / "repo"
    write_python_model(repo, "evil", {**PYTHON_CONFIG, "default_model_filename": str(evil)})
    write_python_model(repo, "fine", PYTHON_CONFIG)
    server = server_factory(repo)
    rows = index(server)
    assert rows["fine"]["state"] == "READY"
    assert rows["evil"]["state"] == "UNAVAILABLE"
    assert "default_model_filename: expected a name relative" in rows["evil"]["reason"]
    assert not marker.exists()


# ---- 6. a model's config file that is a symlink out of the repository -----------------


def test_a_config_file_linked_from_outside_the_repository_is_refused(tmp_path, server_factory):
    repo = tmp_path / "repo"
    write_python_model(repo, "linked", PYTHON_CONFIG)
    outside = tmp_path / "outside.yaml"
    outside.write_text(json.dumps(PYTHON_CONFIG))
    (repo / "linked" / "config.yaml").unlink()
    (repo / "linked" / "config.yaml").symlink_to(outside)
    write_python_model(repo, "fine", PYTHON_CONFIG)
    server = server_factory(repo)
    rows = index(server)
    assert rows["fine"]["state"] == "READY"
    assert rows["linked"]["state"] == "UNAVAILABLE"
    assert "leads out of the repository" in rows["linked"]["reason"]


# ---- 4. config size --------------------------------------------------------------------


def test_a_load_override_over_the_size_limit_is_a_400(explicit):
    server, _ = explicit
    padded = json.dumps(PYTHON_CONFIG) + " " * (2 << 20)
    status, error = load(server, "m", padded)
    assert status == 400
    assert "expected a config file of at most 1048576 bytes (1 MiB), found 2097" in error
    assert still_serving(server)


def test_a_config_file_over_the_size_limit_is_refused(tmp_path, server_factory):
    repo = tmp_path / "repo"
    write_python_model(repo, "huge", PYTHON_CONFIG)
    with (repo / "huge" / "config.yaml").open("a") as handle:
        handle.write("#" * (2 << 20))
    write_python_model(repo, "fine", PYTHON_CONFIG)
    server = server_factory(repo, "--max-config-size", str(1 << 20))
    rows = index(server)
    assert rows["fine"]["state"] == "READY"
    assert rows["huge"]["state"] == "UNAVAILABLE"
    assert "at most 1048576 bytes (1 MiB), found 2097" in rows["huge"]["reason"]


# ---- 3. YAML alias bombs, JSON-only overrides, deep nesting --------------------------

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


@pytest.mark.timeout(60)
def test_a_load_override_must_be_plain_json(explicit):
    server, _ = explicit
    yaml_text = "backend: python\nmax_batch_size: 0\n"
    for text, words in [
        (yaml_text, "expected JSON, found: Expecting value"),
        (BILLION_LAUGHS, "expected JSON"),
        ("[" * 100_000 + "]" * 100_000, "expected at most 100 nested blocks"),
        (json.dumps({**PYTHON_CONFIG, "max_batch_size": float("nan")}), "found: NaN"),
    ]:
        status, error = load(server, "m", text)
        assert status == 400 and words in error, (status, error)
    assert still_serving(server)


def test_a_deeply_nested_load_request_body_is_a_400(explicit):
    server, _ = explicit
    body = b'{"parameters": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, answer = server.request("POST", "/v2/repository/models/m/load", body)
    assert status == 400 and "nested too deeply" in answer["error"]
    assert still_serving(server)


@pytest.mark.timeout(60)
def test_a_yaml_alias_bomb_in_the_repository_is_refused_at_once(tmp_path, server_factory):
    repo = tmp_path / "repo"
    write_python_model(repo, "bomb", PYTHON_CONFIG)
    (repo / "bomb" / "config.yaml").write_text(BILLION_LAUGHS)
    write_python_model(repo, "fine", PYTHON_CONFIG)
    server = server_factory(repo, timeout=20)
    rows = index(server)
    assert rows["fine"]["state"] == "READY"
    assert "expected no YAML anchors (&name) or aliases (*name)" in rows["bomb"]["reason"]


# ---- 8. numbers in configs are ASCII ---------------------------------------------------


@pytest.mark.parametrize("level", ["\u00b2", "\u0663", "3\n"])
def test_a_load_override_with_a_unicode_digit_is_a_400(explicit, level):
    server, _ = explicit
    config = {
        **PYTHON_CONFIG,
        "max_batch_size": 4,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
        "dynamic_batching": {
            "priority_levels": 3,
            "default_priority_level": 1,
            "priority_queue_policy": {level: {"max_queue_size": 1}},
        },
    }
    status, error = load(server, "m", config)
    assert status == 400 and "expected a non-negative integer key" in error, (status, error)
    assert still_serving(server)


# ---- 5. limits on values -------------------------------------------------------------


def batching_config(**changes) -> dict:
    config = json.loads(json.dumps(PYTHON_CONFIG))
    config.update(max_batch_size=4, dynamic_batching={})
    for key, value in changes.items():
        if key in ("max_queue_delay_microseconds", "priority_levels"):
            config["dynamic_batching"][key] = value
        else:
            config[key] = value
    return config


HUGE_WARMUP = [
    {
        "name": "huge",
        "batch_size": 4,
        "inputs": {"x": {"data_type": "TYPE_FP64", "dims": [1 << 24], "random_data": True}},
    }
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"max_batch_size": 10**18}, "max_batch_size", "expected a value <= 1048576"),
        (
            {"max_queue_delay_microseconds": 2**63 - 1},
            "dynamic_batching.max_queue_delay_microseconds",
            "expected a value <= 10000000",
        ),
        (
            {"priority_levels": 10**9},
            "dynamic_batching.priority_levels",
            "expected a value <= 256",
        ),
        (
            {"instance_group": [{"count": 10**6}]},
            "instance_group[0].count",
            "expected a value <= 64",
        ),
        (
            {"model_warmup": HUGE_WARMUP},
            "model_warmup[0]",
            "expected a warm-up sample of at most 67108864 bytes",
        ),
    ],
    ids=["max_batch_size", "queue_delay", "priority_levels", "instances", "warmup"],
)
def test_a_load_override_with_absurd_values_is_a_400(explicit, changes, field, words):
    server, _ = explicit
    status, error = load(server, "m", batching_config(**changes))
    assert status == 400 and f"{field}: {words}" in error, (status, error)
    assert still_serving(server)


# ---- 2. explicit mode without a control token ---------------------------------------


def test_explicit_mode_without_a_token_warns_at_start_up(explicit, tmp_path, server_factory):
    server, _ = explicit
    warnings = [line for line in server.log().splitlines() if "WARNING" in line]
    assert any(
        "--model-control-mode explicit without a control token" in line
        and "--control-token" in line
        for line in warnings
    ), server.log()
    guarded = server_factory(
        tmp_path, "--model-control-mode", "explicit", env={"REPOMAN_CONTROL_TOKEN": "t0k"}
    )
    assert "without a control token" not in guarded.log()
    assert guarded.request("POST", "/v2/repository/index", b"")[0] == 401
