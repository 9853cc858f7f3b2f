"""The scan: pure reads of the repository, never stopped by one odd or vanishing folder."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from repoman.aspired import Aspired
from repoman.source import scan as scan_module
from repoman.source.resolve import Resolver
from repoman.source.scan import ScanOptions, scan_repository
from repoman.source.source import RepositorySource
from tests import fakes
from tests.source.test_source import Recorder, registry


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for name in ("a", "b", "c"):
        fakes.write_model(root, name)
    return root


def vanishing(name: str, real=scan_module.read_model):
    """read_model, except that model ``name`` disappears while it is being read."""

    def read(path: Path, *args, **kwargs):
        if path.name == name:
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real(path, *args, **kwargs)

    return read


def test_a_folder_vanishing_mid_scan_skips_it_alone(repo, monkeypatch) -> None:
    monkeypatch.setattr(scan_module, "read_model", vanishing("b"))
    found = scan_repository(repo, ScanOptions(), now=time.time())
    assert sorted(found.models) == ["a", "c"]
    assert found.unreadable == ("b",)
    assert any("b: could not be read this pass (No such file or directory)" in line
               for line in found.ignored)


def test_odd_entries_never_stop_the_scan(repo) -> None:
    (repo / "not a model!").mkdir()
    (repo / "loose_file.txt").write_text("x")
    (repo / "a" / "0001").mkdir()
    (repo / "a" / "\u0661").mkdir()  # an Arabic-Indic digit one: not a version number
    (repo / "a" / "latest").mkdir()
    (repo / "dangling").symlink_to(repo / "nowhere")
    found = scan_repository(repo, ScanOptions(), now=time.time())
    assert sorted(found.models) == ["a", "b", "c"]
    assert [v.number for v in found.models["a"].versions] == [1]
    reasons = "\n".join(found.ignored)
    assert "not a valid model name" in reasons
    assert "0001: version folders must not start with 0" in reasons
    assert "\u0661: not a version folder" in reasons and "latest: not a version folder" in reasons


def test_a_model_unreadable_for_a_pass_is_not_unloaded(repo, monkeypatch) -> None:
    target = Recorder()
    source = RepositorySource(repo, target, Resolver(registry(threading.Event())), mode="poll",
                              rescan_every=0)

    async def go() -> list[Aspired]:
        await source.start()
        assert target.applied["b"].versions  # it is served
        target.calls.clear()
        monkeypatch.setattr(scan_module, "read_model", vanishing("b"))
        (repo / "a" / "2").mkdir()  # something else changes in the same pass
        (repo / "a" / "2" / "model.txt").write_text("fake")
        await source.rescan()
        await source.idle()
        await source.stop()
        return target.calls

    calls = asyncio.run(go())
    by_model = {c.model: c for c in calls}
    assert "b" not in by_model  # nothing asked of b while it could not be read
    assert [v.version for v in by_model["a"].versions] == [2]  # the rest of the pass counts
