"""GET /status.json (and the page's files at /): what the status page shows, from the core."""

from __future__ import annotations

import http.client
import json
import shutil
import time

import pytest

from tests.conftest import BUNDLED
from tests.fakes import write_model

TOKEN = "st4tus"


def fetch(server, path: str, token: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def status(server, token: str | None = None) -> dict:
    code, body, _ = fetch(server, "/status.json", token)
    assert code == 200, body
    return json.loads(body)


def model(document: dict, name: str) -> dict:
    return next(m for m in document["models"] if m["name"] == name)


def auto_completed_digits(repo) -> None:
    """The bundled digits model with a config that leaves its tensors to auto-complete."""
    shutil.copytree(BUNDLED / "digits", repo / "digits")
    (repo / "digits" / "config.pbtxt").write_text(
        'name: "digits"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 32\n'
    )


def test_the_page_and_its_document(tmp_path, server_factory, plugins_dir):
    repo = tmp_path / "repo"
    auto_completed_digits(repo)
    write_model(repo, "echo", versions=(1, 2))
    write_model(repo, "broken", backend="failing_load")
    (repo / "typo").mkdir()
    (repo / "typo" / "config.pbtxt").write_text('name: "typo"\nmax_batch_size: "eight"\n')
    (repo / "typo" / "1").mkdir()
    (repo / "echo" / "latest").mkdir()
    server = server_factory(repo, "--plugins-dir", str(plugins_dir))

    code, html, headers = fetch(server, "/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert b'src="/status.js"' in html and b"http" not in html.split(b"<body>")[1].lower()
    for path, kind in (("/status.js", "text/javascript"), ("/status.css", "text/css")):
        code, _, headers = fetch(server, path)
        assert code == 200 and headers["Content-Type"].startswith(kind)

    document = status(server)
    assert document["server"]["ready"] is True
    echo = model(document, "echo")
    assert echo["serving"] == 2  # the newest ready version takes unversioned traffic
    assert [(v["version"], v["state"]) for v in echo["versions"]] == [(2, "READY")]
    digits = model(document, "digits")["versions"][0]
    assert digits["state"] == "READY" and digits["load_seconds"] > 0
    assert set(digits["auto_completed"]) == {"input", "output"}
    assert digits["config"]["input"][0]["name"] == "pixels"
    broken = model(document, "broken")["versions"][0]
    assert broken["state"] == "FAILED" and "broken on purpose" in broken["reason"]
    typo = model(document, "typo")
    assert typo["serving"] is None and typo["versions"] == []
    issue = typo["issues"][0]
    assert issue["file"] == "typo/config.pbtxt" and issue["line"] == 2  # relative, as validate
    assert "max_batch_size" in issue["message"]
    # No control token: the repository API answers anyone, so the page shows what it saw.
    report = document["repository"]
    assert report["mode"] == "poll" and report["scanned_at"] > 0
    assert "echo/latest: not a version folder (not a number)" in report["ignored"]
    assert not any(str(tmp_path) in line for line in report["ignored"])  # redacted
    assert document["control"] is False  # poll mode: nothing to load or unload by hand


def test_live_counters_move(tmp_path, server_factory, plugins_dir):
    repo = tmp_path / "repo"
    write_model(repo, "echo", extra="dynamic_batching { max_queue_delay_microseconds: 0 }\n")
    server = server_factory(repo, "--plugins-dir", str(plugins_dir), "--http-workers", "2")
    body = json.dumps(
        {"inputs": [{"name": "INPUT", "shape": [2, 4], "datatype": "FP32", "data": [1.0] * 8}]}
    )
    for _ in range(6):
        headers = {"Content-Type": "application/json"}
        code, _ = server.request("POST", "/v2/models/echo/infer", body.encode(), headers)
        assert code == 200
    deadline = time.monotonic() + 10
    while True:
        stats = model(status(server), "echo")["versions"][0]["stats"]
        if stats["success"] == 6 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert stats["success"] == 6 and stats["inferences"] == 12 and stats["executions"] == 6
    assert sum(stats["latency_seconds"]["counts"]) == 6
    assert sum(stats["batch_sizes"]["counts"]) == 6 and stats["batch_sizes"]["counts"][1] == 6
    assert sum(stats["encode_seconds"]["counts"]) == 6  # told by the front-ends
    assert stats["queued"] == 0


@pytest.mark.parametrize("protect", [False, True])
def test_the_page_shows_no_more_than_the_token_allows(tmp_path, server_factory, protect):
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED / "digits", repo / "digits")
    args = ["--control-token", TOKEN, "--model-control-mode", "explicit", "--load-model", "*"]
    server = server_factory(repo, *args, *(["--protect-inference"] if protect else []))
    assert fetch(server, "/")[0] == 200  # the page itself holds no data
    if protect:
        assert fetch(server, "/status.json")[0] == 401
        assert fetch(server, "/status.json", "wrong")[0] == 403
    else:
        anyone = status(server)
        assert model(anyone, "digits")["versions"][0]["state"] == "READY"
        assert anyone["repository"] is None and anyone["control"] is False
    holder = status(server, TOKEN)
    assert holder["repository"]["mode"] == "explicit" and holder["control"] is True
