"""Hostile HTTP input against the real server: slow bodies, bombs, odd headers, leaked paths.

Every request goes to 127.0.0.1 on a fresh connection. While a hostile request is in flight a
second thread probes ``/v2/health/live``: the event loop must keep answering (under 1 s) and
the server's peak RSS (``VmHWM``, reset before each request) must stay within a budget.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import BUNDLED, ROOT
from tests.fakes import write_model
from tests.serverproc import ServerProcess, start_server

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KNOWN_GOOD = (ROOT / "examples" / "digits_request.json").read_bytes()
LIVE_WITHIN_S = 1.0  # the slowest acceptable live probe while a hostile request is served
RSS_BUDGET = 320 * 1024 * 1024  # the most one hostile request may add to peak RSS (was 870 MiB)
HEADER_LENGTH = "Inference-Header-Content-Length"


# --- talking to the server --------------------------------------------------------------------


def send(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str | bytes] | None = None,
    timeout: float = 60,
) -> tuple[int, dict, bytes]:
    """One request on its own connection: status, headers, body (nothing added but the length)."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            connection.putheader(key, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        connection.close()


def error_of(status: int, headers: dict, body: bytes) -> str:
    """The JSON error message of a 4xx answer (asserting it is one)."""
    assert 400 <= status < 500, (status, body[:300])
    assert headers.get("Content-Type", "").startswith("application/json"), (headers, body[:300])
    message = json.loads(body)["error"]
    assert isinstance(message, str) and message
    return message


