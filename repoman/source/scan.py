"""What is on disk: model folders, configs, version folders, the versions wanted (pure reads)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from repoman.autocomplete import ConfigCompleter
from repoman.config import find_config_file, load_model_config
from repoman.config.model import ModelConfig, VersionPolicy
from repoman.errors import RepomanError

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
"""Model names repoman accepts: they become URL segments and folder names."""

_IGNORED_SUFFIXES = (".swp", ".swo", ".swx", "~", ".tmp", ".part", ".partial", ".crdownload")

Fingerprint = tuple[tuple[str, int, int], ...]
"""Every file of a version folder as (relative path, size, mtime_ns): equal means unchanged."""


def is_ignored_name(name: str) -> bool:
    """Hidden, editor swap/backup and temp files never count as model files."""
    return (
        name.startswith((".", "#"))
        or name.endswith(_IGNORED_SUFFIXES)
        or name == "4913"  # vim's write-permission probe
    )


@dataclass(frozen=True)
class VersionEntry:
    """One numeric version folder: its effective config (or why it has none) and its files."""

    number: int
    path: Path
    config: ModelConfig | None
    error: RepomanError | None
    fingerprint: Fingerprint
    newest_mtime: float
    """Seconds since the epoch of the most recent change to any of its files."""


@dataclass(frozen=True)
class ModelEntry:
    """One model folder as found on disk.

    ``config`` is the model-level config (``error`` says why there is none). ``versions``
    are the version folders present, each with its effective config: its own config file
    when it has one, else the model's. ``wanted`` are the numbers the version policy
    selects among the *complete* versions (the full set: a version left out is to be
    unloaded); ``settling`` are folders whose files changed too recently to trust.
    """

    name: str
    path: Path
    config: ModelConfig | None
    error: RepomanError | None
    versions: dict[int, VersionEntry] = field(default_factory=dict)
    wanted: tuple[int, ...] = ()
    settling: tuple[int, ...] = ()
    config_settling_for: float = 0.0
    """Seconds until the model's config file has been still for the quiet period (0: it has)."""


@dataclass(frozen=True)
class Scan:
    models: dict[str, ModelEntry]
    ignored: tuple[str, ...]
    """Paths skipped, each with the reason (``path: reason``), for logging."""
    retry_after: float | None = None
    """Seconds until settling versions may be complete: scan again then."""


@dataclass(frozen=True)
class ScanOptions:
    default_platform: str | None = None
    quiet: float = 0.0
    """A version folder whose newest file is younger than this is still settling."""
    ready_marker: str | None = None
    """When set, a version folder counts only once a file of this name exists in it."""
    completer: ConfigCompleter | None = None
    """Auto-complete: fills what a config leaves out from the model file (None: off)."""


def scan_repository(root: Path, options: ScanOptions | None = None, *, now: float) -> Scan:
    """Read every model folder under ``root``. Never raises for a bad model: it records it."""
    options = options or ScanOptions()
    models: dict[str, ModelEntry] = {}
    ignored: list[str] = []
    retry: list[float] = []
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        if child.name.startswith(".") or not child.is_dir():
            continue
        if not MODEL_NAME.match(child.name):
            ignored.append(f"{child}: not a valid model name")
            continue
        if escapes(child, root, deep=False):
            ignored.append(f"{child}: refused: a symlink leading out of the repository")
            continue
        entry = read_model(child, options, now=now, ignored=ignored)
        models[child.name] = entry
        # NOTE: a folder waiting for its marker has no retry time: creating the marker is
        # an event, and the periodic rescan covers a missed one.
        retry += [
            options.quiet - (now - entry.versions[v].newest_mtime)
            for v in entry.settling
            if v in entry.versions
        ]
        if entry.config_settling_for > 0:
            retry.append(entry.config_settling_for)
    return Scan(models, tuple(ignored), max(0.0, min(retry)) if retry else None)


