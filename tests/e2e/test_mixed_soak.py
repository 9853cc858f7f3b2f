"""A short mixed soak: valid and invalid traffic from 32 clients while a version is swapped.

Seventy percent of the requests are valid (JSON or the binary extension), thirty percent are
not (bad JSON, wrong shape, unknown input, wrong datatype). Version 2 is renamed into the
repository after a few seconds and version 1's folder deleted later. Every valid request must
get a correct 200, every invalid one a JSON 4xx, nothing may reset or time out, and the
server's resident memory must stay flat.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

from tests.conftest import BUNDLED

CLIENTS = 32
TRAFFIC_S = 20.0
ADD_VERSION_2_AT_S = 5.0
DROP_VERSION_1_AT_S = 12.0
WARM_UP_S = 3.0  # RSS is sampled every second from here on
VALID_SHARE = 0.7
REQUEST_TIMEOUT_S = 10.0  # a request slower than this counts as a timeout
MAX_RSS_GROWTH_MB = 25.0
HEADER_LENGTH = "Inference-Header-Content-Length"
DIGITS = BUNDLED / "digits"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@dataclass(frozen=True)
class Request:
    kind: str
    body: bytes
    headers: dict[str, str]
    batch: int = 0  # rows of a valid request; 0 for an invalid one

    @property
    def valid(self) -> bool:
        return self.batch > 0


def pixels(rng: np.random.Generator, batch: int) -> np.ndarray:
    return rng.integers(0, 17, (batch, 64)).astype(np.float32)


def valid_json(rng: np.random.Generator) -> Request:
    batch = int(rng.integers(1, 9))
    document = {
        "inputs": [
            {
                "name": "pixels",
                "shape": [batch, 64],
                "datatype": "FP32",
                "data": pixels(rng, batch).tolist(),
            }
        ]
    }
    return Request("json", json.dumps(document).encode(), {}, batch)


def valid_binary(rng: np.random.Generator) -> Request:
    """The binary extension by hand: JSON header, then the raw little-endian float32 rows."""
    batch = int(rng.integers(1, 9))
    raw = pixels(rng, batch).astype("<f4").tobytes()
    document = {
        "inputs": [
            {
                "name": "pixels",
                "shape": [batch, 64],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": {"binary_data_output": bool(rng.integers(0, 2))},
    }
    header = json.dumps(document).encode()
    return Request("binary", header + raw, {HEADER_LENGTH: str(len(header))}, batch)


def invalid(rng: np.random.Generator, kind: str) -> Request:
    entry: dict = {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64}
    if kind == "bad-json":
        whole = json.dumps({"inputs": [entry]}).encode()
        return Request(kind, whole[: int(rng.integers(0, len(whole) - 1))], {})
    if kind == "wrong-shape":
        entry.update(shape=[1, 63], data=[1.0] * 63)
    elif kind == "unknown-input":
        entry["name"] = "pixel"
    else:  # wrong datatype
        entry.update(datatype="INT32", data=[1] * 64)
    return Request(kind, json.dumps({"inputs": [entry]}).encode(), {})


INVALID_KINDS = ("bad-json", "wrong-shape", "unknown-input", "wrong-datatype")


def make_requests(seed: int, count: int = 400) -> list[Request]:
    """A fixed mix, made before the clock starts: 70% valid (half JSON, half binary)."""
    rng = np.random.default_rng(seed)
    made = []
    for _ in range(count):
        if rng.random() < VALID_SHARE:
            made.append(valid_json(rng) if rng.random() < 0.5 else valid_binary(rng))
        else:
            made.append(invalid(rng, str(rng.choice(INVALID_KINDS))))
    return made


@dataclass
class Tally:
    answered: dict[str, int] = field(default_factory=dict)  # by request kind
    versions: dict[str, int] = field(default_factory=dict)  # valid answers by model_version
    failures: list[str] = field(default_factory=list)
    late_from_1: list[float] = field(default_factory=list)  # sent after v2 was READY, got "1"
    rss: list[float] = field(default_factory=list)
    index_log: list[str] = field(default_factory=list)
    version_2_ready_at: float | None = None


def check_valid(request: Request, status: int, headers, payload: bytes) -> str:
    """The model_version of a correct answer; raises AssertionError for anything else."""
    assert status == 200, f"{status} {payload[:300]!r}"
    length = headers.get(HEADER_LENGTH)
    head, tail = (
        (payload, b"") if length is None else (payload[: int(length)], payload[int(length) :])
    )
    answer = json.loads(head)
    assert answer["model_name"] == "digits", answer
    outputs = {output["name"]: output for output in answer["outputs"]}
    assert sorted(outputs) == ["label", "probabilities"], answer
    offset = 0
    arrays = {}
    for output in answer["outputs"]:
        width, dtype = (10, "<f4") if output["name"] == "probabilities" else (1, "<i8")
        assert output["shape"] == [request.batch, width], answer
        if "data" in output:
            array = np.array(output["data"], dtype=dtype)
        else:
            size = output["parameters"]["binary_data_size"]
            array = np.frombuffer(tail[offset : offset + size], dtype=dtype)
            offset += size
        arrays[output["name"]] = array.reshape(request.batch, width)
    assert offset == len(tail), "binary outputs do not add up to the body"
    assert np.allclose(arrays["probabilities"].sum(axis=1), 1, atol=1e-4), arrays
    assert ((arrays["label"] >= 0) & (arrays["label"] < 10)).all(), arrays
    return answer["model_version"]


def check_invalid(status: int, payload: bytes) -> None:
    assert 400 <= status < 500, f"{status} {payload[:300]!r}"
    error = json.loads(payload)["error"]
    assert isinstance(error, str) and error, payload[:300]


async def soak(server, repo: Path, staging: Path) -> Tally:
    url = server.url + "/v2/models/digits/infer"
    tally = Tally()
    started = time.monotonic()
    stop_at = started + TRAFFIC_S

    async def client(session: aiohttp.ClientSession, number: int) -> None:
        requests = make_requests(seed=number)
        turn = random.Random(number)
        while time.monotonic() < stop_at:
            request = turn.choice(requests)
            sent_at = time.monotonic()
            try:
                async with session.post(url, data=request.body, headers=request.headers) as r:
                    payload = await r.read()
                    status, headers = r.status, r.headers
            except (TimeoutError, aiohttp.ClientError) as exc:
                tally.failures.append(f"{request.kind}: no answer: {exc!r}")
                continue
            tally.answered[request.kind] = tally.answered.get(request.kind, 0) + 1
            try:
                if not request.valid:
                    check_invalid(status, payload)
                    continue
                version = check_valid(request, status, headers, payload)
            except (AssertionError, ValueError, KeyError, TypeError) as exc:
                tally.failures.append(f"{request.kind}: {exc}"[:500])
                continue
            tally.versions[version] = tally.versions.get(version, 0) + 1
            ready_at = tally.version_2_ready_at
            if ready_at is not None and sent_at > ready_at and version != "2":
                tally.late_from_1.append(sent_at - started)

    async def watch_index(session: aiohttp.ClientSession) -> None:
        seen = ""
        while time.monotonic() < stop_at:
            async with session.post(server.url + "/v2/repository/index") as r:
                rows = await r.json()
            now = sorted(
                (row.get("version", ""), row["state"]) for row in rows if row["name"] == "digits"
            )
            if str(now) != seen:
                seen = str(now)
                tally.index_log.append(f"{time.monotonic() - started:5.2f}s {now}")
            if tally.version_2_ready_at is None and ("2", "READY") in now:
                tally.version_2_ready_at = time.monotonic()
            await asyncio.sleep(0.05)

    async def sample_rss() -> None:
        await asyncio.sleep(WARM_UP_S)
        while time.monotonic() < stop_at:
            tally.rss.append(rss_mb(server.process.pid))
            await asyncio.sleep(1.0)

    async def change_versions() -> None:
        await asyncio.sleep(ADD_VERSION_2_AT_S)
        # NOTE: the whole folder appears at once (rename within one file system): the watcher
        # never sees a half-copied model file.
        os.rename(staging / "2", repo / "digits" / "2")
        await asyncio.sleep(DROP_VERSION_1_AT_S - ADD_VERSION_2_AT_S)
        shutil.rmtree(repo / "digits" / "1")

    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=CLIENTS + 2)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(
            *(client(session, number) for number in range(CLIENTS)),
            watch_index(session),
            sample_rss(),
            change_versions(),
        )
    return tally


def test_mixed_traffic_during_a_version_swap_fails_only_invalid_requests(tmp_path, server_factory):
    repo, staging = tmp_path / "repo", tmp_path / "staging"
    (repo / "digits" / "1").mkdir(parents=True)
    (staging / "2").mkdir(parents=True)
    shutil.copy(DIGITS / "config.pbtxt", repo / "digits")
    shutil.copy(DIGITS / "1" / "model.onnx", repo / "digits" / "1")
    shutil.copy(DIGITS / "1" / "model.onnx", staging / "2")
    server = server_factory(repo, "--quiet-period", "0.2", "--repository-poll-secs", "2")

    began = time.monotonic()
    tally = asyncio.run(asyncio.wait_for(soak(server, repo, staging), TRAFFIC_S + 15))
    took = time.monotonic() - began
    valid = sum(n for kind, n in tally.answered.items() if kind in ("json", "binary"))
    print(
        f"\nmixed soak: {sum(tally.answered.values())} answers in {took:.1f}s "
        f"({valid} valid) by kind {tally.answered}; valid answers by version {tally.versions}"
        f"\nindex: "
        + "\n       ".join(tally.index_log)
        + f"\nRSS MB every 1s after {WARM_UP_S:g}s: {[round(mb, 1) for mb in tally.rss]}"
    )

    assert tally.failures == [], f"{len(tally.failures)} failures, first: {tally.failures[:10]}"
    assert server.process.poll() is None, server.log()[-4000:]
    assert valid > 500, tally.answered  # enough traffic to mean something
    assert set(tally.versions) == {"1", "2"}, tally.versions
    assert tally.version_2_ready_at is not None, tally.index_log
    assert tally.late_from_1 == [], (
        f"sent after version 2 was READY, answered by 1: {tally.late_from_1[:10]}"
    )
    status, index = server.request("POST", "/v2/repository/index", b"")
    assert status == 200, index
    assert [(r["version"], r["state"]) for r in index if r["name"] == "digits"] == [("2", "READY")]
    assert server.get("/v2/health/ready")[0] == 200
    assert "FAILED" not in server.log(), server.log()[-4000:]
    assert len(tally.rss) >= 10, tally.rss
    growth = tally.rss[-1] - tally.rss[0]
    assert growth <= MAX_RSS_GROWTH_MB, f"RSS grew by {growth:.1f} MB: {tally.rss}"
