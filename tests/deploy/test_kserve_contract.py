"""The KServe runtimes' contract, without a cluster: repoman started with exactly the container
args of the manifest (port and host rewritten to a free loopback port) on a folder laid out as
KServe lays out /mnt/models, answering the manifest's probes, inference and the model agent's
load/unload calls through real HTTP."""

from __future__ import annotations

import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.deploy.kube import one
from tests.serverproc import ROOT, ServerProcess, start_command

BUNDLED = ROOT / "model_repository"
DIGITS_REQUEST = (ROOT / "examples" / "digits_request.json").read_bytes()
IRIS_REQUEST = b'{"inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}'
JSON = {"Content-Type": "application/json"}


def container(runtime: str) -> dict:
    [found] = one("ClusterServingRuntime", runtime).body["spec"]["containers"]
    return found


def launch(runtime: str, mnt_models: Path, isvc_name: str) -> tuple[ServerProcess, dict]:
    """Start repoman as the runtime's container would; its probes, keyed by kind."""
    spec = container(runtime)
    args = [arg.replace("{{.Name}}", isvc_name) for arg in spec["args"]]
    assert args[0] == "serve", args  # NOTE: after the image's entrypoint, `repoman`
    port = spec["ports"][0]["containerPort"]
    rewritten = []
    for arg in args:
        flag, _, value = arg.partition("=")
        if flag == "--model-repository":
            assert value == "/mnt/models", arg
            arg = f"{flag}={mnt_models}"
        elif flag == "--http-port":
            assert int(value) == port, (arg, port)
            arg = f"{flag}=0"  # NOTE: the OS picks a free one; the log says which
        elif flag == "--grpc-port":
            arg = f"{flag}=0"
        elif flag in ("--host", "--http-address"):
            arg = f"{flag}=127.0.0.1"
        rewritten.append(arg)
    probes = {}
    for kind in ("readinessProbe", "livenessProbe"):
        probe = spec[kind]["httpGet"]
        assert probe["port"] == port, (kind, probe)
        probes[kind] = probe["path"]
    server = start_command([sys.executable, "-m", "repoman", *rewritten], ready=False)
    return server, probes


def probe(server: ServerProcess, path: str) -> int:
    try:
        with urllib.request.urlopen(server.url + path, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_for(server: ServerProcess, path: str, status: int = 200, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (found := probe(server, path)) != status:
        assert server.process.poll() is None, "repoman exited:\n" + server.log()
        assert time.monotonic() < deadline, f"{path}: {found}, not {status}\n" + server.log()
        time.sleep(0.05)


def infer(server: ServerProcess, model: str, body: bytes) -> tuple[int, dict]:
    return server.request("POST", f"/v2/models/{model}/infer", body, JSON)


@pytest.fixture
def stopped():
    started: list[ServerProcess] = []
    yield started.append
    for server in started:
        assert server.stop() == 0, server.log()


def test_single_model_the_storage_initializer_layout_is_served_as_the_isvc_model(
    tmp_path, stopped
) -> None:
    isvc = one("InferenceService", "digits", "inferenceservice.yaml").body
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == "repoman"
    # the storage initializer copies the storageUri's contents to /mnt/models: the model's
    # config and version folders at its root
    mnt_models = tmp_path / "mnt" / "models"
    shutil.copytree(BUNDLED / "digits", mnt_models)
    server, probes = launch(model["runtime"], mnt_models, isvc["metadata"]["name"])
    stopped(server)
    wait_for(server, probes["livenessProbe"])
    wait_for(server, probes["readinessProbe"])
    status, answer = infer(server, "digits", DIGITS_REQUEST)
    assert status == 200, answer
    assert next(o for o in answer["outputs"] if o["name"] == "label")["data"] == [0]
    status, index = server.request("POST", "/v2/repository/index", b"{}")
    assert [(row["name"], row["state"]) for row in index] == [("digits", "READY")], index
    # the runtime's args serve grpc-v2 beside HTTP
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        assert client.is_server_ready() and client.is_model_ready("digits")
    # what the autoscaling example queries is on the port Prometheus is told to scrape
    metrics = urllib.request.urlopen(server.url + "/metrics", timeout=10).read().decode()
    for name in ("nv_inference_pending_request_count", "nv_inference_queue_duration_us",
                 "nv_inference_request_success"):
        lines = [line for line in metrics.splitlines() if line.startswith(name + "{")]
        assert any('model="digits"' in line for line in lines), (name, metrics)


def test_multi_model_an_empty_repository_is_filled_by_the_agents_load_and_unload_calls(
    tmp_path, stopped
) -> None:
    isvc = one("InferenceService", "repoman-models").body
    runtime = isvc["spec"]["predictor"]["model"]["runtime"]
    mnt_models = tmp_path / "mnt" / "models"
    mnt_models.mkdir(parents=True)
    server, probes = launch(runtime, mnt_models, isvc["metadata"]["name"])
    stopped(server)
    wait_for(server, probes["livenessProbe"])
    wait_for(server, probes["readinessProbe"])  # ready with no model yet: the agent adds them
    status, index = server.request("POST", "/v2/repository/index", b"{}")
    assert (status, index) == (200, []), index

    names = ["digits", "iris"]
    for trained in names:
        spec = one("TrainedModel", trained).body["spec"]
        assert spec["inferenceService"] == isvc["metadata"]["name"]
        # what the agent does: download to /mnt/models/<name>, then load it by name
        shutil.copytree(BUNDLED / trained, mnt_models / trained)
        status, answer = server.request("POST", f"/v2/repository/models/{trained}/load", b"")
        assert status == 200, answer
        wait_for(server, f"/v2/models/{trained}/ready")
    assert infer(server, "digits", DIGITS_REQUEST)[0] == 200
    status, answer = infer(server, "iris", IRIS_REQUEST)
    assert status == 200, answer
    assert next(o for o in answer["outputs"] if o["name"] == "label")["data"] == [0]

    # a TrainedModel deleted: the agent unloads it, then removes its folder
    status, answer = server.request("POST", "/v2/repository/models/digits/unload", b"")
    assert status == 200, answer
    shutil.rmtree(mnt_models / "digits")
    wait_for(server, "/v2/models/digits/ready", status=404)
    assert infer(server, "digits", DIGITS_REQUEST)[0] == 404
    assert infer(server, "iris", IRIS_REQUEST)[0] == 200
    wait_for(server, probes["readinessProbe"])
