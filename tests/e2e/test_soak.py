"""A bounded soak: 64 clients while ten versions are copied in slowly and old ones removed."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import aiohttp

from tests.conftest import BUNDLED

CLIENTS = 64
VERSIONS = range(2, 12)  # ten new versions after version 1
BUDGET_S = 90  # the whole run stops by itself well within this


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def soak(server, repo: Path) -> dict:
    body = json.dumps(
        {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}
    ).encode()
    url = server.url + "/v2/models/digits/infer"
    answers: list[tuple[int, str]] = []
    failures: list[str] = []
    ever_ready: set[str] = set()
    stop = asyncio.Event()
    deadline = time.monotonic() + BUDGET_S

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                async with session.post(url, data=body) as response:
                    payload = await response.read()
                    if response.status != 200:
                        failures.append(f"{response.status} {payload[:200]!r}")
                        continue
                    answers.append((response.status, json.loads(payload)["model_version"]))
            except (TimeoutError, aiohttp.ClientError) as exc:
                failures.append(repr(exc))

    async def index(session: aiohttp.ClientSession) -> list[dict]:
        async with session.post(server.url + "/v2/repository/index") as response:
            return await response.json()

    async def watch_index(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            for row in await index(session):
                if row["name"] == "digits" and row.get("state") == "READY":
                    ever_ready.add(row["version"])
            await asyncio.sleep(0.02)

    async def copy_slowly(version: int) -> None:
        data = (BUNDLED / "digits" / "1" / "model.onnx").read_bytes()
        folder = repo / "digits" / str(version)
        folder.mkdir()
        chunk = len(data) // 5 + 1
        with open(folder / "model.onnx", "wb") as out:
            for start in range(0, len(data), chunk):
                out.write(data[start : start + chunk])
                out.flush()
                await asyncio.sleep(0.05)

    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=CLIENTS + 4)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        rss_before = rss_mb(server.process.pid)
        tasks = [asyncio.create_task(client(session)) for _ in range(CLIENTS)]
        watcher = asyncio.create_task(watch_index(session))
        await asyncio.sleep(1.0)
        for version in VERSIONS:
            await copy_slowly(version)
            while str(version) not in ever_ready:
                assert time.monotonic() < deadline, f"version {version} never became ready"
                await asyncio.sleep(0.02)
            old = repo / "digits" / str(version - 2)
            if old.exists():
                shutil.rmtree(old)  # remove old folders while traffic flows
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*tasks, watcher)
        final = [r for r in await index(session) if r["name"] == "digits"]
    return {
        "answers": answers,
        "failures": failures,
        "ever_ready": ever_ready,
        "final": final,
        "rss_before": rss_before,
        "rss_after": rss_mb(server.process.pid),
    }


def test_soak_version_swaps_under_load_lose_nothing(tmp_path, server_factory):
    repo = tmp_path / "repo"
    (repo / "digits" / "1").mkdir(parents=True)
    shutil.copy(BUNDLED / "digits" / "config.pbtxt", repo / "digits")
    shutil.copy(BUNDLED / "digits" / "1" / "model.onnx", repo / "digits" / "1")
    server = server_factory(repo, "--quiet-period", "0.2", "--repository-poll-secs", "2")
    result = asyncio.run(soak(server, repo))

    assert result["failures"] == [], result["failures"][:10]
    served = {version for _, version in result["answers"]}
    assert len(result["answers"]) > 1000
    assert served <= result["ever_ready"]  # every answer came from a version that was READY
    assert "11" in served
    assert [(r["version"], r["state"]) for r in result["final"]] == [("11", "READY")]
    assert "FAILED" not in server.log()  # no half-copied version was ever attempted
    growth = result["rss_after"] - result["rss_before"]
    # NOTE: one ONNX Runtime session of this model costs a few MB; ten swaps must not add up.
    assert growth < 20, f"RSS grew by {growth:.1f} MB"
    print(
        f"\nsoak: {len(result['answers'])} answers, versions {sorted(served, key=int)}, "
        f"RSS {result['rss_before']:.0f} -> {result['rss_after']:.0f} MB"
    )
