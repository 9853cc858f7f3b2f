"""The memory budget's books: what each version holds, what a version will need before its first
load, and the counts the metrics show (loads, evictions by reason)."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from repoman.aspired import Fingerprint
from repoman.manager.version import ModelVersion


@dataclass(frozen=True)
class Figure:
    """A version's measured memory and load time, valid while its files are unchanged."""

    fingerprint: Fingerprint
    memory_bytes: int
    load_seconds: float


def file_bytes(fingerprint: Fingerprint) -> int:
    """The total size of a version's files."""
    return sum(size for _, size, _ in fingerprint)


class MemoryBooks:
    """Loop thread only. ``limit`` None: no budget (memory is still measured and shown).

    Before a version's first load its memory is predicted: its files' size plus the median
    of what loads of the same backend took beyond their files (0 before the first such load).
    A measured figure never goes below the files' size: memory an earlier version freed and
    the process kept can hide a load from the resident set, but its weights are there.
    """

    def __init__(self, limit: int | None, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.clock = clock
        self._figures: dict[tuple[str, int], Figure] = {}
        self._overheads: dict[str, list[int]] = {}
        self._held: dict[ModelVersion, int] = {}
        self.loads: Counter[str] = Counter()
        """Loads that needed memory, by cause: eager, lazy (a request), explicit (the API)."""
        self.evictions: Counter[str] = Counter()
        """Versions unloaded by the books, by reason: memory_budget, idle."""

    @property
    def used(self) -> int:
        """Bytes held by loaded versions now (a version being unloaded counts until it is)."""
        return sum(self._held.values())

    def holding(self) -> dict[ModelVersion, int]:
        return dict(self._held)

    def expected(self, mv: ModelVersion) -> tuple[int, bool]:
        """What loading ``mv`` will take, and whether that was measured (else predicted)."""
        figure = self._figures.get((mv.model, mv.version))
        if figure is not None and figure.fingerprint == mv.fingerprint:
            return figure.memory_bytes, True
        files = file_bytes(mv.fingerprint)
        overheads = self._overheads.get(_backend(mv))
        return files + (int(statistics.median(overheads)) if overheads else 0), False

    def expected_load_seconds(self, mv: ModelVersion) -> float:
        figure = self._figures.get((mv.model, mv.version))
        if figure is not None and figure.fingerprint == mv.fingerprint:
            return figure.load_seconds
        return 0.0

    def loaded(self, mv: ModelVersion, measured: int, seconds: float) -> int:
        """Record ``mv`` as holding what its load ``measured``; returns the figure kept."""
        files = file_bytes(mv.fingerprint)
        size = max(measured, files)
        self._figures[(mv.model, mv.version)] = Figure(mv.fingerprint, size, seconds)
        overheads = self._overheads.setdefault(_backend(mv), [])
        overheads.append(size - files)
        del overheads[:-64]  # NOTE: the recent loads say what this backend costs now
        self._held[mv] = size
        mv.memory_bytes, mv.memory_measured = size, True
        return size

    def released(self, mv: ModelVersion) -> None:
        """``mv``'s instances are unloaded: its memory is free again."""
        self._held.pop(mv, None)


def _backend(mv: ModelVersion) -> str:
    return mv.config.backend or mv.config.platform
