"""Prometheus metrics after a known workload: exact counts, Triton's names, our extras."""

from __future__ import annotations

import contextlib
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.conftest import ROOT
from tests.fakes import write_model


def scrape(server) -> dict[tuple[str, tuple], float]:
    import urllib.request

    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels) -> float:
    key = tuple(sorted(labels.items()))
    # NOTE: prometheus-client's parser reads a counter sample `x` as `x_total`.
    return samples[(name, key)] if (name, key) in samples else samples[(name + "_total", key)]


def test_counts_after_a_scripted_run_match_exactly(tmp_path, server_factory):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(ROOT / "tests" / "fakes.py", plugins / "fakes.py")
    repo = tmp_path / "repo"
    write_model(repo, "echo", extra="dynamic_batching { max_queue_delay_microseconds: 0 }\n")
    write_model(repo, "bad", backend="raising")
    write_model(
        repo,
        "slow",
        max_batch_size=1,
        extra=(
            'parameters { key: "delay_ms" value: { string_value: "300" } }\n'
            "dynamic_batching { default_queue_policy { max_queue_size: 1 } }\n"
        ),
    )
    write_model(repo, "broken", backend="failing_load")
    server = server_factory(repo, "--plugins-dir", str(plugins), "--num-batch-threads", "2")

    with httpclient.InferenceServerClient(server.address) as client:
        for rows in (1, 2, 3):  # 3 requests, 6 rows
            inp = httpclient.InferInput("INPUT", [rows, 4], "FP32")
            inp.set_data_from_numpy(np.ones((rows, 4), dtype=np.float32))
            client.infer("echo", [inp])
        bad = httpclient.InferInput("INPUT", [1, 4], "FP32")
        bad.set_data_from_numpy(-np.ones((1, 4), dtype=np.float32))
        for _ in range(2):
            with contextlib.suppress(InferenceServerException):  # expected 500s
                client.infer("bad", [bad])

    def slow_call(_):
        with httpclient.InferenceServerClient(server.address) as c:
            inp = httpclient.InferInput("INPUT", [1, 4], "FP32")
            inp.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
            try:
                c.infer("slow", [inp])
                return "ok"
            except InferenceServerException as exc:
                return str(exc)

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(slow_call, range(4)))
    full = sum("queue is full" in o for o in outcomes)
    assert full >= 1, outcomes

    samples = scrape(server)
    echo = {"model": "echo", "version": "1"}
    assert value(samples, "nv_inference_request_success", **echo) == 3
    assert value(samples, "nv_inference_count", **echo) == 6
    assert value(samples, "nv_inference_exec_count", **echo) == 3
    assert value(samples, "nv_inference_request_failure", reason="backend", **echo) == 0
    bad_labels = {"model": "bad", "version": "1"}
    assert value(samples, "nv_inference_request_failure", reason="backend", **bad_labels) == 2
    assert value(samples, "nv_inference_request_success", **bad_labels) == 0
    slow = {"model": "slow", "version": "1"}
    assert value(samples, "repoman_rejected_requests_total", reason="queue_full", **slow) == full
    assert value(samples, "nv_inference_request_failure", reason="queue_full", **slow) == full
    assert value(samples, "repoman_request_duration_seconds_count", **echo) == 3
    assert value(samples, "repoman_request_compute_seconds_count", **echo) == 3
    assert value(samples, "repoman_request_batch_wait_seconds_count", **echo) == 3
    assert value(samples, "repoman_request_encode_seconds_count", **echo) == 3
    assert value(samples, "nv_inference_request_success", **slow) == outcomes.count("ok")
    assert value(samples, "repoman_batch_size_count", **echo) == 3
    assert value(samples, "repoman_batch_size_bucket", le="2.0", **echo) == 2  # sizes 1 and 2
    assert value(samples, "repoman_queue_duration_seconds_count", **echo) == 3
    assert value(samples, "repoman_version_state", state="READY", **echo) == 1
    assert value(samples, "repoman_version_state", state="FAILED", model="broken", version="1") == 1
    assert value(samples, "repoman_model_load_failures_total", model="broken", version="1") == 1
    assert value(samples, "nv_inference_pending_request_count", **echo) == 0
    assert value(samples, "nv_model_load_duration_secs", **echo) >= 0
    for name in (
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
    ):
        assert value(samples, name, **echo) >= 0


def test_triton_counter_names_are_exact(bundled_server):
    import urllib.request

    with urllib.request.urlopen(bundled_server.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    assert re.search(r'^nv_inference_count\{model="digits",version="1"\} \d+', text, re.M)
    assert "# TYPE nv_inference_request_success counter" in text


def test_every_metric_is_in_the_readme_table(bundled_server):
    """The README's metrics table names every family the server exposes, as exposed
    (repoman's counters with ``_total``, Triton's without), and nothing that is not."""
    import urllib.request

    with urllib.request.urlopen(bundled_server.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    exposed = set(re.findall(r"^# TYPE ((?:nv|repoman)_\w+) ", text, re.M))
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `((?:nv|repoman)_\w+)` \|", readme, re.M))
    assert exposed - documented == set()
    assert documented - exposed <= {"repoman_memory_budget_bytes"}  # NOTE: with a budget only
