"""What is on disk: model folders, their configs and version folders, and the versions wanted."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from repoman.config import load_model_config
from repoman.config.model import ModelConfig, VersionPolicy
from repoman.errors import RepomanError

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
"""Model names repoman accepts: they become URL segments and folder names."""


@dataclass(frozen=True)
class ModelEntry:
    """One model folder as found on disk.

    Either ``config`` is set, or ``error`` says why the model cannot be served.
    ``available`` are the numeric version folders present; ``wanted`` those the
    version policy selects (the full set: a version left out is to be unloaded).
    """

    name: str
    path: Path
    config: ModelConfig | None
    error: RepomanError | None
    available: tuple[int, ...]
    wanted: tuple[int, ...]


@dataclass(frozen=True)
class Scan:
    models: dict[str, ModelEntry]
    ignored: tuple[str, ...]
    """Paths skipped, each with the reason (``path: reason``), for logging."""


def scan_repository(root: Path, *, default_platform: str | None = None) -> Scan:
    """Read every model folder under ``root``. Never raises for a bad model: it records it."""
    models: dict[str, ModelEntry] = {}
    ignored: list[str] = []
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        if child.name.startswith(".") or not child.is_dir():
            continue
        if not MODEL_NAME.match(child.name):
            ignored.append(f"{child}: not a valid model name")
            continue
        models[child.name] = read_model(child, ignored, default_platform=default_platform)
    return Scan(models, tuple(ignored))


def read_model(
    path: Path, ignored: list[str] | None = None, *, default_platform: str | None = None
) -> ModelEntry:
    available = tuple(sorted(_version_folders(path, ignored if ignored is not None else [])))
    try:
        config = load_model_config(path, default_platform=default_platform)
    except RepomanError as exc:
        return ModelEntry(path.name, path, None, exc, available, ())
    wanted = select_versions(config.version_policy, available)
    return ModelEntry(path.name, path, config, None, available, wanted)


def select_versions(policy: VersionPolicy, available: Iterable[int]) -> tuple[int, ...]:
    """The versions a policy serves out of those available (sorted ascending)."""
    versions = sorted(set(available))
    if policy.kind == "all":
        return tuple(versions)
    if policy.kind == "specific":
        return tuple(v for v in versions if v in set(policy.versions))
    return tuple(versions[-policy.num_versions :]) if policy.num_versions > 0 else ()


def _version_folders(model_path: Path, ignored: list[str]) -> Iterable[int]:
    for child in model_path.iterdir():
        if not child.is_dir() or child.name.startswith("."):
            continue
        if not child.name.isdigit():
            ignored.append(f"{child}: not a version folder (not a number)")
        elif child.name.startswith("0"):
            ignored.append(f"{child}: version folders must not start with 0")
        else:
            yield int(child.name)
