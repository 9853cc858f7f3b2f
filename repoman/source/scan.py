"""What is on disk: model folders, config files, version folders and their files (pure reads)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from repoman.aspired import Fingerprint
from repoman.config import CONFIG_FORMATS, MAX_CONFIG_BYTES, find_config_file, read_config_text
from repoman.errors import ConfigError, ConfigIssue, RepomanError
from repoman.names import valid_model_name, valid_version

_IGNORED_SUFFIXES = (".swp", ".swo", ".swx", "~", ".tmp", ".part", ".partial", ".crdownload")


def is_ignored_name(name: str) -> bool:
    """Hidden, editor swap/backup and temp files never count as model files."""
    return (
        name.startswith((".", "#"))
        or name.endswith(_IGNORED_SUFFIXES)
        or name == "4913"  # vim's write-permission probe
    )


@dataclass(frozen=True)
class ConfigFile:
    """A config file as read from disk (parsed later, by the resolver), or why it could not be."""

    path: Path
    text: str = ""
    error: RepomanError | None = None

    @property
    def fmt(self) -> str:
        return CONFIG_FORMATS[self.path.name]


@dataclass(frozen=True)
class VersionFolder:
    """One numeric version folder: its own config file (if any) and its files."""

    number: int
    path: Path
    config_file: ConfigFile | None
    fingerprint: Fingerprint
    newest_mtime: float
    """Seconds since the epoch of the most recent change to any of its files."""
    refused: str = ""
    """Why it must never be loaded (a symlink out of the repository), or ""."""


@dataclass(frozen=True)
class ModelFolder:
    """One model folder as found on disk: nothing parsed, nothing of a backend's run.

    ``versions`` are the version folders present; ``settling`` are those whose files
    changed too recently to trust (or lack the ready marker).
    """

    name: str
    path: Path
    config_file: ConfigFile | None
    versions: tuple[VersionFolder, ...] = ()
    settling: tuple[int, ...] = ()
    config_settling_for: float = 0.0
    """Seconds until the model's config file has been still for the quiet period (0: it has)."""

    def version(self, number: int) -> VersionFolder | None:
        return next((v for v in self.versions if v.number == number), None)


@dataclass(frozen=True)
class Scan:
    models: dict[str, ModelFolder]
    ignored: tuple[str, ...]
    """Paths skipped, each with the reason (``path: reason``), for logging."""
    retry_after: float | None = None
    """Seconds until settling versions may be complete: scan again then."""
    unreadable: tuple[str, ...] = ()
    """Model folders that could not be read this pass: leave them as they are."""
    failed: bool = False
    """The repository itself could not be listed: nothing can be concluded from this pass."""


@dataclass(frozen=True)
class ScanOptions:
    quiet: float = 0.0
    """A version folder whose newest file is younger than this is still settling."""
    ready_marker: str | None = None
    """When set, a version folder counts only once a file of this name exists in it."""
    max_config_bytes: int = MAX_CONFIG_BYTES
    """A config file (or a load request's config) larger than this is refused, unread."""


def looks_like_a_model(folder: Path) -> bool:
    """Whether ``folder`` is itself one model folder (a config file, or a numbered version
    folder, at its top) rather than a repository of them.

    This is how KServe's storage initializer lays out a single model: its files at the root
    of ``/mnt/models``. An empty folder is a repository (models may be added to it later).
    """
    try:
        return _has_config(folder) or any(
            child.is_dir() and valid_version(child.name) for child in folder.iterdir()
        )
    except OSError:
        return False


