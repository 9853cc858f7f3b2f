"""Keeping the loaded models in line with the repository, per Triton's model control modes."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

from repoman.config import parse_model_config
from repoman.errors import ModelNotFound
from repoman.manager.manager import ModelManager
from repoman.source.scan import (
    MODEL_NAME,
    ModelEntry,
    ScanOptions,
    read_model,
    scan_repository,
    select_versions,
)
from repoman.source.watcher import RepositoryWatcher

log = logging.getLogger(__name__)

MODES = ("none", "poll", "explicit")


class RepositoryController:
    """Drives the manager from the repository.

    ``none``: load what is there at start-up, then ignore the disk. ``poll``: the same,
    then follow the disk (file-system events with a quiet period, plus a periodic full
    rescan); a version folder is loaded only once its files have been still for
    ``options.quiet`` seconds (and hold ``options.ready_marker`` when one is set).
    ``explicit``: only ``load``/``unload`` (the repository API) and ``initial`` names.
    """

    def __init__(
        self,
        root: Path,
        manager: ModelManager,
        *,
        mode: str = "poll",
        options: ScanOptions | None = None,
        rescan_every: float = 10.0,
        initial: tuple[str, ...] = (),
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown model control mode {mode!r}")
        self.root = root
        self.mode = mode
        self._manager = manager
        self._options = options or ScanOptions()
        self._rescan_every = rescan_every
        self._initial = initial
        self._watcher: RepositoryWatcher | None = None
        self._ignored_seen: set[str] = set()
        self._started = False
        self._wanted: dict[str, ModelEntry | None] = {}
        self._runners: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """The first pass over the repository; in poll mode, then start watching it."""
        if self.mode == "explicit":
            names = self.disk_models() if "*" in self._initial else list(self._initial)
            await asyncio.gather(*(self.load(name) for name in names))
            return
        # NOTE: at start-up nothing is being copied that we could wait for usefully, and
        # in "none" mode there is no later pass: take what is complete now.
        await self._rescan(dataclasses.replace(self._options, quiet=0.0))
        self._started = True
        if self.mode == "poll":
            self._watcher = RepositoryWatcher(
                self.root,
                self.rescan,
                quiet=max(self._options.quiet, 0.05),
                rescan_every=self._rescan_every,
            )
            await self._watcher.start()

    async def stop(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()
        self._wanted.clear()
        for runner in self._runners.values():
            runner.cancel()
        await asyncio.gather(*self._runners.values(), return_exceptions=True)

    async def rescan(self) -> float | None:
        """One pass (poll mode): returns when to look again for versions still settling."""
        return await self._rescan(self._options)

    async def _rescan(self, options: ScanOptions) -> float | None:
        scan = await asyncio.to_thread(scan_repository, self.root, options, now=time.time())
        for line in scan.ignored:
            if line not in self._ignored_seen:
                self._ignored_seen.add(line)
                log.info("ignored %s", line)
        for entry in scan.models.values():
            for number in entry.settling:
                log.debug(
                    "model %s version %d: waiting for its files to settle", entry.name, number
                )
        if not self._started:
            await self._manager.apply(scan)  # NOTE: the first pass is awaited: then "ready"
        else:
            names = set(scan.models) | set(self._manager.model_names())
            for name in names:
                self._submit(name, scan.models.get(name))
        return scan.retry_after

    def _submit(self, name: str, entry: ModelEntry | None) -> None:
        """Hand one model's wanted state to its own runner, without waiting for it.

        NOTE: a model whose load is slow (or hangs) must not hold up the others or the next
        scan. Each model has at most one runner; a newer wanted state simply replaces one
        that has not been applied yet, so scans never pile up behind a slow load.
        """
        self._wanted[name] = entry
        runner = self._runners.get(name)
        if runner is None or runner.done():
            self._runners[name] = asyncio.create_task(self._run(name))

    async def _run(self, name: str) -> None:
        while name in self._wanted:
            entry = self._wanted.pop(name)
            try:
                await self._manager.apply_model(name, entry)
            except Exception:
                log.exception("model %s: applying the repository's state failed", name)

    async def load(self, name: str, config_text: str | None = None) -> None:
        """Load or reload one model as the disk has it now (``config_text``: JSON override)."""
        path = self.root / name
        if not MODEL_NAME.match(name) or not path.is_dir():
            raise ModelNotFound(name)
        options = dataclasses.replace(self._options, quiet=0.0)
        entry = await asyncio.to_thread(read_model, path, options, now=time.time())
        if config_text is not None:
            entry = _override(entry, config_text, options)
        await self._manager.apply_model(name, entry)

    async def unload(self, name: str) -> None:
        await self._manager.apply_model(name, None)

    def disk_models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and MODEL_NAME.match(p.name)
        )


def _override(entry: ModelEntry, config_text: str, options: ScanOptions) -> ModelEntry:
    """The entry with its config replaced by the one sent in a load request (JSON)."""
    config = parse_model_config(
        config_text,
        filename="<load request config>",
        fmt="yaml",  # NOTE: JSON is YAML, and the YAML reader keeps line/column positions
        model_name=entry.name,
        default_platform=options.default_platform,
    )
    versions = {
        number: dataclasses.replace(ve, config=config, error=None)
        for number, ve in entry.versions.items()
    }
    complete = [v for v in versions if v not in entry.settling]
    wanted = select_versions(config.version_policy, complete)
    return dataclasses.replace(entry, config=config, error=None, versions=versions, wanted=wanted)
