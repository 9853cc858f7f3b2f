"""The repository watcher on real files, a real watchdog observer and a real event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePath

import pytest

from repoman.source.watcher import RepositoryWatcher, is_ignored

pytestmark = pytest.mark.timeout(20)

QUIET = 0.05


class Recorder:
    """An on_change that counts calls, notes overlaps and returns scripted retry delays."""

    def __init__(self, *delays: float | None, gate: asyncio.Event | None = None) -> None:
        self.delays = list(delays)
        self.gate = gate
        self.started = 0
        self.running = 0
        self.most_running = 0
        self.ended_at: list[float] = []

    async def __call__(self) -> float | None:
        self.started += 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None and self.started == 1:
                await self.gate.wait()
            return self.delays.pop(0) if self.delays else None
        finally:
            self.running -= 1
            self.ended_at.append(time.monotonic())


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def stays(predicate: Callable[[], bool], seconds: float) -> None:
    """Assert that ``predicate`` holds for the whole of ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate()
        await asyncio.sleep(0.01)
    assert predicate()


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    (path / "model" / "1").mkdir(parents=True)
    return path


def test_a_burst_of_writes_causes_one_rescan(root: Path) -> None:
    async def body() -> None:
        on_change = Recorder()
        # A longer quiet period here: the burst must look like one burst on a busy machine.
        watcher = RepositoryWatcher(root, on_change, quiet=0.2, rescan_every=0)
        await watcher.start()
        for i in range(20):
            (root / "model" / "1" / "model.onnx").write_bytes(b"x" * i)
        await wait_until(lambda: watcher.scans == 1)
        await stays(lambda: watcher.scans == 1, 0.4)
        await watcher.stop()

    run(body)


def test_ignored_files_cause_no_rescan(root: Path) -> None:
    async def body() -> None:
        watcher = RepositoryWatcher(root, Recorder(), quiet=QUIET, rescan_every=0)
        await watcher.start()
        for name in (".hidden", "x.swp", "file~", "4913", ".#lock", "a.tmp"):
            (root / "model" / name).write_text("litter")
        (root / ".git").mkdir()
        (root / ".git" / "HEAD").write_text("ref")
        # Reading the tree (what a rescan does) is no change either.
        assert (root / "model" / "x.swp").read_text() == "litter"
        list(root.rglob("*"))
        await stays(lambda: watcher.scans == 0, 0.3)
        # The control: the observer was live all along.
        (root / "model" / "config.pbtxt").write_text('name: "model"')
        await wait_until(lambda: watcher.scans == 1)
        await watcher.stop()

    run(body)


def test_events_during_a_rescan_cause_exactly_one_more(root: Path) -> None:
    async def body() -> None:
        gate = asyncio.Event()
        on_change = Recorder(gate=gate)
        watcher = RepositoryWatcher(root, on_change, quiet=QUIET, rescan_every=0)
        await watcher.start()
        watcher.poke()
        await wait_until(lambda: on_change.running == 1)
        for i in range(5):
            (root / "model" / "1" / f"part{i}.bin").write_bytes(b"x")
            watcher.poke()
        await asyncio.sleep(0.3)  # the events arrive and the debounce fires while the call runs
        assert on_change.started == 1
        gate.set()
        await wait_until(lambda: watcher.scans == 2)
        await stays(lambda: watcher.scans == 2, QUIET * 4)
        assert on_change.most_running == 1
        await watcher.stop()

    run(body)


def test_a_returned_delay_asks_for_another_rescan_without_events(root: Path) -> None:
    async def body() -> None:
        on_change = Recorder(0.1, None)
        watcher = RepositoryWatcher(root, on_change, quiet=QUIET, rescan_every=0)
        await watcher.start()
        watcher.poke()
        await wait_until(lambda: watcher.scans == 2)
        assert on_change.ended_at[1] - on_change.ended_at[0] >= 0.1
        await stays(lambda: watcher.scans == 2, 0.25)
        await watcher.stop()

    run(body)


def test_periodic_rescan_without_events(root: Path) -> None:
    async def body() -> None:
        watcher = RepositoryWatcher(
            root, Recorder(), quiet=QUIET, rescan_every=0.05, use_events=False
        )
        await watcher.start()
        await wait_until(lambda: watcher.scans >= 3)
        await watcher.stop()

    run(body)


def test_use_events_false_ignores_file_changes(root: Path) -> None:
    async def body() -> None:
        watcher = RepositoryWatcher(root, Recorder(), quiet=QUIET, rescan_every=0, use_events=False)
        await watcher.start()
        (root / "model" / "config.pbtxt").write_text('name: "model"')
        await stays(lambda: watcher.scans == 0, 0.2)
        await watcher.stop()

    run(body)


