"""Every manifest under deploy/ is one KServe's API server would accept (its real CRD schemas,
strict field validation), and the manifests agree with each other and with repoman."""

from __future__ import annotations

import jsonschema
import pytest

import repoman
from tests.deploy.kube import KSERVE, OBJECT_META, crd_schemas, manifests, one

RUNTIMES = ("repoman", "repoman-multimodel")


@pytest.mark.parametrize("manifest", manifests(), ids=str)
def test_every_manifest_validates_against_kserve_crds(manifest) -> None:
    schemas = crd_schemas()
    key = (manifest.body.get("apiVersion"), manifest.body.get("kind"))
    assert key in schemas, f"{manifest}: not a kind KServe serves ({sorted(schemas)})"
    errors = sorted(
        jsonschema.Draft7Validator(schemas[key]).iter_errors(manifest.body),
        key=lambda e: list(e.absolute_path),
    )
    assert not errors, "\n".join(
        f"{manifest}: {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )
    meta = jsonschema.Draft7Validator(OBJECT_META).iter_errors(manifest.body["metadata"])
    assert not list(meta), [e.message for e in meta]


def test_the_validation_refuses_what_the_api_server_would() -> None:
    # NOTE: the strictness the check above relies on, shown on a copy of a real manifest.
    runtime = one("ClusterServingRuntime", "repoman").body
    schema = crd_schemas()[("serving.kserve.io/v1alpha1", "ClusterServingRuntime")]
    validator = jsonschema.Draft7Validator(schema)
    assert validator.is_valid(runtime)
    bad_field = {**runtime, "spec": {**runtime["spec"], "protocolVersion": ["v2"]}}
    assert not validator.is_valid(bad_field)  # a misspelt field
    container = {**runtime["spec"]["containers"][0], "readinessProbe": {"httpGet": {"path": 1}}}
    bad_type = {**runtime, "spec": {**runtime["spec"], "containers": [container]}}
    assert not validator.is_valid(bad_type)  # wrong type, and httpGet.port missing
    assert not jsonschema.Draft7Validator(OBJECT_META).is_valid({"name": "Not_A_Name"})


@pytest.mark.parametrize("name", RUNTIMES)
def test_the_runtimes_are_what_kserve_expects_of_a_v2_runtime(name) -> None:
    spec = one("ClusterServingRuntime", name).body["spec"]
    assert "v2" in spec["protocolVersions"]
    assert {f["name"] for f in spec["supportedModelFormats"]} >= {
        "onnx", "tensorflow", "triton", "repoman"
    }
    assert spec["multiModel"] is (name == "repoman-multimodel")
    assert spec["annotations"]["prometheus.kserve.io/port"] == "8080"
    assert spec["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    [container] = spec["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"].endswith(f":{repoman.__version__}")
    assert "--model-repository=/mnt/models" in container["args"]
    assert "--http-port=8080" in container["args"]
    assert "--grpc-port=8081" in container["args"] and "grpc-v2" in spec["protocolVersions"]
    assert [p["containerPort"] for p in container["ports"]] == [8080]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and not security["allowPrivilegeEscalation"]
    # the two runtimes differ only in what makes one multi-model
    single = one("ClusterServingRuntime", "repoman").body["spec"]
    assert container == single["containers"][0]


def test_every_reference_between_manifests_resolves() -> None:
    runtimes = {m.name: m.body["spec"] for m in manifests() if m.kind == "ClusterServingRuntime"}
    services = {m.name: m.body["spec"] for m in manifests() if m.kind == "InferenceService"}
    for manifest in manifests():
        if manifest.kind == "InferenceService":
            model = manifest.body["spec"]["predictor"]["model"]
            runtime = runtimes[model["runtime"]]
            formats = {f["name"] for f in runtime["supportedModelFormats"]}
            assert model["modelFormat"]["name"] in formats, manifest
            assert model.get("protocolVersion", "v1") in runtime["protocolVersions"], manifest
            # a multi-model InferenceService gets its models from TrainedModels, not storageUri
            assert ("storageUri" in model) is (not runtime["multiModel"]), manifest
        if manifest.kind == "TrainedModel":
            service = services[manifest.body["spec"]["inferenceService"]]
            assert runtimes[service["predictor"]["model"]["runtime"]]["multiModel"], manifest


def test_the_autoscaling_example_scales_on_repoman_metrics() -> None:
    [scaled] = [m for m in manifests() if m.path == KSERVE / "autoscaling-keda.yaml"]
    assert scaled.body["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    queries = [
        metric["external"]["metric"]["query"]
        for metric in scaled.body["spec"]["predictor"]["autoScaling"]["metrics"]
    ]
    assert any("nv_inference_pending_request_count" in q for q in queries), queries
    assert any("nv_inference_queue_duration_us" in q for q in queries), queries
