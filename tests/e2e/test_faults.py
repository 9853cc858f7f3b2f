"""Backends that never return: the server stays available, says so, and still stops on time."""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import tritonclient.http as httpclient

from tests.fakes import write_model

BODY = json.dumps(
    {"inputs": [{"name": "INPUT", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
).encode()


def post(server, path: str, body: bytes = BODY, timeout: float = 30) -> tuple[int, dict, float]:
    started = time.monotonic()
    request = urllib.request.Request(
        server.url + path, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    return status, json.loads(raw or b"{}"), time.monotonic() - started


def test_a_hung_execution_is_written_off_and_every_other_model_keeps_serving(
    tmp_path, plugins_dir, server_factory
):
    repo = tmp_path / "repo"
    write_model(repo, "stuck", backend="blocking")  # blocks 30 s in execute: never released
    write_model(repo, "stuck_too", backend="blocking")
    write_model(repo, "fine")
    server = server_factory(
        repo,
        "--plugins-dir",
        str(plugins_dir),
        "--num-batch-threads",
        "2",
        "--execution-timeout",
        "1",
        "--shutdown-timeout",
        "2",
    )
    # NOTE: two hung models, two workers: before, this stopped every other model for good.
    for name in ("stuck", "stuck_too"):
        status, answer, took = post(server, f"/v2/models/{name}/infer")
        assert status == 504, answer
        assert "did not finish within 1 s" in answer["error"] and took < 10
    status, answer, _ = post(server, "/v2/models/fine/infer")
    assert status == 200 and answer["outputs"][0]["data"] == [1, 2, 3, 4]
    with httpclient.InferenceServerClient(server.address) as client:
        assert not client.is_model_ready("stuck")
        assert client.is_model_ready("fine")
        index = {(r["name"], r.get("version")): r for r in client.get_model_repository_index()}
    assert index[("stuck", "1")]["state"] == "FAILED"
    assert "--execution-timeout" in index[("stuck", "1")]["reason"]
    status, answer, _ = post(server, "/v2/models/stuck/infer")
    assert status == 503  # marked unhealthy: refused at once, nothing queued behind it
    started = time.monotonic()
    assert server.stop(timeout=20) == 0  # the stuck threads do not hold the exit
    assert time.monotonic() - started < 15, server.log()


def test_loads_that_never_return_do_not_hold_up_other_loads(tmp_path, plugins_dir, server_factory):
    repo = tmp_path / "repo"
    slow = 'parameters { key: "load_delay_ms" value: { string_value: "60000" } }\n'
    for name in ("hangs_a", "hangs_b", "hangs_c"):
        write_model(repo, name, extra=slow)
    server = server_factory(
        repo,
        "--plugins-dir",
        str(plugins_dir),
        "--model-control-mode",
        "explicit",
        "--load-model",
        "*",
        "--model-load-timeout",
        "1",
        "--shutdown-timeout",
        "2",
        timeout=60,
    )
    write_model(repo, "later")
    with httpclient.InferenceServerClient(server.address, network_timeout=30) as client:
        started = time.monotonic()
        client.load_model("later")  # three loads are still running, abandoned: not waited for
        assert client.is_model_ready("later") and time.monotonic() - started < 10
        inp = httpclient.InferInput("INPUT", [1, 4], "FP32")
        inp.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        assert client.infer("later", [inp]).as_numpy("OUTPUT").tolist() == [[1, 1, 1, 1]]
        for name in ("hangs_a", "hangs_b", "hangs_c"):
            assert not client.is_model_ready(name)
    assert server.stop(timeout=20) == 0


def test_requests_whose_clients_went_away_are_dropped_from_the_queue(
    tmp_path, plugins_dir, server_factory
):
    import socket

    repo = tmp_path / "repo"
    write_model(
        repo,
        "slow",
        max_batch_size=0,
        extra='parameters { key: "delay_ms" value: { string_value: "400" } }\n',
    )
    server = server_factory(repo, "--plugins-dir", str(plugins_dir), "--num-batch-threads", "1")
    body = BODY.replace(b"[1, 4]", b"[4]")  # max_batch_size 0: no batch dimension
    request = (
        f"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    def pending() -> float:
        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith("nv_inference_pending_request_count{"):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def executed() -> int:
        return server.get("/v2/models/slow/stats")[1]["model_stats"][0]["execution_count"]

    def taken() -> int:
        """Requests a worker took (running, done, or held for its run, not yet started)."""
        stats = server.get("/v2/models/slow/stats")[1]["model_stats"][0]
        return stats["inference_stats"]["queue"]["count"]

    clients = [socket.create_connection((server.host, server.port), timeout=5) for _ in range(20)]
    for sock in clients:  # 20 x 400 ms of work
        sock.sendall(request)
    deadline = time.monotonic() + 10
    # NOTE: all 20 arrived: queued, or taken by the one worker (a run without batching takes
    # every request waiting, each then executed alone, 400 ms each)
    while pending() + taken() < 20:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    ran_before = executed()
    for sock in clients:  # every client hangs up
        sock.close()
    deadline = time.monotonic() + 2
    while pending() > 0:
        assert time.monotonic() < deadline, "abandoned requests stayed queued"
        time.sleep(0.05)
    time.sleep(1.0)  # NOTE: what the worker holds but has not started is skipped too
    assert executed() <= ran_before + 2  # what was running (or being handed over) finished