def read_model(
    path: Path, options: ScanOptions, *, now: float, ignored: list[str] | None = None
) -> ModelEntry:
    """One model folder: its config, its version folders, and the versions wanted."""
    ignored = ignored if ignored is not None else []
    try:
        config: ModelConfig | None = load_model_config(
            path,
            default_platform=options.default_platform,
            complete=options.completer.for_model(path) if options.completer else None,
        )
        error = None
    except RepomanError as exc:
        config, error = None, exc
    versions: dict[int, VersionEntry] = {}
    settling: list[int] = []
    for number, folder in _version_folders(path, ignored):
        outside = escapes(folder, path.parent)
        if outside:
            refused = RepomanError(
                f"{outside} leads out of the repository (a symlink); refusing to load it"
            )
            versions[number] = VersionEntry(number, folder, None, refused, (), 0.0)
            continue
        fingerprint, newest = _fingerprint(folder)
        marker_missing = options.ready_marker and not (folder / options.ready_marker).exists()
        if marker_missing or now - newest < options.quiet:
            settling.append(number)
            if marker_missing:
                continue
        version_config, version_error = config, error
        if find_config_file(folder) is not None:
            try:
                version_config = load_model_config(
                    folder,
                    default_platform=options.default_platform,
                    model_name=path.name,
                    complete=(
                        options.completer.for_model(path, folder) if options.completer else None
                    ),
                )
                version_error = None
            except RepomanError as exc:
                version_config, version_error = None, exc
        versions[number] = VersionEntry(
            number, folder, version_config, version_error, fingerprint, newest
        )
    complete = [v for v in versions if v not in settling]
    wanted = select_versions(config.version_policy, complete) if config is not None else ()
    config_file = _config_file_or_none(path)
    config_age = now - _mtime(config_file) if config_file is not None else options.quiet
    return ModelEntry(
        path.name,
        path,
        config,
        error,
        versions,
        wanted,
        tuple(sorted(settling)),
        max(0.0, options.quiet - config_age),
    )


def _config_file_or_none(path: Path) -> Path | None:
    try:
        return find_config_file(path)
    except RepomanError:
        return None


def escapes(path: Path, root: Path, *, deep: bool = True) -> Path | None:
    """The first path at (``deep``: or under) ``path`` that resolves outside ``root`` (a
    symlink out of the repository), or None. Checked before any model file is opened."""
    base = root.resolve()
    candidates = [path]
    if deep and path.is_dir() and not path.is_symlink():
        candidates += [p for p in path.rglob("*") if p.is_symlink()]
    for candidate in candidates:
        try:
            candidate.resolve().relative_to(base)
        except (ValueError, OSError, RuntimeError):
            return candidate
    return None


def select_versions(policy: VersionPolicy, available: Iterable[int]) -> tuple[int, ...]:
    """The versions a policy serves out of those available (sorted ascending)."""
    versions = sorted(set(available))
    if policy.kind == "all":
        return tuple(versions)
    if policy.kind == "specific":
        return tuple(v for v in versions if v in set(policy.versions))
    return tuple(versions[-policy.num_versions :]) if policy.num_versions > 0 else ()


def _version_folders(model_path: Path, ignored: list[str]) -> Iterable[tuple[int, Path]]:
    for child in sorted(model_path.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        if not child.name.isdigit():
            ignored.append(f"{child}: not a version folder (not a number)")
        elif child.name.startswith("0"):
            ignored.append(f"{child}: version folders must not start with 0")
        else:
            yield int(child.name), child


def _fingerprint(folder: Path) -> tuple[Fingerprint, float]:
    """Every file under ``folder`` (recursively, ignored names skipped) and the newest change."""
    files: list[tuple[str, int, int]] = []
    newest = _mtime(folder)
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        newest = max(newest, _mtime(Path(dirpath)))
        for name in filenames:
            if is_ignored_name(name):
                continue
            full = os.path.join(dirpath, name)
            try:
                stat = os.stat(full)
            except OSError:
                continue  # NOTE: removed between listing and stat: the next scan sees it
            files.append((os.path.relpath(full, folder), stat.st_size, stat.st_mtime_ns))
            newest = max(newest, stat.st_mtime_ns / 1e9)
    return tuple(sorted(files)), newest


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
