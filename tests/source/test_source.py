"""The Source in process: what it hands its target for a repository, and its time limit."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from repoman.aspired import Aspired
from repoman.backends import BackendRegistry
from repoman.config.model import TensorConfig
from repoman.errors import ConfigError
from repoman.signature import ModelSignature
from repoman.source.resolve import Resolver
from repoman.source.scan import ScanOptions
from repoman.source.source import RepositorySource
from repoman.types import DataType
from tests import fakes

CONFIG = """backend: "{backend}"
max_batch_size: 0
input [{{ name: "INPUT" data_type: TYPE_FP32 dims: [ 1 ] }}]
output [{{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 1 ] }}]
"""


class Recorder:
    """The Source's target: records what it is asked to serve."""

    def __init__(self) -> None:
        self.applied: dict[str, Aspired] = {}
        self.calls: list[Aspired] = []

    async def apply(
        self, aspired: Aspired, *, retry_failed: bool = False, need_members: bool = False
    ) -> list[str]:
        self.applied[aspired.model] = aspired
        self.calls.append(aspired)
        return []

    def model_names(self) -> list[str]:
        return sorted(self.applied)


def model(repo: Path, name: str, backend: str, versions=(1,)) -> None:
    (repo / name).mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(CONFIG.format(backend=backend))
    for version in versions:
        (repo / name / str(version)).mkdir()
        (repo / name / str(version) / "model.txt").write_text("weights")


def registry(release: threading.Event) -> BackendRegistry:
    """The fake backends, plus 'hanging', whose describe does not return until released."""
    found = BackendRegistry()
    fakes.repoman_register_backends(found)
    tensor = (TensorConfig("INPUT", DataType.FP32, (1,)),)
    out = (TensorConfig("OUTPUT", DataType.FP32, (1,)),)

    def describe(path: Path, parameters: object) -> ModelSignature:
        release.wait(30)
        return ModelSignature(tensor, out, batching=False)

    found.register(
        "hanging", fakes.EchoBackend, default_model_filename="model.txt", describe=describe
    )
    return found


def test_a_backend_that_hangs_describing_a_model_fails_that_model_alone(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    model(repo, "fast", "echo", versions=(1, 2))
    model(repo, "stuck", "hanging")
    release = threading.Event()
    target = Recorder()
    source = RepositorySource(
        repo, target, Resolver(registry(release)), mode="none", resolve_timeout=0.5
    )

    async def start() -> float:
        started = time.monotonic()
        await source.start()
        elapsed = time.monotonic() - started
        await source.stop()
        return elapsed

    try:
        elapsed = asyncio.run(start())
    finally:
        release.set()
    assert elapsed < 10  # bounded by the time limit, not by the backend
    assert [v.version for v in target.applied["fast"].versions] == [2]  # latest 1 by default
    assert target.applied["fast"].present == {1, 2}
    stuck = target.applied["stuck"]
    assert stuck.versions == () and "took over 0.5 s" in stuck.error
    assert stuck.present == {1}  # what serves already keeps serving


def test_a_model_folder_removed_is_asked_to_unload(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    model(repo, "gone", "echo")
    target = Recorder()
    source = RepositorySource(
        repo, target, Resolver(registry(threading.Event())), mode="poll", rescan_every=0
    )

    async def go() -> Aspired:
        await source.start()
        assert target.applied["gone"].versions
        for path in sorted((repo / "gone").rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        (repo / "gone").rmdir()
        await source.rescan()
        await source.idle()
        await source.stop()
        return target.applied["gone"]

    assert asyncio.run(go()) == Aspired("gone")


def test_a_load_override_over_the_config_size_limit_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    model(repo, "m", "echo")
    target = Recorder()
    source = RepositorySource(
        repo,
        target,
        Resolver(registry(threading.Event())),
        mode="explicit",
        options=ScanOptions(max_config_bytes=4096),
    )
    padded = '{"max_batch_size": 0' + " " * 5000 + "}"

    async def go() -> None:
        try:
            await source.load("m", padded)
        finally:
            await source.stop()

    with pytest.raises(ConfigError, match=r"at most 4096 bytes \(4 KiB\), found 5021 bytes"):
        asyncio.run(go())
    assert "m" not in target.applied
