"""The bundled repository, served for real and driven with Triton's own client."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def client(bundled_server):
    with httpclient.InferenceServerClient(bundled_server.address) as c:
        yield c


def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "repoman"
    assert "binary_tensor_data" in meta["extensions"]


def test_models_are_ready(client):
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "1")
    assert client.is_model_ready("iris")
    assert not client.is_model_ready("no_such_model")


def test_model_metadata_and_config(client):
    meta = client.get_model_metadata("digits")
    assert meta["name"] == "digits"
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]
    assert {o["name"] for o in meta["outputs"]} == {"probabilities", "label"}
    config = client.get_model_config("digits")
    assert config["max_batch_size"] == 32
    assert config["input"][0]["dims"] == [64]
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    yaml_config = client.get_model_config("iris")
    assert yaml_config["name"] == "iris" and yaml_config["platform"] == "onnxruntime_onnx"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_digits_classifies_heldout_images(client, heldout, binary):
    pixels = np.array(heldout["digits"]["pixels"], dtype=np.float32)
    labels = heldout["digits"]["labels"]
    inp = httpclient.InferInput("pixels", list(pixels.shape), "FP32")
    inp.set_data_from_numpy(pixels, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=binary),
        httpclient.InferRequestedOutput("probabilities", binary_data=binary),
    ]
    result = client.infer("digits", [inp], outputs=outputs, request_id="r-1")
    assert result.get_response()["id"] == "r-1"
    assert result.get_response()["model_version"] == "1"
    assert result.as_numpy("label").reshape(-1).tolist() == labels
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (len(labels), 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_iris_yaml_model_classifies(client, heldout):
    features = np.array(heldout["iris"]["features"], dtype=np.float32)
    inp = httpclient.InferInput("features", list(features.shape), "FP32")
    inp.set_data_from_numpy(features)
    result = client.infer("iris", [inp], model_version="1")
    assert result.as_numpy("label").reshape(-1).tolist() == heldout["iris"]["labels"]


def test_only_requested_outputs_are_returned(client, heldout):
    pixels = np.array(heldout["digits"]["pixels"][:1], dtype=np.float32)
    inp = httpclient.InferInput("pixels", [1, 64], "FP32")
    inp.set_data_from_numpy(pixels)
    result = client.infer("digits", [inp], outputs=[httpclient.InferRequestedOutput("label")])
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert names == ["label"]


def test_readme_curl_request_body(bundled_server):
    body = (ROOT / "examples" / "digits_request.json").read_bytes()
    status, answer = bundled_server.request(
        "POST", "/v2/models/digits/infer", body, {"Content-Type": "application/json"}
    )
    assert status == 200, answer
    expected = int(json.loads(body)["id"].rsplit("-", 1)[1])
    label = next(o for o in answer["outputs"] if o["name"] == "label")
    assert label["data"] == [expected]
    assert answer["model_name"] == "digits" and answer["model_version"] == "1"


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v2/models/nope/infer", b'{"inputs": []}', 404, "unknown model"),
        ("/v2/models/digits/versions/7/infer", b'{"inputs": []}', 404, "version 7"),
        ("/v2/models/digits/versions/x1/infer", b'{"inputs": []}', 400, "invalid model version"),
        ("/v2/models/digits/infer", b"{not json", 400, "JSON"),
        (
            "/v2/models/digits/infer",
            b'{"inputs": [{"name": "pixels", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}',
            400,
            "expected shape",
        ),
        (
            "/v2/models/digits/infer",
            b'{"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "INT32", "data": '
            + str([0] * 64).encode()
            + b"}]}",
            400,
            "datatype",
        ),
        (
            "/v2/models/digits/infer",
            b'{"inputs": [{"name": "image", "shape": [1, 64], "datatype": "FP32", "data": '
            + str([0] * 64).encode()
            + b"}]}",
            400,
            "image",
        ),
        (
            "/v2/models/digits/infer",
            b'{"inputs": [{"name": "pixels", "shape": [33, 64], "datatype": "FP32", "data": '
            + str([0] * 64 * 33).encode()
            + b"}]}",
            400,
            "max_batch_size",
        ),
    ],
    ids=[
        "unknown-model",
        "unknown-version",
        "bad-version",
        "bad-json",
        "bad-shape",
        "bad-datatype",
        "unknown-input",
        "batch-too-large",
    ],
)
def test_bad_requests_get_clear_json_errors(bundled_server, path, body, status, words):
    got, answer = bundled_server.request("POST", path, body, {"Content-Type": "application/json"})
    assert got == status, answer
    assert words.lower() in answer["error"].lower(), answer


def test_tritonclient_sees_errors_as_exceptions(client):
    inp = httpclient.InferInput("pixels", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="expected shape"):
        client.infer("digits", [inp])


def test_repository_index_lists_versions(bundled_server):
    status, index = bundled_server.request("POST", "/v2/repository/index", b"{}")
    assert status == 200
    rows = {(row["name"], row.get("version")): row for row in index}
    for name in ("digits", "iris"):
        assert rows[(name, "1")]["state"] == "READY", index
        assert rows[(name, "1")]["memory_bytes"] > 0  # measured when it loaded


def test_statistics_count_what_was_sent(bundled_server, heldout):
    with httpclient.InferenceServerClient(bundled_server.address) as client:
        before = client.get_inference_statistics("iris", "1")["model_stats"][0]
        features = np.array(heldout["iris"]["features"][:3], dtype=np.float32)
        inp = httpclient.InferInput("features", [3, 4], "FP32")
        inp.set_data_from_numpy(features)
        for _ in range(5):
            client.infer("iris", [inp])
        after = client.get_inference_statistics("iris", "1")["model_stats"][0]
        everything = client.get_inference_statistics()["model_stats"]
    assert after["inference_count"] - before["inference_count"] == 15
    assert after["execution_count"] - before["execution_count"] == 5  # iris: no dynamic batching
    success = (
        after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    )
    assert success == 5
    assert any(b["batch_size"] == 3 for b in after["batch_stats"])
    assert {(s["name"], s["version"]) for s in everything} >= {("digits", "1"), ("iris", "1")}


def test_readme_ensemble_curl_request_body(bundled_server):
    body = (ROOT / "examples" / "iris_species_request.json").read_bytes()
    status, answer = bundled_server.request(
        "POST", "/v2/models/iris_species/infer", body, {"Content-Type": "application/json"}
    )
    assert status == 200, answer
    species = next(o for o in answer["outputs"] if o["name"] == "species")
    assert species["data"] == ["setosa", "virginica"]
    assert answer["model_name"] == "iris_species" and answer["model_version"] == "1"
