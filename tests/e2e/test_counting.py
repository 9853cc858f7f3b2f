"""Every answered inference request is counted: failures by reason, exactly, over HTTP and gRPC,
with and without front-end processes (issue #19)."""

from __future__ import annotations

import http.client
import json
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.fakes import write_model

N = 5
TOKEN = "c0unt"
GOOD = {"Authorization": f"Bearer {TOKEN}"}
REASONS = ("bad_input", "unknown_output", "too_large", "unauthorized", "backend", "queue_full")


def post(server, path: str, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def infer_body(datatype: str = "FP32", value: float = 1.0, outputs=None) -> bytes:
    document: dict = {
        "inputs": [{"name": "INPUT", "shape": [1, 4], "datatype": datatype, "data": [value] * 4}]
    }
    if outputs is not None:
        document["outputs"] = [{"name": name} for name in outputs]
    return json.dumps(document).encode()


def failures(server) -> dict[tuple[str, str], float]:
    """(model, reason) -> nv_inference_request_failure, summed over versions; plus the
    encode histogram's count per model under (model, "encoded")."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.request("GET", "/metrics", headers=GOOD)
    text = conn.getresponse().read().decode()
    conn.close()
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name.startswith("nv_inference_request_failure"):
                key = (labels["model"], labels["reason"])
            elif sample.name == "repoman_request_encode_seconds_count":
                key = (labels["model"], "encoded")
            else:
                continue
            found[key] = found.get(key, 0) + sample.value
    return found


def settled(server, expected: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """The counters once they show ``expected`` (bounded: a front-end's note to the core may
    trail its answer by a loop iteration); what they show at the deadline otherwise."""
    deadline = time.monotonic() + 10
    while True:
        found = failures(server)
        if all(found.get(k, 0) == v for k, v in expected.items()):
            return found
        if time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_every_refusal_is_counted_by_reason(tmp_path, server_factory, plugins_dir, workers):
    repo = tmp_path / "repo"
    write_model(repo, "echo", extra="dynamic_batching { max_queue_delay_microseconds: 0 }\n")
    write_model(repo, "bad", backend="raising")
    server = server_factory(
        repo,
        "--plugins-dir",
        str(plugins_dir),
        "--control-token",
        TOKEN,
        "--protect-inference",
        "--max-request-size",
        "4096",
        "--http-workers",
        workers,
    )
    path = "/v2/models/echo/infer"
    json_type = {"Content-Type": "application/json"}
    statuses: dict[str, list[int]] = {reason: [] for reason in REASONS}
    # Over HTTP: N of each reason, and N good requests (each is encoded once).
    for _ in range(N):
        statuses["bad_input"].append(post(server, path, infer_body("INT32"), GOOD | json_type))
        unknown = infer_body(outputs=["NOPE"])
        statuses["unknown_output"].append(post(server, path, unknown, GOOD | json_type))
        statuses["too_large"].append(post(server, path, b"x" * 8192, GOOD | json_type))
        statuses["unauthorized"].append(post(server, path, infer_body(), json_type))
        bad = infer_body(value=-1.0)
        statuses["backend"].append(post(server, "/v2/models/bad/infer", bad, GOOD | json_type))
        assert post(server, path, infer_body(), GOOD | json_type) == 200
    assert statuses["bad_input"] == [400] * N
    assert statuses["unknown_output"] == [400] * N
    assert statuses["too_large"] == [413] * N
    assert statuses["unauthorized"] == [401] * N
    assert statuses["backend"] == [500] * N

    # Over gRPC: N of each reason it can be refused for (grpcio itself refuses an oversized
    # message before repoman sees it: not counted), and N good requests.
    metadata = {"authorization": f"Bearer {TOKEN}"}
    with grpcclient.InferenceServerClient(server.grpc_address) as client:

        def call(model, datatype="FP32", value=1.0, outputs=None, headers=metadata):
            array = np.full((1, 4), value, dtype=np.float32 if datatype == "FP32" else np.int32)
            given = grpcclient.InferInput("INPUT", [1, 4], datatype)
            given.set_data_from_numpy(array)
            wanted = [grpcclient.InferRequestedOutput(o) for o in outputs] if outputs else None
            try:
                client.infer(model, [given], outputs=wanted, headers=headers)
            except InferenceServerException as exc:
                return exc.status()
            return "OK"

        for _ in range(N):
            assert call("echo", "INT32") == "StatusCode.INVALID_ARGUMENT"
            assert call("echo", outputs=["NOPE"]) == "StatusCode.INVALID_ARGUMENT"
            assert call("echo", headers={}) == "StatusCode.UNAUTHENTICATED"
            assert call("bad", value=-1.0) == "StatusCode.INTERNAL"
            assert call("echo") == "OK"

    expected = {
        ("echo", "bad_input"): 2 * N,
        ("echo", "unknown_output"): 2 * N,
        ("echo", "too_large"): N,
        ("echo", "unauthorized"): 2 * N,
        ("echo", "backend"): 0,
        ("echo", "queue_full"): 0,
        ("bad", "backend"): 2 * N,
        ("bad", "bad_input"): 0,
        ("echo", "encoded"): 2 * N,
    }
    found = settled(server, expected)
    assert {k: found.get(k, 0) for k in expected} == expected

    # Triton's statistics agree: every failure counted once in inference_stats.fail.
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.request("GET", "/v2/models/echo/stats", headers=GOOD)
    stats = json.loads(conn.getresponse().read())["model_stats"][0]["inference_stats"]
    conn.close()
    assert stats["fail"]["count"] == 7 * N
    assert stats["success"]["count"] == 2 * N
