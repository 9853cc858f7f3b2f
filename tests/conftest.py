"""Shared fixtures: the real server on a free loopback port, and the bundled repository."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverproc import ROOT, ServerProcess, start_server

BUNDLED = ROOT / "model_repository"


@pytest.fixture(scope="session")
def bundled_server() -> Iterator[ServerProcess]:
    server = start_server(BUNDLED)
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="session")
def heldout() -> dict:
    return json.loads((ROOT / "examples" / "heldout.json").read_text())


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    """A drop-in plugins folder holding tests/fakes.py (the fake backends), for --plugins-dir."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    shutil.copy(ROOT / "tests" / "fakes.py", folder / "fakes.py")
    return folder


@pytest.fixture
def server_factory() -> Iterator:
    started: list[ServerProcess] = []

    def start(repository: Path, *args: str, **kwargs) -> ServerProcess:
        server = start_server(repository, *args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
