"""The Source: scans, watches and takes load/unload requests, and says per model what it wants.

It follows Triton's model control modes. ``none``: what is there at start-up, then the disk
is ignored. ``poll``: the same, then the disk is followed (file-system events with a quiet
period, plus a periodic full rescan); a version folder counts only once its files have been
still for ``options.quiet`` seconds (and hold ``options.ready_marker`` when one is set).
``explicit``: only ``load``/``unload`` (the repository API) and the ``initial`` names.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Protocol

from repoman.aspired import Aspired
from repoman.config import config_too_large
from repoman.errors import ModelNotFound, RepomanError
from repoman.names import valid_model_name
from repoman.source.resolve import OVERRIDE_NAME, Resolver
from repoman.source.scan import ModelFolder, Scan, ScanOptions, read_model, scan_repository
from repoman.source.watcher import RepositoryWatcher
from repoman.threads import in_thread

log = logging.getLogger(__name__)

MODES = ("none", "poll", "explicit")
REPORT_GRACE = 2.0
"""Seconds past the resolve deadline to wait for a describe that was stopped at it to report."""


class Target(Protocol):
    """Where the Source sends what it wants (the manager)."""

    async def apply(
        self, aspired: Aspired, *, retry_failed: bool = False, need_members: bool = False
    ) -> list[str]:
        """Make one model match ``aspired``; returns, once it does, what failed on the way
        (``retry_failed``: versions that failed with the same files are tried again;
        ``need_members``: an ensemble whose members cannot serve it fails to load)."""

    def model_names(self) -> list[str]:
        """The models the target holds now (so a model gone from the disk is unloaded)."""


class RepositorySource:
    """Turns the repository into aspired versions, one model at a time.

    Each model is resolved (parsed, auto-completed, checked against its model file) on a
    worker thread with a time limit, so a model whose backend hangs while describing it
    fails alone; and applied by its own runner, so a slow load never holds up the other
    models or the next scan.
    """

    def __init__(
        self,
        root: Path,
        target: Target,
        resolver: Resolver,
        *,
        mode: str = "poll",
        options: ScanOptions | None = None,
        rescan_every: float = 10.0,
        initial: tuple[str, ...] = (),
        resolve_timeout: float | None = 60.0,
        single: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown model control mode {mode!r}")
        self.root = root
        self.single = single
        """When set, ``root`` is itself one model folder, served under this name."""
        self.mode = mode
        self._target = target
        self._resolver = resolver
        self._options = options or ScanOptions()
        self._rescan_every = rescan_every
        self._initial = initial
        self._resolve_timeout = resolve_timeout
        self._watcher: RepositoryWatcher | None = None
        self._ignored_seen: set[str] = set()
        self._warned: set[tuple[str, str]] = set()
        self._started = False
        self._wanted: dict[str, ModelFolder | None] = {}
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._resolving = asyncio.Semaphore(4)
        self._last_scan: tuple[float, Scan] | None = None

    async def start(self) -> None:
        """The first pass over the repository (awaited); in poll mode, then start watching."""
        if self.mode == "explicit":
            names = self.disk_models() if "*" in self._initial else list(self._initial)
            await asyncio.gather(*(self._load_logged(name) for name in names))
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

    def report(self) -> dict[str, Any]:
        """What the last pass over the repository saw, for the status page: when, each model
        folder's versions, what is still settling (being copied), what was ignored and why.
        Paths are absolute (the caller redacts them)."""
        report: dict[str, Any] = {
            "mode": self.mode,
            "poll_seconds": self._rescan_every if self.mode == "poll" else None,
            "quiet_seconds": self._options.quiet,
            "scanned_at": None,
        }
        if self._last_scan is None:
            return report
        at, scan = self._last_scan
        report.update(
            scanned_at=at,
            failed=scan.failed,
            models={
                name: {
                    "versions": [v.number for v in folder.versions],
                    "settling": list(folder.settling),
                    "config_settling_seconds": folder.config_settling_for,
                }
                for name, folder in sorted(scan.models.items())
            },
            ignored=list(scan.ignored),
            unreadable=list(scan.unreadable),
        )
        return report

    async def stop(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()
        self._wanted.clear()
        for runner in self._runners.values():
            runner.cancel()
        await asyncio.gather(*self._runners.values(), return_exceptions=True)

    async def idle(self) -> None:
        """Return once every model handed to a runner so far has been applied."""
        while running := [r for r in self._runners.values() if not r.done()]:
            await asyncio.gather(*running, return_exceptions=True)

    async def rescan(self) -> float | None:
        """One pass (poll mode): returns when to look again for versions still settling."""
        return await self._rescan(self._options)

    async def _rescan(self, options: ScanOptions) -> float | None:
        scan = await asyncio.to_thread(
            scan_repository, self.root, options, now=time.time(), single=self.single
        )
        self._last_scan = (time.time(), scan)
        for line in scan.ignored:
            if line not in self._ignored_seen:
                self._ignored_seen.add(line)
                log.info("ignored %s", line)
        ready: dict[str, ModelFolder | None] = {}
        if scan.failed:
            return scan.retry_after  # NOTE: an unlistable root says nothing about the models
        for name, folder in scan.models.items():
            if folder.config_settling_for > 0:
                continue  # NOTE: its config file is being written: judge it once it is still
            ready[name] = folder
            for number in folder.settling:
                log.debug("model %s version %d: waiting for its files to settle", name, number)
        for name in self._target.model_names():
            if name not in scan.models and name not in scan.unreadable:
                ready[name] = None
        if not self._started:
            # NOTE: the first pass is awaited: the server says "ready" once it is done.
            await asyncio.gather(*(self._apply(name, f) for name, f in ready.items()))
        else:
            for name, wanted in ready.items():
                self._submit(name, wanted)
        return scan.retry_after

    def _submit(self, name: str, folder: ModelFolder | None) -> None:
        """Hand one model's folder to its own runner, without waiting for it.

        NOTE: each model has at most one runner; a newer state simply replaces one that has
        not been applied yet, so scans never pile up behind a slow load.
        """
        self._wanted[name] = folder
        runner = self._runners.get(name)
        if runner is None or runner.done():
            self._runners[name] = asyncio.create_task(self._run(name))

    async def _run(self, name: str) -> None:
        while name in self._wanted:
            folder = self._wanted.pop(name)
            try:
                await self._apply(name, folder)
            except Exception:
                log.exception("model %s: applying the repository's state failed", name)

    async def _apply(self, name: str, folder: ModelFolder | None) -> None:
        aspired = Aspired(name) if folder is None else await self.aspired(folder)
        await self._target.apply(aspired)

    async def aspired(self, folder: ModelFolder, override: str | None = None) -> Aspired:
        """What ``folder`` asks for, resolved on a worker thread within the time limit.

        With ``override`` (the load API's config), an invalid override is raised, not
        recorded: the client sent it and is told at once.
        """
        try:
            async with self._resolving:  # NOTE: one given up on frees its place at once
                limit = self._resolve_timeout
                work = in_thread(
                    lambda: self._resolver.resolve(folder, override=override),
                    name="repoman-resolve",
                    deadline=None if limit is None else time.monotonic() + limit,
                )
                # NOTE: a backend that describes out of process stops at the deadline and
                # says why; the grace lets that reason (not this one) reach the model.
                resolved = await asyncio.wait_for(
                    work, None if limit is None else limit + REPORT_GRACE
                )
        except TimeoutError:
            return Aspired(
                folder.name,
                present=frozenset(v.number for v in folder.versions),
                error=f"reading its config and model files took over {self._resolve_timeout:g} s "
                "(a backend describing the model did not return)",
            )
        if override is not None and resolved.error is not None:
            raise resolved.error
        if resolved.config is not None:
            for warning in resolved.config.warnings:
                if (folder.name, warning) not in self._warned:
                    self._warned.add((folder.name, warning))
                    log.warning("model %s: %s", folder.name, warning)
        return resolved.aspired()

    # ---- the repository API (explicit mode) ------------------------------------------

    async def load(
        self, name: str, config_text: str | None = None, *, at_start: bool = False
    ) -> list[str]:
        """Load or reload one model as the disk has it now (``config_text``: JSON override);
        returns what failed (empty: every wanted version is served). An override larger than
        the config size limit is refused before it is parsed. As in Triton's explicit mode,
        an ensemble's load also loads the members it names that are not loaded yet (theirs
        too), each before the ensembles that use it; an ensemble whose members cannot serve
        it then fails to load.

        A load through the API puts every wanted version in memory now, lazy or not.
        ``at_start`` (``--load-model``) says which models are served, not that they must be
        in memory: each is served as its config says (a lazy one stays AVAILABLE until its
        first request), as poll mode serves the whole repository.
        """
        wanted = {name: await self._read(name, config_text)}
        failures: list[str] = []
        held = set(self._target.model_names())
        level = [name]
        while level:
            found = {
                member: None
                for model in level
                for member in _members(wanted[model])
                if member not in held and member not in wanted
            }
            read = await asyncio.gather(
                *(self._read(member) for member in found), return_exceptions=True
            )
            level = []
            for member, result in zip(found, read, strict=True):
                if isinstance(result, RepomanError):
                    failures.append(f"member '{member}': {result}")
                elif isinstance(result, BaseException):
                    raise result
                else:
                    wanted[member] = result
                    level.append(member)
        own: list[str] = []
        while wanted:
            # NOTE: each wave holds the models none of the others left uses; ensembles that
            # include each other go together (and fail: they can never serve).
            left = set(wanted)
            wave = [m for m, a in wanted.items() if not (_members(a) & (left - {m}))]
            wave = wave or list(wanted)
            results = await asyncio.gather(
                *(
                    self._target.apply(wanted.pop(m), retry_failed=not at_start, need_members=True)
                    for m in wave
                )
            )
            for model, failed in zip(wave, results, strict=True):
                if model == name:
                    own = failed
                else:
                    failures += [f"member '{model}': {failure}" for failure in failed]
        return own + failures

    async def _read(self, name: str, config_text: str | None = None) -> Aspired:
        """What loading ``name`` wants, as the disk (and ``config_text``) has it now."""
        path = self._model_path(name)
        if path is None or not path.is_dir():
            raise ModelNotFound(name)
        limit = self._options.max_config_bytes
        if config_text is not None and len(config_text) > limit // 4:
            # NOTE: counted in bytes as a file would be; only a long text needs encoding.
            size = len(config_text.encode("utf-8", "surrogatepass"))
            if size > limit:
                raise config_too_large(OVERRIDE_NAME, size, limit)
        options = dataclasses.replace(self._options, quiet=0.0)
        folder = await asyncio.to_thread(
            read_model, path, options, now=time.time(), name=name, root=self.root
        )
        return await self.aspired(folder, config_text)

    async def unload(self, name: str) -> None:
        await self._target.apply(Aspired(name))

    async def _load_logged(self, name: str) -> None:
        try:
            await self.load(name, at_start=True)
        except RepomanError as exc:
            log.error("--load-model %s: %s", name, exc)

    def _model_path(self, name: str) -> Path | None:
        if self.single is not None:
            return self.root if name == self.single else None
        return self.root / name if valid_model_name(name) else None

    def disk_models(self) -> list[str]:
        if self.single is not None:
            return [self.single]
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and valid_model_name(p.name)
        )


def _members(aspired: Aspired) -> set[str]:
    """The models the steps of ``aspired``'s versions use (none for a plain model)."""
    return {step.model_name for v in aspired.versions for step in v.config.ensemble_steps}
