"""Hot reload over HTTP: versions come and go, configs change, bad files stay isolated."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import BUNDLED, ROOT
from tests.fakes import write_model

DIGITS = BUNDLED / "digits"
POLL = ("--quiet-period", "0.2", "--repository-poll-secs", "2")


def wait_for(predicate, timeout: float = 15.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.05)


def digits_repo(root: Path, versions=(1,)) -> Path:
    repo = root / "repo"
    (repo / "digits").mkdir(parents=True)
    shutil.copy(DIGITS / "config.pbtxt", repo / "digits" / "config.pbtxt")
    for version in versions:
        (repo / "digits" / str(version)).mkdir()
        shutil.copy(DIGITS / "1" / "model.onnx", repo / "digits" / str(version) / "model.onnx")
    return repo


def ready_versions(server, model="digits") -> list[str]:
    _, index = server.request("POST", "/v2/repository/index", b"")
    return sorted(r["version"] for r in index if r["name"] == model and r.get("state") == "READY")


def infer_digits(client, version: str = "") -> dict:
    inp = httpclient.InferInput("pixels", [1, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
    return client.infer("digits", [inp], model_version=version).get_response()


class Traffic:
    """Unversioned requests in a loop on a few threads, for at most ``seconds``; records every
    outcome. ``fresh_connections``: a connection per request (so that the kernel spreads them
    over front-end processes)."""

    def __init__(
        self,
        address: str,
        threads: int = 4,
        *,
        fresh_connections: bool = False,
        seconds: float = 60,
    ) -> None:
        self.address = address
        self.versions: list[str] = []
        self.errors: list[str] = []
        self._fresh = fresh_connections
        self._seconds = seconds
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpclient.InferenceServerClient(self.address, network_timeout=30) as client:
            deadline = time.monotonic() + self._seconds
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    if self._fresh:
                        with httpclient.InferenceServerClient(
                            self.address, network_timeout=30
                        ) as one:
                            answer = infer_digits(one)
                    else:
                        answer = infer_digits(client)
                    self.versions.append(answer["model_version"])
                except Exception as exc:
                    # NOTE: repr of tritonclient's exception drops its message and status
                    self.errors.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def test_a_new_version_takes_over_without_a_failed_request(tmp_path, server_factory):
    repo = digits_repo(tmp_path)
    server = server_factory(repo, *POLL)
    with Traffic(server.address) as traffic:
        wait_for(lambda: len(traffic.versions) > 20, message="traffic on version 1")
        shutil.copytree(repo / "digits" / "1", repo / "tmp-v2")  # stage outside, then move in
        (repo / "tmp-v2").rename(repo / "digits" / "2")
        wait_for(lambda: ready_versions(server) == ["2"], message="version 2 alone")
        count = len(traffic.versions)
        wait_for(lambda: len(traffic.versions) > count + 20, message="traffic on version 2")
    assert traffic.errors == []
    assert set(traffic.versions) == {"1", "2"}
    last = traffic.versions[-10:]
    assert set(last) == {"2"}
    wait_for(lambda: "model digits version 1: UNAVAILABLE" in server.log(), message="v1 unloaded")


def test_a_half_written_model_file_is_never_loaded(tmp_path, server_factory):
    repo = digits_repo(tmp_path)
    server = server_factory(repo, *POLL)
    data = (DIGITS / "1" / "model.onnx").read_bytes()
    target = repo / "digits" / "2"
    target.mkdir()
    with open(target / "model.onnx", "wb") as out:  # ~2 s of writing, a chunk every 0.1 s
        for start in range(0, len(data), len(data) // 20 + 1):
            out.write(data[start : start + len(data) // 20 + 1])
            out.flush()
            time.sleep(0.1)
            assert "model digits version 2: LOADING" not in server.log()
    wait_for(lambda: ready_versions(server) == ["2"], message="version 2 after the copy")
    assert "FAILED" not in server.log()


def test_a_ready_marker_holds_back_a_version_until_it_exists(tmp_path, server_factory):
    repo = digits_repo(tmp_path)
    (repo / "digits" / "1" / "READY").write_text("")
    server = server_factory(repo, *POLL, "--version-ready-file", "READY")
    (repo / "digits" / "2").mkdir()
    shutil.copy(repo / "digits" / "1" / "model.onnx", repo / "digits" / "2" / "model.onnx")
    time.sleep(1.0)
    assert ready_versions(server) == ["1"]
    (repo / "digits" / "2" / "READY").write_text("")
    wait_for(lambda: ready_versions(server) == ["2"], message="version 2 after its marker")


def test_swap_and_hidden_files_never_trigger_a_reload(tmp_path, server_factory):
    repo = digits_repo(tmp_path)
    server = server_factory(repo, *POLL)
    loads = server.log().count("LOADING")
    (repo / "digits" / "1" / ".model.onnx.swp").write_bytes(b"x" * 100)
    (repo / "digits" / "config.pbtxt~").write_text("garbage")
    (repo / "digits" / "1" / "4913").write_text("")
    (repo / "digits" / ".hidden").mkdir()
    time.sleep(1.0)
    assert server.log().count("LOADING") == loads
    assert ready_versions(server) == ["1"]


def test_a_bad_version_is_isolated_and_retried_when_its_files_change(tmp_path, server_factory):
    repo = digits_repo(tmp_path)
    server = server_factory(repo, *POLL)
    with httpclient.InferenceServerClient(server.address) as client:
        (repo / "tmp").mkdir()
        (repo / "tmp" / "model.onnx").write_bytes(b"this is not an onnx model")
        (repo / "tmp").rename(repo / "digits" / "2")
        wait_for(lambda: "version 2: FAILED" in server.log(), message="version 2 failing")
        assert infer_digits(client)["model_version"] == "1"  # the old one keeps serving
        _, index = server.request("POST", "/v2/repository/index", b"")
        failed = next(r for r in index if r["name"] == "digits" and r["version"] == "2")
        assert failed["state"] == "FAILED" and failed["reason"]
        # NOTE: that the same bad files are not retried on every rescan is the policy's
        # ("a failed version is not retried with the same files", tests/manager).
        shutil.copy(DIGITS / "1" / "model.onnx", repo / "digits" / "2" / "model.onnx")
        wait_for(lambda: ready_versions(server) == ["2"], message="version 2 fixed")
        assert infer_digits(client)["model_version"] == "2"


def test_a_config_edit_is_applied_live(tmp_path, server_factory):
    repo = digits_repo(tmp_path)
    server = server_factory(repo, *POLL)
    with (
        httpclient.InferenceServerClient(server.address) as client,
        Traffic(server.address) as traffic,
    ):
        wait_for(lambda: len(traffic.versions) > 20, message="traffic")
        config = repo / "digits" / "config.pbtxt"
        config.write_text(config.read_text().replace("max_batch_size: 32", "max_batch_size: 8"))
        wait_for(
            lambda: client.get_model_config("digits")["max_batch_size"] == 8,
            message="the new max_batch_size",
        )
        count = len(traffic.versions)
        wait_for(lambda: len(traffic.versions) > count + 20, message="traffic after the edit")
    assert traffic.errors == []


def test_a_broken_config_edit_keeps_the_old_config_serving(tmp_path, server_factory):
    repo = digits_repo(tmp_path)
    server = server_factory(repo, *POLL)
    config = repo / "digits" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 32", "max_batch_size: -3"))
    wait_for(
        lambda: "max_batch_size" in server.log().split("cannot be served")[-1],
        message="the config error in the log",
    )
    with httpclient.InferenceServerClient(server.address) as client:
        assert infer_digits(client)["model_version"] == "1"
    _, index = server.request("POST", "/v2/repository/index", b"")
    assert any("max_batch_size" in r.get("reason", "") for r in index if r["name"] == "digits")


def test_per_version_configs_are_served_side_by_side(tmp_path, server_factory):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(ROOT / "tests" / "fakes.py", plugins / "fakes.py")
    repo = tmp_path / "repo"
    write_model(repo, "echo", versions=(1, 2), extra="version_policy: { all: {} }\n")
    (repo / "echo" / "2" / "config.pbtxt").write_text(
        'backend: "echo"\nmax_batch_size: 4\n'
        'input [{ name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] }]\n'
        'output [{ name: "RESULT" data_type: TYPE_FP32 dims: [ 4 ] }]\n'
    )
    server = server_factory(repo, "--plugins-dir", str(plugins), *POLL)
    with httpclient.InferenceServerClient(server.address) as client:
        assert client.get_model_config("echo", "1")["output"][0]["name"] == "OUTPUT"
        assert client.get_model_config("echo", "2")["output"][0]["name"] == "RESULT"
        assert client.get_model_config("echo", "2")["max_batch_size"] == 4
        inp = httpclient.InferInput("INPUT", [1, 4], "FP32")
        inp.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        assert client.infer("echo", [inp], model_version="1").as_numpy("OUTPUT") is not None
        assert client.infer("echo", [inp], model_version="2").as_numpy("RESULT") is not None


def test_models_appear_and_disappear_with_their_folders(tmp_path, server_factory):
    repo = digits_repo(tmp_path)
    server = server_factory(repo, *POLL)
    shutil.copytree(BUNDLED / "iris", repo / "tmp-iris")
    (repo / "tmp-iris").rename(repo / "iris")
    wait_for(lambda: ready_versions(server, "iris") == ["1"], message="iris appearing")
    shutil.rmtree(repo / "iris")
    wait_for(lambda: ready_versions(server, "iris") == [], message="iris disappearing")
    with httpclient.InferenceServerClient(server.address) as client:
        assert not client.is_model_ready("iris")
        assert client.is_model_ready("digits")


def test_removing_the_serving_version_folder_drains_it(tmp_path, server_factory):
    repo = digits_repo(tmp_path, versions=(1, 2))
    server = server_factory(repo, *POLL)
    assert ready_versions(server) == ["2"]
    shutil.rmtree(repo / "digits" / "2")
    wait_for(lambda: ready_versions(server) == ["1"], message="version 1 taking over")
    wait_for(lambda: "model digits version 2: UNAVAILABLE" in server.log(), message="v2 unloaded")


def test_explicit_mode_ignores_the_disk_and_follows_the_api(tmp_path, server_factory):
    repo = digits_repo(tmp_path)
    shutil.copytree(BUNDLED / "iris", repo / "iris")
    server = server_factory(repo, "--model-control-mode", "explicit", "--load-model", "digits")
    assert ready_versions(server) == ["1"] and ready_versions(server, "iris") == []
    shutil.copytree(repo / "digits" / "1", repo / "digits" / "2")
    time.sleep(1.0)
    assert ready_versions(server) == ["1"]  # the disk changed; explicit mode does not care
    with httpclient.InferenceServerClient(server.address) as client:
        client.load_model("digits")
        assert ready_versions(server) == ["2"]  # load returns when the work is done
        client.load_model("iris")
        assert client.is_model_ready("iris")
        client.unload_model("iris")
        assert not client.is_model_ready("iris")
        client.unload_model("iris")  # idempotent
        with pytest.raises(InferenceServerException, match="unknown model"):
            client.load_model("no_such_model")
        config = client.get_model_config("digits")
        config["max_batch_size"] = 4
        import json

        client.load_model("digits", config=json.dumps(config))
        assert client.get_model_config("digits")["max_batch_size"] == 4


def test_concurrent_loads_and_unloads_are_idempotent(tmp_path, server_factory):
    from concurrent.futures import ThreadPoolExecutor

    repo = digits_repo(tmp_path)
    server = server_factory(repo, "--model-control-mode", "explicit")

    def call(action: str) -> int:
        status, _ = server.request("POST", f"/v2/repository/models/digits/{action}", b"")
        return status

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(call, ["load"] * 6)) == [200] * 6
    assert ready_versions(server) == ["1"]
    assert server.log().count("model digits version 1: LOADING") == 1
    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(call, ["unload"] * 6)) == [200] * 6
    assert ready_versions(server) == []


def test_the_api_refuses_load_outside_explicit_mode(tmp_path, server_factory):
    repo = digits_repo(tmp_path)
    server = server_factory(repo, *POLL)
    status, answer = server.request("POST", "/v2/repository/models/digits/load", b"")
    assert status == 400 and "explicit" in answer["error"]


def test_a_model_file_replaced_in_place_is_reloaded_without_a_failed_request(
    tmp_path, server_factory
):
    repo = digits_repo(tmp_path)
    server = server_factory(repo, *POLL)
    with Traffic(server.address) as traffic:
        wait_for(lambda: len(traffic.versions) > 20, message="traffic")
        staged = tmp_path / "model.onnx"
        shutil.copy(DIGITS / "1" / "model.onnx", staged)
        staged.replace(repo / "digits" / "1" / "model.onnx")  # same name, new file
        wait_for(
            lambda: server.log().count("model digits version 1: LOADING") == 2,
            message="version 1 reloading",
        )
        wait_for(
            lambda: server.log().count("model digits version 1: UNAVAILABLE") == 1,
            message="the old instance unloaded",
        )
        count = len(traffic.versions)
        wait_for(lambda: len(traffic.versions) > count + 20, message="traffic after the reload")
    assert traffic.errors == []


def test_a_version_failing_its_warmup_keeps_the_old_one_serving(tmp_path, server_factory):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(ROOT / "tests" / "fakes.py", plugins / "fakes.py")
    repo = tmp_path / "repo"
    warmup = (
        'model_warmup [{ name: "poison" batch_size: 1 inputs { key: "INPUT" value: '
        '{ data_type: TYPE_FP32 dims: [ 4 ] input_data_file: "poison.bin" } } }]\n'
    )
    write_model(repo, "m", backend="raising", extra=warmup)
    (repo / "m" / "warmup").mkdir()
    (repo / "m" / "warmup" / "poison.bin").write_bytes(np.ones(4, dtype="<f4").tobytes())
    server = server_factory(repo, "--plugins-dir", str(plugins), *POLL)
    assert ready_versions(server, "m") == ["1"]  # a harmless warm-up sample: loads
    (repo / "m" / "warmup" / "poison.bin").write_bytes((-np.ones(4, dtype="<f4")).tobytes())
    (repo / "tmp").mkdir()
    (repo / "tmp" / "model.txt").write_text("v2")
    (repo / "tmp").rename(repo / "m" / "2")
    wait_for(lambda: "version 2: FAILED" in server.log(), message="version 2 failing warm-up")
    assert "warm-up sample 'poison' failed" in server.log() or "poisons" in server.log()
    assert ready_versions(server, "m") == ["1"]


def test_a_slow_loading_model_does_not_hold_up_the_others(tmp_path, server_factory):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(ROOT / "tests" / "fakes.py", plugins / "fakes.py")
    repo = tmp_path / "repo"
    write_model(repo, "quick", versions=(1,))
    server = server_factory(repo, "--plugins-dir", str(plugins), *POLL)
    staging = tmp_path / "staging"
    write_model(
        staging,
        "sluggish",
        extra='parameters { key: "load_delay_ms" value: { string_value: "8000" } }\n',
    )
    (staging / "sluggish").rename(repo / "sluggish")
    wait_for(lambda: "model sluggish version 1: LOADING" in server.log(), message="slow load")
    started = time.monotonic()
    (repo / "quick" / "2").mkdir()
    (repo / "quick" / "2" / "model.txt").write_text("v2")
    wait_for(
        lambda: ready_versions(server, "quick") == ["2"],
        timeout=6,
        message="quick version 2 while sluggish is still loading",
    )
    assert time.monotonic() - started < 6
    assert "model sluggish version 1: READY" not in server.log()


def test_a_load_through_the_api_that_fails_says_so_even_with_an_older_version_serving(
    tmp_path, server_factory
):
    repo = digits_repo(tmp_path)
    server = server_factory(repo, "--model-control-mode", "explicit", "--load-model", "digits")
    (repo / "digits" / "2").mkdir()
    (repo / "digits" / "2" / "model.onnx").write_bytes(b"not an onnx model")
    for _ in range(2):  # asked again with the same files, it is tried again
        status, answer = server.request("POST", "/v2/repository/models/digits/load", b"")
        assert status == 400, answer
        assert answer["error"].startswith("failed to load 'digits': version 2: ")
    with httpclient.InferenceServerClient(server.address) as client:
        assert infer_digits(client)["model_version"] == "1"  # the old one keeps serving
        shutil.copy(DIGITS / "1" / "model.onnx", repo / "digits" / "2" / "model.onnx")
        client.load_model("digits")
        assert infer_digits(client)["model_version"] == "2"