def test_a_failing_rescan_is_logged_and_later_ones_still_run(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def flaky() -> float | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk on fire")
        return None

    async def body() -> None:
        watcher = RepositoryWatcher(root, flaky, quiet=QUIET, rescan_every=0)
        await watcher.start()
        watcher.poke()
        await wait_until(lambda: watcher.scans == 1)
        (root / "model" / "config.pbtxt").write_text('name: "model"')
        await wait_until(lambda: watcher.scans == 2)
        await watcher.stop()

    with caplog.at_level(logging.ERROR, logger="repoman.source.watcher"):
        run(body)
    assert calls == 2
    assert any("disk on fire" in r.getMessage() for r in caplog.records)


def test_stop_is_idempotent_and_nothing_runs_after_it(root: Path) -> None:
    async def body() -> None:
        watcher = RepositoryWatcher(root, Recorder(0.01), quiet=QUIET, rescan_every=0.05)
        await watcher.start()
        watcher.poke()
        await watcher.stop()
        await watcher.stop()
        (root / "model" / "config.pbtxt").write_text('name: "model"')
        watcher.poke()
        await stays(lambda: watcher.scans == 0, 0.2)

    run(body)


def test_stop_waits_for_a_running_rescan(root: Path) -> None:
    async def body() -> None:
        gate = asyncio.Event()
        on_change = Recorder(0.01, gate=gate)  # it would ask for a retry: stop must win
        watcher = RepositoryWatcher(root, on_change, quiet=QUIET, rescan_every=0)
        await watcher.start()
        watcher.poke()
        await wait_until(lambda: on_change.running == 1)
        stopping = asyncio.create_task(watcher.stop())
        await asyncio.sleep(0.05)
        assert not stopping.done()
        gate.set()
        await asyncio.wait_for(stopping, 5)
        assert watcher.scans == 1
        await stays(lambda: on_change.started == 1, 0.1)

    run(body)


def test_a_version_folder_moved_in_causes_a_rescan(tmp_path: Path, root: Path) -> None:
    staged = tmp_path / "staging" / "2"
    staged.mkdir(parents=True)
    (staged / "model.onnx").write_bytes(b"onnx")

    async def body() -> None:
        watcher = RepositoryWatcher(root, Recorder(), quiet=QUIET, rescan_every=0)
        await watcher.start()
        os.rename(staged, root / "model" / "2")
        await wait_until(lambda: watcher.scans == 1)
        await watcher.stop()

    run(body)


def test_a_temp_file_renamed_into_place_causes_a_rescan(root: Path) -> None:
    async def body() -> None:
        watcher = RepositoryWatcher(root, Recorder(), quiet=QUIET, rescan_every=0)
        await watcher.start()
        (root / "model" / "config.pbtxt.tmp").write_text('name: "model"')
        await stays(lambda: watcher.scans == 0, 0.15)
        os.rename(root / "model" / "config.pbtxt.tmp", root / "model" / "config.pbtxt")
        await wait_until(lambda: watcher.scans == 1)
        await watcher.stop()

    run(body)


def test_a_deleted_root_is_rescanned_and_then_polled(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        watcher = RepositoryWatcher(root, Recorder(), quiet=QUIET, rescan_every=0.1)
        await watcher.start()
        shutil.rmtree(root)
        await wait_until(lambda: watcher.scans >= 2)
        await watcher.stop()

    with caplog.at_level(logging.WARNING, logger="repoman.source.watcher"):
        run(body)
    assert any("was deleted" in r.getMessage() for r in caplog.records)


def test_a_missing_root_falls_back_to_the_periodic_rescan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        watcher = RepositoryWatcher(tmp_path / "absent", Recorder(), quiet=QUIET, rescan_every=0.05)
        await watcher.start()
        await wait_until(lambda: watcher.scans >= 2)
        await watcher.stop()

    with caplog.at_level(logging.WARNING, logger="repoman.source.watcher"):
        run(body)
    assert any("periodic rescan only" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("path", "directory", "ignored"),
    [
        ("model/1/model.onnx", False, False),
        ("model/config.pbtxt", False, False),
        ("model", True, False),
        ("model/1", True, False),
        (".", True, False),
        (".hidden", False, True),
        ("model/.hidden", False, True),
        (".git/objects/ab", False, True),
        ("model/.cache/1", True, True),
        ("model/config.pbtxt.swp", False, True),
        ("model/.config.pbtxt.swo", False, True),
        ("model/x.swx", False, True),
        ("model/config.pbtxt~", False, True),
        ("model/#config.pbtxt#", False, True),
        ("model/.#config.pbtxt", False, True),
        ("model/4913", False, True),
        ("model/4913", True, False),  # a version folder, not vim's write test
        ("model/4913/model.onnx", False, False),
        ("model/1/model.onnx.tmp", False, True),
        ("model/1/model.onnx.part", False, True),
        ("model/1/model.onnx.crdownload", False, True),
        ("model/1/model.onnx.partial", False, True),
        ("model/1/model.tmpl", False, False),
        ("model/1/49130", False, False),
    ],
)
def test_is_ignored(path: str, directory: bool, ignored: bool) -> None:
    assert is_ignored(PurePath(path), directory=directory) is ignored
