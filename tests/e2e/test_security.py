"""Security and faults: URL names, symlinks, the control token, limits, load timeouts, SIGTERM."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.conftest import BUNDLED, ROOT
from tests.fakes import write_model


def raw(server, method: str, path: str, body: bytes = b"", headers=None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/..%2F..%2Fetc/infer",
        "/v2/models/%2Fetc%2Fpasswd/config",
        "/v2/models/.hidden/ready",
        "/v2/models/" + "a" * 200 + "/infer",
        "/v2/models/bad%00name/infer",
        "/v2/models/-x/versions/1/infer",
    ],
)
def test_invalid_model_names_in_urls_are_400s(bundled_server, path):
    method = "POST" if path.endswith("infer") else "GET"
    status, body = raw(bundled_server, method, path, b"{}")
    assert status == 400, body
    assert b"invalid model name" in body


@pytest.mark.parametrize("version", ["0", "-1", "01", "1.5", "99999999999999999999", "x"])
def test_invalid_versions_are_400s(bundled_server, version):
    status, body = raw(bundled_server, "GET", f"/v2/models/digits/versions/{version}/config")
    assert status == 400 and b"invalid model version" in body


def test_symlinks_out_of_the_repository_are_refused(tmp_path, server_factory):
    outside = tmp_path / "outside"
    shutil.copytree(BUNDLED / "digits", outside / "digits")
    repo = tmp_path / "repo"
    repo.mkdir()
    os.symlink(outside / "digits", repo / "linked_model")  # a whole model folder outside
    shutil.copytree(BUNDLED / "iris", repo / "iris")
    server = server_factory(repo, "--quiet-period", "0.1")
    assert "linked_model: refused: a symlink leading out of the repository" in server.log()
    os.symlink(outside / "digits" / "1", repo / "iris" / "2")  # a version folder outside
    deadline = time.monotonic() + 15
    while "leads out of the repository" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    with httpclient.InferenceServerClient(server.address) as client:
        assert not client.is_model_ready("linked_model")
        assert client.is_model_ready("iris", "1")  # the old version keeps serving
        assert not client.is_model_ready("iris", "2")


def test_the_control_api_needs_the_token(tmp_path, server_factory):
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED / "digits", repo / "digits")
    server = server_factory(
        repo,
        "--model-control-mode",
        "explicit",
        "--load-model",
        "digits",
        env={"REPOMAN_CONTROL_TOKEN": "s3cret"},
    )
    assert raw(server, "POST", "/v2/repository/index")[0] == 401
    assert (
        raw(server, "POST", "/v2/repository/index", headers={"Authorization": "Bearer nope"})[0]
        == 403
    )
    assert raw(server, "POST", "/v2/repository/models/digits/unload")[0] == 401
    good = {"Authorization": "Bearer s3cret"}
    status, _ = raw(server, "POST", "/v2/repository/index", headers=good)
    assert status == 200
    with httpclient.InferenceServerClient(server.address) as client:
        assert client.is_model_ready("digits")  # nothing changed, inference stays open
        inp = httpclient.InferInput("pixels", [1, 64], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
        assert client.infer("digits", [inp]).as_numpy("label").shape == (1, 1)
    assert raw(server, "POST", "/v2/repository/models/digits/unload", headers=good)[0] == 200
    with httpclient.InferenceServerClient(server.address) as client:
        assert not client.is_model_ready("digits")


def test_protecting_inference_keeps_health_open(tmp_path, server_factory):
    server = server_factory(BUNDLED, "--control-token", "t0k", "--protect-inference")
    assert raw(server, "GET", "/v2/health/ready")[0] == 200
    assert raw(server, "GET", "/v2/health/live")[0] == 200
    assert raw(server, "GET", "/v2/models/digits")[0] == 401
    assert raw(server, "GET", "/metrics")[0] == 401
    assert (
        raw(server, "GET", "/v2/models/digits", headers={"Authorization": "Bearer t0k"})[0] == 200
    )


def test_the_repository_api_can_be_turned_off(tmp_path, server_factory):
    server = server_factory(BUNDLED, "--disable-repository-api")
    status, body = raw(server, "POST", "/v2/repository/index")
    assert status == 403 and b"disabled" in body


def test_bodies_over_the_limit_get_413_also_when_chunked(tmp_path, server_factory):
    server = server_factory(BUNDLED, "--max-request-size", "4096")
    big = b'{"inputs": [' + b" " * 8000 + b"]}"
    status, body = raw(server, "POST", "/v2/models/digits/infer", big)
    assert status == 413 and b"error" in body
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.request(
        "POST",
        "/v2/models/digits/infer",
        body=iter([big[:3000], big[3000:]]),
        encode_chunked=True,
        headers={"Transfer-Encoding": "chunked"},
    )
    response = conn.getresponse()
    assert response.status == 413
    conn.close()
    assert raw(server, "GET", "/v2/health/ready")[0] == 200


def test_a_hanging_load_is_failed_after_the_timeout(tmp_path, plugins_dir, server_factory):
    repo = tmp_path / "repo"
    write_model(
        repo,
        "stuck",
        extra='parameters { key: "load_delay_ms" value: { string_value: "20000" } }\n',
    )
    write_model(repo, "fine")
    server = server_factory(repo, "--plugins-dir", str(plugins_dir), "--model-load-timeout", "1")
    with httpclient.InferenceServerClient(server.address) as client:
        assert client.is_model_ready("fine")
        assert not client.is_model_ready("stuck")
    status, body = raw(server, "POST", "/v2/models/stuck/infer", b"{}")
    assert status == 503 and b"did not finish within 1 s" in body


def test_sigterm_lets_in_flight_requests_finish(tmp_path, plugins_dir, server_factory):
    repo = tmp_path / "repo"
    write_model(
        repo, "slow", extra='parameters { key: "delay_ms" value: { string_value: "1500" } }\n'
    )
    server = server_factory(repo, "--plugins-dir", str(plugins_dir))
    outcome = {}

    def call():
        with httpclient.InferenceServerClient(server.address, network_timeout=30) as client:
            inp = httpclient.InferInput("INPUT", [1, 4], "FP32")
            inp.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
            outcome["result"] = client.infer("slow", [inp]).as_numpy("OUTPUT").tolist()

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.5)  # the request is being computed
    server.process.send_signal(signal.SIGTERM)
    thread.join(30)
    assert outcome.get("result") == [[1.0, 1.0, 1.0, 1.0]]
    assert server.process.wait(30) == 0
    assert "model slow version 1: UNAVAILABLE" in server.log()


@pytest.mark.parametrize(
    "content_type",
    ["text/html", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"],
)
def test_a_wrong_content_type_is_415(bundled_server, content_type):
    body = (ROOT / "examples" / "digits_request.json").read_bytes()
    status, answer = raw(
        bundled_server, "POST", "/v2/models/digits/infer", body, {"Content-Type": content_type}
    )
    assert status == 415 and b"application/json" in answer
    ok, _ = raw(
        bundled_server,
        "POST",
        "/v2/models/digits/infer",
        body,
        {"Content-Type": "application/json"},
    )
    assert ok == 200