def exchange(server: ServerProcess, data: bytes, *, wait: float) -> tuple[bytes, bool, float]:
    """Send raw bytes; read until the server closes or ``wait`` s pass.

    Returns what came back, whether the server closed the connection, and when it did.
    """
    started = time.monotonic()
    with socket.create_connection((server.host, server.port), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        deadline = started + wait
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                return received, True, time.monotonic() - started
            if not chunk:
                return received, True, time.monotonic() - started
            received += chunk
    return received, False, time.monotonic() - started


def _status_field(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process ``pid`` and its descendants have used: what a
    request cost the server, whatever else the machine was doing meanwhile."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for child in (task / "children").read_text().split():
            with contextlib.suppress(FileNotFoundError):
                total += cpu_seconds(int(child))
    return total


@dataclass
class Watch:
    """What a hostile request did to the server: the slowest live probe and the RSS it added."""

    base_rss: int
    slowest_probe_s: float = 0.0
    probes: int = 0
    peak_rss: int = 0

    @property
    def added_rss(self) -> int:
        return self.peak_rss - self.base_rss

    def check(self) -> None:
        assert self.probes >= 1
        assert self.slowest_probe_s < LIVE_WITHIN_S, f"live probe took {self.slowest_probe_s:.2f}s"
        assert self.added_rss < RSS_BUDGET, f"peak RSS grew by {self.added_rss / 2**20:.0f} MiB"


@contextmanager
def watched(server: ServerProcess) -> Iterator[Watch]:
    """Probe ``/v2/health/live`` every 20 ms and track peak RSS while the block runs."""
    pid = server.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    watch = Watch(base_rss=_status_field(pid, "VmRSS"))
    done = threading.Event()

    def probe() -> None:
        while True:
            started = time.monotonic()
            try:
                status, _, _ = send(server, "GET", "/v2/health/live", timeout=10)
                assert status == 200
            except (OSError, AssertionError):
                watch.slowest_probe_s = math.inf
            else:
                watch.slowest_probe_s = max(watch.slowest_probe_s, time.monotonic() - started)
            watch.probes += 1
            if done.wait(0.02):
                return

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        done.set()
        thread.join(15)
        watch.peak_rss = _status_field(pid, "VmHWM")


# --- servers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """The bundled repository with default limits, the repository API behind a token."""
    started = start_server(BUNDLED, "--control-token", TOKEN)
    yield started
    assert started.stop() == 0, started.log()[-4000:]


@pytest.fixture(scope="module")
def odd_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with broken models (their errors name files) and fake BYTES models."""
    root = tmp_path_factory.mktemp("hardening")
    repo = root / "repo"
    shutil.copytree(BUNDLED / "digits", repo / "digits")
    bad = repo / "badonnx"
    (bad / "1").mkdir(parents=True)
    (bad / "1" / "model.onnx").write_bytes(b"not a protobuf")
    (bad / "config.pbtxt").write_text(
        'name: "badonnx"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
        'input [{ name: "x" data_type: TYPE_FP32 dims: [ 1 ] }]\n'
        'output [{ name: "y" data_type: TYPE_FP32 dims: [ 1 ] }]\n'
    )
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "config.pbtxt").write_text('name: "broken"\nmax_batch_size: [\n')
    write_model(repo, "words", data_type="TYPE_STRING", dims=(4,), max_batch_size=8)
    write_model(repo, "texts", data_type="TYPE_STRING", dims=(-1,), max_batch_size=0)
    write_model(repo, "spare")
    plugins = root / "plugins"
    plugins.mkdir()
    shutil.copy(ROOT / "tests" / "fakes.py", plugins / "fakes.py")
    return repo


@pytest.fixture(scope="module")
def odd_server(odd_repo: Path) -> Iterator[ServerProcess]:
    started = start_server(
        odd_repo,
        "--plugins-dir",
        str(odd_repo.parent / "plugins"),
        "--model-control-mode",
        "explicit",
        "--load-model",
        "*",
        "--control-token",
        TOKEN,
    )
    yield started
    assert started.stop() == 0, started.log()[-4000:]


def assert_healthy(server: ServerProcess) -> None:
    assert server.process.poll() is None, server.log()[-4000:]
    status, _, body = send(server, "POST", "/v2/models/digits/infer", KNOWN_GOOD)
    assert status == 200, body[:300]


# --- decoding neither stalls the event loop nor balloons memory -------------------------------


def digits_json(data: bytes, shape: str = "[1,64]") -> bytes:
    return b'{"inputs":[{"name":"pixels","datatype":"FP32","shape":%s,"data":%s}]}' % (
        shape.encode(),
        data,
    )


def test_a_gzip_bomb_is_cut_off_while_it_inflates(server):
    # Just under --max-request-size (64 MiB) once inflated, so only a lower JSON limit stops it.
    document = digits_json(b"[" + b",".join([b"1"] * (31 * 1024 * 1024)) + b"]")
    bomb = gzip.compress(document, 9)
    assert len(bomb) < 100_000 and 60_000_000 < len(document) < 64 * 1024 * 1024
    with watched(server) as watch:
        answer = send(server, "POST", "/v2/models/digits/infer", bomb, {"Content-Encoding": "gzip"})
    assert answer[0] == 413, answer
    assert "JSON" in error_of(*answer)
    watch.check()
    assert_healthy(server)


@pytest.mark.parametrize("count", [400_000, 70_000])
def test_many_inputs_are_refused_before_any_is_decoded(server, count):
    # The first input is unknown to digits; 70k inputs fit under the JSON limit, 400k do not.
    entries = [b'{"name":"nope","datatype":"FP32","shape":[1],"data":[1]}']
    entries += [
        b'{"name":"i%d","datatype":"FP32","shape":[1],"data":[1]}' % i for i in range(count)
    ]
    body = b'{"inputs":[' + b",".join(entries) + b"]}"
    with watched(server) as watch:
        answer = send(server, "POST", "/v2/models/digits/infer", body)
    message = error_of(*answer)
    if answer[0] != 413:
        assert f"{count + 1} inputs" in message and "takes 1" in message, message
    watch.check()


def test_a_bytes_shape_over_the_config_is_refused_before_its_elements_are_split(odd_server):
    # 8M empty BYTES elements: each is a 4-byte length; `words` takes at most 8 x 4 of them.
    rows = 2_000_000
    tail = b"\x00" * (rows * 4 * 4)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT",
                    "datatype": "BYTES",
                    "shape": [rows, 4],
                    "parameters": {"binary_data_size": len(tail)},
                }
            ]
        }
    ).encode()
    with watched(odd_server) as watch:
        before = cpu_seconds(odd_server.process.pid)
        answer = send(
            odd_server,
            "POST",
            "/v2/models/words/infer",
            header + tail,
            {HEADER_LENGTH: str(len(header))},
        )
        used = cpu_seconds(odd_server.process.pid) - before
    assert "max_batch_size 8" in error_of(*answer)
    watch.check()
    # NOTE: CPU time, not wall time (a loaded machine stretches the latter): splitting 8M
    # elements costs the server about a second of CPU; reading 32 MB and refusing, a little
    assert used < 0.4, f"{used:.2f} s of CPU: were the 8M elements split before the shape was checked?"


def test_a_long_bytes_tensor_the_config_allows_is_split_off_the_event_loop(odd_server):
    # `texts` has a variable dimension, so only the element limit bounds it: 10M elements, the
    # last one lying about its length, take the decoder a second or more, but not the event loop.
    count = 10_000_000
    tail = b"\x00" * ((count - 1) * 4) + b"\xff\x00\x00\x00"
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT",
                    "datatype": "BYTES",
                    "shape": [count],
                    "parameters": {"binary_data_size": len(tail)},
                }
            ]
        }
    ).encode()
    with watched(odd_server) as watch:
        answer = send(
            odd_server,
            "POST",
            "/v2/models/texts/infer",
            header + tail,
            {HEADER_LENGTH: str(len(header))},
        )
    assert f"BYTES element {count - 1} declares 255 bytes" in error_of(*answer)
    watch.check()


def test_the_costliest_json_under_the_limit_leaves_the_event_loop_free(server):
    # Nested empty arrays are the slowest JSON to parse per byte (and parsing holds the GIL).
    count = (4 * 1024 * 1024 - 200) // 5
    body = digits_json(b"[" + b",".join([b"[[]]"] * count) + b"]")
    assert len(body) < 4 * 1024 * 1024
    with watched(server) as watch:
        answer = send(server, "POST", "/v2/models/digits/infer", body)
    assert "needs 64 elements" in error_of(*answer)
    watch.check()


# --- the client's fault is a 4xx, never a 500 -------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", b"\x1f\x8b\x08\x00 this is not gzip"),
        ("gzip", gzip.compress(KNOWN_GOOD)[:40]),  # cut short
        ("gzip", gzip.compress(KNOWN_GOOD) + b"trailing junk"),
        ("GZIP", KNOWN_GOOD),
        ("deflate", b"not deflate either"),
    ],
)
def test_a_corrupt_compressed_body_is_a_400(server, encoding, body):
    answer = send(server, "POST", "/v2/models/digits/infer", body, {"Content-Encoding": encoding})
    assert answer[0] == 400 and "content-encoding" in error_of(*answer).lower()
    assert_healthy(server)


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "x-gzip-ish", "gzip, gzip"])
def test_an_unsupported_content_encoding_is_a_415(server, encoding):
    body = KNOWN_GOOD if "gzip" not in encoding else gzip.compress(gzip.compress(KNOWN_GOOD))
    answer = send(server, "POST", "/v2/models/digits/infer", body, {"Content-Encoding": encoding})
    assert answer[0] == 415 and "gzip" in error_of(*answer)


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("identity", lambda body: body)],
)
def test_supported_content_encodings_still_work(server, encoding, compress):
    answer = send(
        server,
        "POST",
        "/v2/models/digits/infer",
        compress(KNOWN_GOOD),
        {"Content-Encoding": encoding},
    )
    assert answer[0] == 200, answer
    body = compress(b'{"parameters": {}}')
    status, _, _ = send(
        server,
        "POST",
        "/v2/repository/models/digits/load",
        body,
        {**AUTH, "Content-Encoding": encoding},
    )
    assert status == 400  # poll mode: loading needs explicit mode, but the body was read


def test_a_deeply_nested_load_body_is_a_400(server):
    body = b"[" * 100_000 + b"]" * 100_000
    answer = send(server, "POST", "/v2/repository/models/digits/load", body, AUTH)
    assert answer[0] == 400 and "nested too deeply" in error_of(*answer)


@pytest.mark.parametrize(
    "value", [b"Bearer \xff\xfe", "Bearer t\u00f6ken".encode(), b"Bearer\xa0" + TOKEN.encode()]
)
def test_a_non_ascii_authorization_header_is_a_401(server, value):
    answer = send(server, "POST", "/v2/repository/index", b"", {"Authorization": value})
    assert answer[0] == 401 and "Bearer" in error_of(*answer)


@pytest.mark.parametrize("token", ["t\u00f6ken", "two words", "tab\there"])
def test_a_token_no_client_could_present_is_refused_at_start(token):
    command = [sys.executable, "-m", "repoman", "serve", "--model-repository", str(BUNDLED)]
    done = subprocess.run(
        [*command, "--http-port", "0", "--control-token", token],
        capture_output=True,
        text=True,
        timeout=20,  # a server that starts would serve until then
        cwd=ROOT,
    )
    assert done.returncode != 0
    assert "printable ASCII" in done.stdout + done.stderr


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("rank", [33, 70, 10_000])
def test_a_very_high_rank_shape_is_a_400(server, rank, binary):
    entry: dict = {"name": "pixels", "datatype": "FP32", "shape": [1] * rank}
    if binary:
        entry["parameters"] = {"binary_data_size": 4}
    else:
        entry["data"] = [1.0]
    header = json.dumps({"inputs": [entry]}).encode()
    body, headers = (
        (header + b"\0\0\0\0", {HEADER_LENGTH: str(len(header))}) if binary else (header, {})
    )
    answer = send(server, "POST", "/v2/models/digits/infer", body, headers)
    assert answer[0] == 400 and "dimensions" in error_of(*answer)


@pytest.mark.parametrize("value", ["\u0661\u0662", "\uff11", "1 2", "1_2", "+12", "0x10", "1e3"])
def test_inference_header_content_length_takes_ascii_digits_only(server, value):
    answer = send(
        server,
        "POST",
        "/v2/models/digits/infer",
        KNOWN_GOOD,
        {HEADER_LENGTH: value.encode()},
    )
    assert answer[0] == 400 and HEADER_LENGTH in error_of(*answer)


# --- a declared length over the limit is refused before the body is read ----------------------


@pytest.mark.parametrize(
    ("path", "declared"),
    [
        ("/v2/models/digits/infer", 1_000_000_000),
        ("/v2/repository/models/digits/load", 1_000_000_000),
        ("/v2/models/digits/infer", 5 * 1024 * 1024),  # under --max-request-size, over JSON's
    ],
)
def test_a_declared_length_over_the_limit_is_a_413_at_once(server, path, declared):
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )
    received, closed, after = exchange(server, head.encode() + b'{"inputs": [', wait=5)
    assert received.startswith(b"HTTP/1.1 413 "), received[:300]
    assert closed and after < 3, (closed, after)


def test_a_client_expecting_100_continue_gets_the_413_instead(server):
    head = (
        b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: 1000000000\r\n\r\n"
    )
    received, closed, after = exchange(server, head, wait=5)
    assert received.startswith(b"HTTP/1.1 413 "), received[:300]
    assert b'"error"' in received and closed and after < 3
    small = head.replace(b"1000000000", b"%d" % len(KNOWN_GOOD)).replace(
        b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"
    )
    received, _, _ = exchange(server, small, wait=1)
    assert received.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), received[:300]


def test_a_client_that_keeps_sending_past_the_limit_is_cut_off(server):
    head = b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n"
    chunk = b"\0" * 65536
    started = time.monotonic()
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(head)
        with pytest.raises(OSError):  # the server closes: a reset, a broken pipe
            while time.monotonic() - started < 10:
                sock.sendall(chunk)
    assert time.monotonic() - started < 4
    assert_healthy(server)


# --- slow clients are timed out ---------------------------------------------------------------


@pytest.fixture(scope="module")
def impatient_server() -> Iterator[ServerProcess]:
    started = start_server(
        BUNDLED, "--request-read-timeout", "1", "--keepalive-timeout", "1", "--control-token", TOKEN
    )
    yield started
    assert started.stop() == 0, started.log()[-4000:]


def trickle(
    server: ServerProcess, head: bytes, drip: bytes, *, for_s: float
) -> tuple[bytes, float]:
    """Send ``head``, then ``drip`` byte by byte every 0.1 s until the server answers or closes."""
    started = time.monotonic()
    with socket.create_connection((server.host, server.port), timeout=for_s) as sock:
        sock.sendall(head)
        sock.settimeout(0.1)
        received = b""
        for byte in drip:
            if time.monotonic() - started > for_s:
                break
            try:
                sock.sendall(bytes([byte]))
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    return received, time.monotonic() - started


@pytest.mark.parametrize("path", ["/v2/models/digits/infer", "/v2/repository/models/digits/load"])
def test_a_trickling_body_is_a_408_and_closed(impatient_server, path):
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {len(KNOWN_GOOD)}\r\n\r\n"
    ).encode()
    received, after = trickle(impatient_server, head, KNOWN_GOOD, for_s=8)
    assert received.startswith(b"HTTP/1.1 408 "), received[:300]
    assert b"Connection: close" in received
    assert after < 4


def test_trickling_headers_are_cut_off(impatient_server):
    head = b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n"
    received, after = trickle(impatient_server, head, b"X-Slow: " + b"a" * 200, for_s=8)
    assert after < 4, "the connection was still open"
    assert not received.startswith(b"HTTP/1.1 200")


# --- answers name files relative to the repository --------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/models/badonnx/infer"),
        ("POST", "/v2/models/broken/infer"),
        ("GET", "/v2/models/badonnx"),
        ("GET", "/v2/models/broken"),
        ("GET", "/v2/models/badonnx/config"),
        ("GET", "/v2/models/broken/config"),
        ("GET", "/v2/models/badonnx/versions/1/config"),
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/repository/models/badonnx/load"),
        ("POST", "/v2/repository/models/broken/load"),
    ],
)
def test_answers_name_files_relative_to_the_repository(odd_server, odd_repo, method, path):
    body = KNOWN_GOOD if path.endswith("infer") else b""
    status, _, answer = send(odd_server, method, path, body, AUTH)
    text = answer.decode()
    for root in {str(odd_repo), str(odd_repo.resolve()), str(odd_repo.parent)}:
        assert root not in text, text
    if status != 200 or path.endswith("index"):  # a failed version's config is a plain 200
        assert "badonnx/1/model.onnx" in text or "broken/config.pbtxt" in text, text


# --- names and versions in URLs match their ASCII patterns exactly ----------------------------

ODD_NAMES = [
    "%D9%A1",  # ARABIC-INDIC DIGIT ONE
    "%EF%BC%91",  # FULLWIDTH DIGIT ONE
    "digits%0A",
    "digits%0D%0A",
    "digits%20",
    "%C4%B1ris",  # dotless i
    "a" * 129,
]
ODD_VERSIONS = ["%D9%A1", "%EF%BC%91", "1%0A", "%201", "1" * 19, "0", "+1"]
NAMED_ROUTES = [
    ("POST", "/v2/models/{}/infer"),
    ("GET", "/v2/models/{}"),
    ("GET", "/v2/models/{}/ready"),
    ("GET", "/v2/models/{}/config"),
    ("GET", "/v2/models/{}/stats"),
    ("POST", "/v2/repository/models/{}/load"),
    ("POST", "/v2/repository/models/{}/unload"),
]
VERSIONED_ROUTES = [
    ("POST", "/v2/models/digits/versions/{}/infer"),
    ("GET", "/v2/models/digits/versions/{}"),
    ("GET", "/v2/models/digits/versions/{}/ready"),
    ("GET", "/v2/models/digits/versions/{}/config"),
    ("GET", "/v2/models/digits/versions/{}/stats"),
]


@pytest.mark.parametrize("name", ODD_NAMES)
@pytest.mark.parametrize(("method", "route"), NAMED_ROUTES)
def test_odd_model_names_are_400s_on_every_route(server, method, route, name):
    body = KNOWN_GOOD if route.endswith("infer") else b""
    answer = send(server, method, route.format(name), body, AUTH)
    assert answer[0] == 400 and "invalid model name" in error_of(*answer)


@pytest.mark.parametrize("version", ODD_VERSIONS)
@pytest.mark.parametrize(("method", "route"), VERSIONED_ROUTES)
def test_odd_versions_are_400s_on_every_route(server, method, route, version):
    body = KNOWN_GOOD if route.endswith("infer") else b""
    answer = send(server, method, route.format(version), body)
    assert answer[0] == 400 and "invalid model version" in error_of(*answer)


# --- a search for other 500s: odd JSON and headers on every endpoint --------------------------

FUZZ_BUDGET_S = 15  # per test, about twice its usual time on two shared cores
_started: dict[str, float] = {}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, 0, -1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
CONFIG_FIELDS = [
    "name",
    "platform",
    "backend",
    "max_batch_size",
    "input",
    "output",
    "version_policy",
    "instance_group",
    "dynamic_batching",
    "parameters",
    "default_model_filename",
    "model_warmup",
    "optimization",
    "sequence_batching",
    "ensemble_scheduling",
    "batch_input",
    "response_cache",
]
TENSOR_FIELDS = ["name", "data_type", "dims", "reshape", "optional", "format", "allow_ragged_batch"]
SPARE = {
    "name": "spare",
    "backend": "echo",
    "max_batch_size": 8,
    "input": [{"name": "INPUT", "data_type": "TYPE_FP32", "dims": [4]}],
    "output": [{"name": "OUTPUT", "data_type": "TYPE_FP32", "dims": [4]}],
}


def dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity as Python writes them


@st.composite
def load_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["any", "parameters", "config-any", "config-field", "tensor"]))
    if kind == "any":
        return dumps(draw(json_values))
    if kind == "parameters":
        return dumps({"parameters": draw(json_values)})
    if kind == "config-any":
        return dumps({"parameters": {"config": dumps(draw(json_values)).decode()}})
    config = json.loads(json.dumps(SPARE))
    if kind == "config-field":
        config[draw(st.sampled_from(CONFIG_FIELDS))] = draw(json_values)
    else:
        tensor = config[draw(st.sampled_from(["input", "output"]))][0]
        tensor[draw(st.sampled_from(TENSOR_FIELDS))] = draw(json_values)
    return dumps({"parameters": {"config": dumps(config).decode()}})


@st.composite
def infer_bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    document = json.loads(KNOWN_GOOD)
    where = draw(st.sampled_from(["request", "input", "output", "id", "header"]))
    key = draw(st.sampled_from(["priority", "timeout", "binary_data_output", "sequence_id"]))
    if where == "request":
        document["parameters"] = {key: draw(json_values)}
    elif where == "input":
        document["inputs"][0]["parameters"] = draw(json_values)
    elif where == "output":
        parameters = draw(
            st.dictionaries(st.sampled_from(["binary_data", "classification"]), json_values)
        )
        document["outputs"] = [{"name": "label", "parameters": parameters}]
    elif where == "id":
        document["id"] = draw(json_values)
    headers = {}
    if where == "header":
        headers[draw(st.sampled_from([HEADER_LENGTH, "Content-Type", "Content-Encoding"]))] = draw(
            st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=12)
        )
    return dumps(document), headers


def answered_without_a_server_error(server: ServerProcess, test: str, *request) -> None:
    if time.monotonic() - _started.setdefault(test, time.monotonic()) > FUZZ_BUDGET_S:
        return  # past the budget the remaining examples send nothing
    status, headers, body = send(server, *request)
    assert status < 500, (status, body[:300], request)
    if status >= 400:
        error_of(status, headers, body)


fuzz = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def test_odd_load_and_config_bodies_get_a_json_4xx_or_load(odd_server):
    @fuzz
    @given(body=load_bodies(), path=st.sampled_from(["spare/load", "spare/unload", "nope/load"]))
    def run(body: bytes, path: str) -> None:
        answered_without_a_server_error(
            odd_server, "load", "POST", f"/v2/repository/models/{path}", body, AUTH
        )

    run()
    assert_healthy(odd_server)


def test_odd_infer_parameters_and_headers_get_a_json_4xx_or_a_200(server):
    @fuzz
    @given(request=infer_bodies())
    def run(request: tuple[bytes, dict[str, str]]) -> None:
        body, headers = request
        answered_without_a_server_error(
            server, "infer", "POST", "/v2/models/digits/infer", body, headers
        )

    run()
    assert_healthy(server)


def test_odd_urls_and_bodies_on_the_other_endpoints_get_a_json_4xx_or_a_200(odd_server):
    paths = st.sampled_from(
        [
            "/v2/repository/index",
            "/v2/models/stats",
            "/v2/models/digits/stats",
            "/v2/health/ready",
            "/v2/models/digits/versions/{}/stats",
            "/v2/models/words/versions/{}",
            "/v2/models/{}/config",
        ]
    )

    @fuzz
    @given(
        path=paths,
        part=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30),
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
        body=json_values.map(dumps),
    )
    def run(path: str, part: str, method: str, body: bytes) -> None:
        target = path.format(urllib.parse.quote(part, safe=""))
        answered_without_a_server_error(odd_server, "other", method, target, body, AUTH)

    run()
    assert_healthy(odd_server)
