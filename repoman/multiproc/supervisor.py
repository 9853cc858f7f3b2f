"""Starting the front-end processes, restarting one that dies, stopping them all in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import repoman
from repoman.multiproc.frontend import SETTINGS_VARIABLE, Settings

log = logging.getLogger("repoman")

RESTART_DELAY_S = 0.5
"""Pause before restarting a front-end that died (a crash loop must not spin a core)."""


class Supervisor:
    """Keeps ``count`` front-end processes running until :meth:`stop`. Loop thread only."""

    def __init__(self, count: int, settings: Callable[[int], Settings]) -> None:
        self._count = count
        self._settings = settings
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.restarts = 0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes.values() if p.returncode is None]

    async def start(self) -> None:
        for index in range(self._count):
            await self._spawn(index)

    async def _spawn(self, index: int) -> None:
        settings = self._settings(index)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",  # NOTE: not the current directory's repoman, if it has one: the core's
            "-m",
            "repoman.multiproc.frontend",
            pass_fds=(settings.listen_fd,),
            env={**os.environ, SETTINGS_VARIABLE: settings.to_env(), "PYTHONPATH": _search_path()},
        )
        self._processes[index] = process
        log.info("front-end %d started (pid %d)", index, process.pid)
        task = asyncio.get_running_loop().create_task(self._watch(index, process))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch(self, index: int, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if self._stopping:
            return
        log.error("front-end %d (pid %d) exited with %d; restarting it", index, process.pid, code)
        self.restarts += 1
        await asyncio.sleep(RESTART_DELAY_S)
        if not self._stopping:
            await self._spawn(index)

    async def stop(self, timeout: float) -> None:
        """SIGTERM every front-end (each finishes what it holds), wait at most ``timeout``
        seconds, then SIGKILL what is left: no process outlives the core."""
        self._stopping = True
        for process in self._processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self._processes.values():
            left = max(0.1, deadline - time.monotonic())
            try:
                await asyncio.wait_for(process.wait(), left)
            except TimeoutError:
                log.error("front-end pid %d did not stop in time; killing it", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        for task in list(self._watchers):
            task.cancel()


def _search_path() -> str:
    """PYTHONPATH for a front-end: the folder the core imported ``repoman`` from first, so a
    front-end runs the core's code (and speaks its protocol) wherever it was started from."""
    here = str(Path(repoman.__file__).resolve().parent.parent)
    return os.pathsep.join(path for path in (here, os.environ.get("PYTHONPATH", "")) if path)
