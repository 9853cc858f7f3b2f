"""A model version as the manager holds it, and the states it goes through (named once, here)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from repoman.aspired import Fingerprint
from repoman.backends import Backend
from repoman.config.model import ModelConfig


class State(enum.Enum):
    """A version's life: LOADING -> READY -> UNLOADING -> UNAVAILABLE, or FAILED; and
    AVAILABLE: valid on disk, not in memory (lazy, or unloaded by the memory budget or for
    being idle), loaded by its first request, which waits for it.

    These are also the states the API shows (the repository index, metrics, the hooks).
    """

    AVAILABLE = "AVAILABLE"
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"
    FAILED = "FAILED"


@dataclass(eq=False)
class ModelVersion:
    """One loaded (or loading, or failed) version of one model and its backend instances.

    Compared and hashed by identity: the scheduler keys its queues on the object, so a
    reloaded version (a new object) gets a fresh queue while the old one drains.
    """

    model: str
    version: int
    config: ModelConfig
    path: Path | None
    state: State = State.LOADING
    reason: str = ""
    instances: list[Backend] = field(default_factory=list)
    load_seconds: float = 0.0
    fingerprint: Fingerprint = ()
    memory_bytes: int = 0
    """What it holds in memory: measured at load (READY), else expected (AVAILABLE)."""
    memory_measured: bool = False
    """``memory_bytes`` was measured (at this or an earlier load of these files), not predicted."""
    loaded_at: float = 0.0
    """When it became READY (the manager's clock)."""

    changes: ClassVar[int] = 0
    """Counts every state any version takes (in this process): routing remembers its answers
    until it moves (VersionTable.route)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "state":
            ModelVersion.changes += 1
        object.__setattr__(self, name, value)

    @property
    def serves(self) -> bool:
        """Routable: READY, or AVAILABLE (a request to it waits while it loads)."""
        return self.state is State.READY or self.state is State.AVAILABLE

    @property
    def identity(self) -> tuple[Fingerprint, ModelConfig]:
        """What it was loaded from: the same as an AspiredVersion's when nothing changed."""
        return self.fingerprint, self.config
