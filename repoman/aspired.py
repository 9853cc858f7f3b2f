"""What the Source hands the manager: per model, the full set of versions it wants served."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from repoman.config.model import ModelConfig

Fingerprint = tuple[tuple[str, int, int], ...]
"""Every file of a version as (relative path, size, mtime_ns): equal means unchanged."""


@dataclass(frozen=True)
class AspiredVersion:
    """One version the Source wants served, with everything needed to load it.

    ``config`` is the version's effective config (the model's when the version's own is
    broken). ``error`` set means it cannot be loaded as it is (its own config is invalid, it
    disagrees with its model file, a symlink leads out of the repository): it is reported
    as failed, and tried again once its files or config change.
    """

    version: int
    config: ModelConfig
    fingerprint: Fingerprint = ()
    location: Path | None = None
    """Where the backend finds the version's files (opaque to the manager)."""
    error: str = ""

    @property
    def identity(self) -> tuple[Fingerprint, ModelConfig]:
        """Equal identities mean the same files and config: nothing to reload."""
        return self.fingerprint, self.config


@dataclass(frozen=True)
class Aspired:
    """The full set of versions the Source wants for one model (TF Serving's aspired versions).

    A version left out is to be unloaded; ``present`` are the versions that still exist at
    the source (wanted or not): one that is not wanted keeps serving until a wanted one is
    ready, while a version no longer present goes at once. ``error`` is a model-level
    problem (an invalid model config): nothing new is loaded, and versions still present
    keep serving what they served. ``Aspired(name)`` alone means: unload everything.
    """

    model: str
    versions: tuple[AspiredVersion, ...] = ()
    present: frozenset[int] = frozenset()
    error: str = ""

    @property
    def wanted(self) -> dict[int, AspiredVersion]:
        return {v.version: v for v in self.versions}
