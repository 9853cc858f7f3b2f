"""A soak mixing every hostile input we know of with valid traffic: the valid traffic is unharmed.

Two client threads infer the bundled digits model the whole time; one thread probes
``/v2/health/live``; the server's RSS is sampled. Meanwhile each hostile request is sent
(twice over) and must get its 4xx (or, for a hung model, a 504), never a 500. Bounded: a
fixed list of requests, each with its own timeout, and a deadline on the whole soak.
"""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

from tests.conftest import BUNDLED
from tests.e2e.test_hardening_http import _status_field, exchange, send
from tests.fakes import write_model

TOKEN = "s0ak"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
PROBE_LIMIT_S = 1.0
RSS_GROWTH_LIMIT = 400 * 1024 * 1024
SOAK_DEADLINE_S = 240


def infer_body(inputs: list[dict]) -> bytes:
    return json.dumps({"inputs": inputs}).encode()


def load_body(config: dict | str) -> bytes:
    text = config if isinstance(config, str) else json.dumps(config)
    return json.dumps({"parameters": {"config": text}}).encode()


def digits_config(**changes) -> dict:
    config = {
        "name": "digits",
        "backend": "onnxruntime",
        "max_batch_size": 8,
        "input": [{"name": "pixels", "data_type": "TYPE_FP32", "dims": [64]}],
        "output": [
            {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [10]},
            {"name": "label", "data_type": "TYPE_INT64", "dims": [1]},
        ],
    }
    config.update(changes)
    return config