def scan_repository(
    root: Path, options: ScanOptions | None = None, *, now: float, single: str | None = None
) -> Scan:
    """Read every model folder under ``root``. Never raises for a bad model: it records it.

    ``single``: ``root`` is itself one model folder (see ``looks_like_a_model``), served
    under that name.
    """
    options = options or ScanOptions()
    models: dict[str, ModelFolder] = {}
    ignored: list[str] = []
    unreadable: list[str] = []
    retry: list[float] = []
    try:
        children = sorted(root.iterdir()) if root.is_dir() else []
    except OSError as exc:
        return Scan({}, (f"{root}: cannot be listed ({exc.strerror or exc})",), None, failed=True)
    for child in children if single is None else [root]:
        name = child.name if single is None else single
        try:
            if single is None:
                if child.name.startswith(".") or not child.is_dir():
                    continue
                if not valid_model_name(child.name):
                    ignored.append(f"{child}: not a valid model name")
                    continue
                if escapes(child, root, deep=False):
                    ignored.append(f"{child}: refused: a symlink leading out of the repository")
                    continue
            folder = read_model(child, options, now=now, ignored=ignored, name=name, root=root)
        except OSError as exc:
            # NOTE: removed (or made unreadable) while this pass read it: the next pass
            # sees what became of it; until then it is left as it is, not unloaded.
            unreadable.append(name)
            ignored.append(f"{child}: could not be read this pass ({exc.strerror or exc})")
            continue
        models[name] = folder
        # NOTE: a folder waiting for its marker has no retry time: creating the marker is
        # an event, and the periodic rescan covers a missed one.
        retry += [
            options.quiet - (now - version.newest_mtime)
            for version in folder.versions
            if version.number in folder.settling
        ]
        if folder.config_settling_for > 0:
            retry.append(folder.config_settling_for)
    return Scan(
        models,
        tuple(ignored),
        max(0.0, min(retry)) if retry else None,
        unreadable=tuple(unreadable),
    )


def read_model(
    path: Path,
    options: ScanOptions,
    *,
    now: float,
    ignored: list[str] | None = None,
    name: str | None = None,
    root: Path | None = None,
) -> ModelFolder:
    """One model folder: its config file's text, its version folders and their files.

    ``name`` defaults to the folder's; ``root``, the repository nothing may lead out of, to
    the folder's parent (a one-model repository passes the folder itself).
    """
    ignored = ignored if ignored is not None else []
    root = path.parent if root is None else root
    versions: list[VersionFolder] = []
    settling: list[int] = []
    for number, folder in _version_folders(path, ignored):
        outside = escapes(folder, root)
        if outside:
            refused = f"{outside} leads out of the repository (a symlink); refusing to load it"
            versions.append(VersionFolder(number, folder, None, (), 0.0, refused))
            continue
        fingerprint, newest = _fingerprint(folder)
        marker_missing = options.ready_marker and not (folder / options.ready_marker).exists()
        if marker_missing or (options.quiet > 0 and now - newest < options.quiet):
            settling.append(number)
            if marker_missing:
                continue
        config_file = (
            read_config_file(folder, root, options.max_config_bytes)
            if _has_config(folder)
            else None
        )
        versions.append(VersionFolder(number, folder, config_file, fingerprint, newest))
    config_file = read_config_file(path, root, options.max_config_bytes)
    config_age = (
        now - _mtime(config_file.path)
        if config_file is not None and config_file.error is None
        else options.quiet
    )
    return ModelFolder(
        path.name if name is None else name,
        path,
        config_file,
        tuple(versions),
        tuple(sorted(settling)),
        max(0.0, options.quiet - config_age),
    )


def read_config_file(
    folder: Path, root: Path, max_bytes: int = MAX_CONFIG_BYTES
) -> ConfigFile | None:
    """The folder's config file as text; None when it has none. A config file that is a
    symlink leading out of the repository ``root``, or larger than ``max_bytes``, is not
    read: it is recorded as an error."""
    try:
        path = find_config_file(folder)
    except RepomanError as exc:
        return ConfigFile(folder, error=exc)
    if path is None:
        return None
    if escapes(path, root, deep=False):
        return _unreadable(path, "leads out of the repository (a symlink); refusing to read it")
    try:
        return ConfigFile(path, read_config_text(path, max_bytes=max_bytes))
    except ConfigError as error:
        return ConfigFile(path, error=error)


def _unreadable(path: Path, message: str) -> ConfigFile:
    return ConfigFile(path, error=ConfigError([ConfigIssue(str(path), None, None, "", message)]))


def _has_config(folder: Path) -> bool:
    return any((folder / name).is_file() for name in CONFIG_FORMATS)


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


def _version_folders(model_path: Path, ignored: list[str]) -> Iterable[tuple[int, Path]]:
    for child in sorted(model_path.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        if valid_version(child.name):
            yield int(child.name), child
        elif child.name.isascii() and child.name.isdigit():
            ignored.append(f"{child}: version folders must not start with 0")
        else:
            ignored.append(f"{child}: not a version folder (not a number)")


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
