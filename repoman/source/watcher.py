"""Turns file-system activity under a repository root into debounced, never-overlapping rescans."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePath

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from repoman.source.scan import is_ignored_name

__all__ = ["OnChange", "RepositoryWatcher", "is_ignored"]

log = logging.getLogger("repoman.source.watcher")

OnChange = Callable[[], Awaitable[float | None]]
"""Rescans the repository; may return seconds after which to be called again even without events."""


# NOTE: opened and closed-without-write events are left out on purpose: the rescan itself opens
# every config file, and listening to those would make each rescan schedule the next one.
# DirModifiedEvent is left out too: watchdog synthesises it for the parent of every change, so a
# write to `.hidden` would otherwise reach the root as a "modified" event that cannot be ignored.
_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,  # touch / chmod: mtime and permissions decide whether a version can load
    FileClosedEvent,  # close after write: the write really finished
    FileDeletedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]


def is_ignored(path: PurePath, *, directory: bool = False) -> bool:
    """Whether a change to ``path`` (relative to the repository root) can never matter.

    Hidden files and folders (any part starting with ``.``) are ignored, and so are editor
    swap/backup files and partial downloads (``*.swp *.swo *.swx *~ #*# .#* 4913 *.tmp *.part
    *.crdownload *.partial``) by their last part. ``directory=True`` applies only the hidden rule:
    the name patterns describe files, and a version folder may well be called ``4913``.
    """
    if any(part.startswith(".") and part not in (".", "..") for part in path.parts):
        return True
    if directory:
        return False
    return is_ignored_name(path.name)


class RepositoryWatcher:
    """Calls ``on_change`` when the tree under ``root`` has changed, and periodically anyway.

    - Events. watchdog's observer thread watches ``root`` recursively and posts every relevant
      event (created, modified, attributes changed, closed after writing, deleted, moved; files
      and folders; relevant unless :func:`is_ignored` holds for both its source and destination)
      to the event loop with ``call_soon_threadsafe``. On the loop each event re-arms a debounce
      timer of ``quiet`` seconds, so a burst of writes causes one rescan, ``quiet`` seconds after
      the last event. Reading the tree causes no event, so an unchanged tree is not rescanned
      (except periodically). :meth:`poke` counts as an event.
    - One at a time. ``on_change`` is awaited on the loop and calls never overlap: if the timer
      fires while a call runs, exactly one more call follows it (the quiet period has then
      already passed), however many events came meanwhile.
    - Retry. ``on_change`` may return a delay in seconds ("call me again after this long even
      without events", e.g. a version folder still too fresh to load; at least ``quiet`` is
      used so that a 0 cannot spin). Each call replaces the previous call's request; ``None``
      cancels it.
    - Safety net. When ``rescan_every > 0``, a call happens whenever ``rescan_every`` seconds
      passed since the last call ended, events or not (missed events, network file systems).
      ``use_events=False`` uses no watchdog at all: the periodic call alone (Triton's poll mode).
    - Failures. An exception from ``on_change`` is logged on ``repoman.source.watcher`` and counted
      as a call; the next event, retry or period tries again. If ``root`` is missing, watchdog
      cannot start (e.g. inotify limits), or ``root`` is deleted later, a warning is logged and
      the periodic rescan is all that is left.

    :meth:`start` does not scan: the caller does its first scan itself (or calls :meth:`poke`).
    :meth:`stop` stops the observer and the timers and waits for a running call to finish; no
    call starts after it. All methods must be called from the event loop thread.
    """

    def __init__(
        self,
        root: Path,
        on_change: OnChange,
        *,
        quiet: float = 0.25,
        rescan_every: float = 10.0,
        use_events: bool = True,
    ) -> None:
        self._root = Path(root)
        self._on_change = on_change
        self._quiet = quiet
        self._rescan_every = rescan_every
        self._use_events = use_events
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer: BaseObserver | None = None
        self._debounce: asyncio.TimerHandle | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._periodic: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._stopped = False
        self._scans = 0

    @property
    def scans(self) -> int:
        """How many calls of ``on_change`` have finished (returned or raised)."""
        return self._scans

    async def start(self) -> None:
        """Start the observer (when ``use_events``) and the periodic timer."""
        if self._loop is not None or self._stopped:
            raise RuntimeError("a RepositoryWatcher starts once")
        self._loop = asyncio.get_running_loop()
        if self._use_events:
            # NOTE: adding the recursive inotify watches walks the whole tree: off the loop.
            observer = await asyncio.to_thread(self._start_observer)
            if self._stopped and observer is not None:  # stop() ran while we were starting
                await asyncio.to_thread(_stop_observer, observer)
                return
            self._observer = observer
        if self._observer is None and self._rescan_every <= 0:
            log.warning("nothing watches %s: changes go unnoticed until poke()", self._root)
        self._arm_periodic()

    async def stop(self) -> None:
        """Stop events and timers, then wait for a running ``on_change``. Safe to call again."""
        self._stopped = True
        self._cancel_timers(debounce=True, retry=True, periodic=True)
        observer, self._observer = self._observer, None
        if observer is not None:
            await asyncio.to_thread(_stop_observer, observer)
        if self._task is not None:
            # NOTE: shield so that cancelling stop() does not cancel a rescan half-way through.
            await asyncio.shield(self._task)

    def poke(self) -> None:
        """Ask for a rescan exactly as a file-system event would."""
        if self._stopped or self._loop is None:
            return
        self._cancel_timers(debounce=True)
        self._debounce = self._loop.call_later(self._quiet, self._fire)

    # -- the observer thread ----------------------------------------------------------------

    def _start_observer(self) -> BaseObserver | None:
        if not self._root.is_dir():
            log.warning("%s is not a directory: watching by periodic rescan only", self._root)
            return None
        observer = Observer()
        try:
            observer.schedule(_Handler(self), str(self._root), recursive=True, event_filter=_EVENTS)
            observer.start()
        except Exception as exc:  # inotify watch/instance limits surface as OSError
            log.warning("cannot watch %s (%s): watching by periodic rescan only", self._root, exc)
            _stop_observer(observer)
            return None
        return observer

    def _relevant(self, event: FileSystemEvent) -> bool:
        paths = [os.fsdecode(p) for p in (event.src_path, event.dest_path) if p]
        return any(self._relevant_path(p, event.is_directory) for p in paths)

    def _relevant_path(self, path: str, directory: bool) -> bool:
        try:
            relative = PurePath(path).relative_to(self._root)
        except ValueError:  # a move out of the tree names a path outside it
            return False
        return not is_ignored(relative, directory=directory)

    def _post(self, event: FileSystemEvent) -> None:
        """Called on the observer thread for every filtered event."""
        if self._stopped or self._loop is None or not self._relevant(event):
            return
        root_gone = (
            isinstance(event, DirDeletedEvent) and Path(os.fsdecode(event.src_path)) == self._root
        )
        # The loop may have closed without stop(): then nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._on_event, root_gone)

    # -- the event loop ---------------------------------------------------------------------

    def _on_event(self, root_gone: bool) -> None:
        if root_gone:
            log.warning("%s was deleted: watching by periodic rescan only", self._root)
        self.poke()

    def _fire(self) -> None:
        if self._stopped:
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        assert self._loop is not None
        self._task = self._loop.create_task(self._run())

    async def _run(self) -> None:
        # NOTE: `_again` is only read between awaits, so an event that lands while on_change
        # runs is either seen here or starts a fresh task after this one is done, never lost.
        while True:
            self._again = False
            # This call is the rescan that a pending retry or period asked for.
            self._cancel_timers(retry=True, periodic=True)
            delay = await self._call()
            if self._stopped:
                return
            self._arm_retry(delay)
            self._arm_periodic()
            if not self._again:
                return

    async def _call(self) -> float | None:
        try:
            return await self._on_change()
        except Exception as exc:
            log.exception("repository rescan of %s failed: %s", self._root, exc)
            return None
        finally:
            self._scans += 1

    def _cancel_timers(
        self, *, debounce: bool = False, retry: bool = False, periodic: bool = False
    ) -> None:
        if debounce and self._debounce is not None:
            self._debounce.cancel()
            self._debounce = None
        if retry and self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if periodic and self._periodic is not None:
            self._periodic.cancel()
            self._periodic = None

    def _arm_retry(self, delay: float | None) -> None:
        if delay is not None and self._loop is not None:
            self._retry = self._loop.call_later(max(delay, self._quiet), self._fire)

    def _arm_periodic(self) -> None:
        if self._rescan_every > 0 and self._loop is not None and not self._stopped:
            self._periodic = self._loop.call_later(self._rescan_every, self._fire)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: RepositoryWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._watcher._post(event)


def _stop_observer(observer: BaseObserver) -> None:
    observer.stop()
    if observer.is_alive():
        observer.join(timeout=5)