def hostile_requests(server) -> list[tuple[str, set[int], Callable[[], int]]]:
    """(what, the statuses it may get, how to send it and get the status)."""

    def post(path: str, body: bytes, headers: dict | None = None) -> Callable[[], int]:
        return lambda: send(server, "POST", path, body, {**AUTH, **(headers or {})}, timeout=30)[0]

    zeros = (
        b'{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32","data":['
        + (b"0," * (31 * 2**20))
        + b"0]}]}"
    )
    many = infer_body(
        [{"name": f"x{i}", "shape": [1], "datatype": "FP32", "data": [0]} for i in range(400_000)]
    )
    several = infer_body(
        [{"name": f"x{i}", "shape": [1], "datatype": "FP32", "data": [0]} for i in range(60_000)]
    )
    rank = infer_body([{"name": "pixels", "shape": [1] * 40, "datatype": "FP32", "data": [0]}])
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    nested = b'{"parameters": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    warmup = [
        {
            "name": "w",
            "batch_size": 8,
            "inputs": {"pixels": {"data_type": "TYPE_FP32", "dims": [2**30], "zero_data": True}},
        }
    ]

    def declared_too_long() -> int:
        head = (
            b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{"
        )
        answer, _, _ = exchange(server, head, wait=5)
        return int(answer.split(b" ", 2)[1]) if answer else 0

    def trickle() -> int:
        body = infer_body(
            [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}]
        )
        head = (
            f"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(head + body[:10])  # the rest never comes
            sock.settimeout(10)
            answer = sock.recv(4096)
        return int(answer.split(b" ", 2)[1]) if answer else 0

    return [
        (
            "gzip bomb",
            {413},
            post("/v2/models/digits/infer", gzip.compress(zeros), {"Content-Encoding": "gzip"}),
        ),
        (
            "corrupt gzip",
            {400},
            post("/v2/models/digits/infer", b"\x1f\x8b\x08garbage", {"Content-Encoding": "gzip"}),
        ),
        (
            "unknown encoding",
            {415},
            post("/v2/models/digits/infer", b"{}", {"Content-Encoding": "snappy"}),
        ),
        ("400k inputs", {413}, post("/v2/models/digits/infer", many)),
        ("60k inputs", {400}, post("/v2/models/digits/infer", several)),
        ("rank 40", {400}, post("/v2/models/digits/infer", rank)),
        ("a 1 GiB Content-Length", {413}, declared_too_long),
        ("a trickling body", {408}, trickle),
        (
            "non-ASCII token",
            {401},
            post(
                "/v2/repository/models/digits/load",
                b"",
                {"Authorization": "Bearer t\u00f6ken".encode()},
            ),
        ),
        ("nested load body", {400}, post("/v2/repository/models/digits/load", nested)),
        (
            "YAML alias bomb override",
            {400},
            post("/v2/repository/models/digits/load", load_body(bomb)),
        ),
        (
            "a file outside the repository",
            {400},
            post(
                "/v2/repository/models/digits/load",
                load_body(digits_config(default_model_filename="/etc/passwd")),
            ),
        ),
        (
            "max_batch_size 10^23",
            {400},
            post(
                "/v2/repository/models/digits/load", load_body(digits_config(max_batch_size=10**23))
            ),
        ),
        (
            "a 4 GiB warm-up",
            {400},
            post(
                "/v2/repository/models/digits/load", load_body(digits_config(model_warmup=warmup))
            ),
        ),
        ("a Unicode digit version", {400}, post("/v2/models/digits/versions/%D9%A1/infer", b"{}")),
        ("a trailing newline name", {400}, post("/v2/models/digits%0A/infer", b"{}")),
        (
            "a hung model",
            {504, 503},
            post(
                "/v2/models/stuck/infer",
                infer_body(
                    [{"name": "INPUT", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
                ),
            ),
        ),
    ]


class Valid(threading.Thread):
    """Infers digits in a loop until stopped; counts answers and failures."""

    def __init__(self, server) -> None:
        super().__init__(daemon=True)
        self.server, self.ok, self.failures = server, 0, []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpclient.InferenceServerClient(self.server.address, network_timeout=30) as client:
            inp = httpclient.InferInput("pixels", [1, 64], "FP32")
            inp.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
            while not self.stop.is_set():
                try:
                    client.infer("digits", [inp]).as_numpy("label")
                    self.ok += 1
                except Exception as exc:
                    self.failures.append(repr(exc))
                time.sleep(0.005)


def test_hostile_inputs_leave_valid_traffic_unharmed(tmp_path: Path, plugins_dir, server_factory):
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED / "digits", repo / "digits")
    write_model(repo, "stuck", backend="blocking")
    server = server_factory(
        repo,
        "--plugins-dir",
        str(plugins_dir),
        "--model-control-mode",
        "explicit",
        "--load-model",
        "*",
        "--control-token",
        TOKEN,
        "--execution-timeout",
        "1",
        "--request-read-timeout",
        "2",
    )
    pid = server.process.pid
    # Built before any thread starts: building them holds this process's GIL for half a second
    # at a time (400k inputs through json.dumps), which the live probe below would read as
    # the server's stall.
    hostile = hostile_requests(server)
    valid = [Valid(server), Valid(server)]
    slowest, rss = [0.0], [_status_field(pid, "VmRSS")]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            started = time.monotonic()
            status, _, _ = send(server, "GET", "/v2/health/live", timeout=10)
            slowest[0] = max(slowest[0], time.monotonic() - started if status == 200 else 99)
            rss.append(_status_field(pid, "VmRSS"))
            done.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    for thread in [*valid, watcher]:
        thread.start()
    deadline = time.monotonic() + 30
    while sum(thread.ok for thread in valid) < 20:  # valid traffic under way first
        assert time.monotonic() < deadline, "no valid traffic"
        time.sleep(0.05)
    base_rss = max(rss)
    outcomes: list[tuple[str, int]] = []
    deadline = time.monotonic() + SOAK_DEADLINE_S
    try:
        for _ in range(2):
            for what, allowed, request in hostile:
                assert time.monotonic() < deadline, "the soak ran past its deadline"
                status = request()
                outcomes.append((what, status))
                assert status in allowed, (what, status, server.log()[-3000:])
    finally:
        done.set()
        for thread in valid:
            thread.stop.set()
        for thread in [*valid, watcher]:
            thread.join(30)
    assert len(outcomes) == 2 * 17 and not any(status == 500 for _, status in outcomes)
    assert sum(thread.ok for thread in valid) > 50
    assert [f for thread in valid for f in thread.failures] == []
    assert slowest[0] < PROBE_LIMIT_S, f"a live probe took {slowest[0]:.2f} s"
    growth = max(rss) - base_rss
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.0f} MiB"
