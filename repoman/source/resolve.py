"""From a model folder read off disk to complete configs: parsing, auto-complete, model checks.

This is the one place of the Source that runs backend code (a backend's ``describe`` reads a
model file): the Source calls it per model, off the scan, with a time limit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from repoman.aspired import Aspired, AspiredVersion, Fingerprint
from repoman.backends import BackendRegistry, BackendSpec
from repoman.config import CONFIG_FORMATS, Completer, parse_model_config
from repoman.config.model import ModelConfig, VersionPolicy
from repoman.errors import ConfigError, ConfigIssue, RepomanError
from repoman.names import path_inside
from repoman.signature import (
    Mismatch,
    ModelSignature,
    compare,
)
from repoman.source.complete import complete
from repoman.source.scan import ConfigFile, ModelFolder, VersionFolder

log = logging.getLogger(__name__)

OVERRIDE_NAME = "<load request config>"
"""How errors name a config sent with a load request (the load API's override)."""


@dataclass(frozen=True)
class ResolvedVersion:
    """One version folder with its effective config, or why it cannot be served."""

    number: int
    path: Path
    fingerprint: Fingerprint
    config: ModelConfig | None
    error: RepomanError | None = None
    mismatches: tuple[Mismatch, ...] = ()
    """How its config disagrees with its model file (then ``error`` says the same)."""
    unreadable: RepomanError | None = None
    """Its model file could not be described (``repoman validate`` reports it; serving
    leaves it to the load, which says the same in its own words)."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model folder resolved: its config (or why none), its versions, those wanted."""

    name: str
    path: Path
    config: ModelConfig | None
    error: RepomanError | None
    versions: dict[int, ResolvedVersion] = field(default_factory=dict)
    wanted: tuple[int, ...] = ()
    present: frozenset[int] = frozenset()

    def aspired(self) -> Aspired:
        if self.error is not None or self.config is None:
            return Aspired(self.name, present=self.present, error=str(self.error))
        return Aspired(
            self.name,
            tuple(
                AspiredVersion(
                    v.number,
                    v.config or self.config,
                    v.fingerprint,
                    v.path,
                    str(v.error) if v.error is not None else "",
                )
                for v in (self.versions[n] for n in self.wanted)
            ),
            self.present,
        )


class Resolver:
    """Turns model folders into complete configs, the same way for serve, validate and tune.

    Auto-complete (``auto_complete``) fills what a config leaves out (or a missing config)
    from the model file; every wanted version's model file is then described and compared
    with its config, so a mismatch fails that version before anything loads. Descriptions
    are cached per model file (by its files' newest time and size) and whole results per
    folder contents, so a rescan of an unchanged repository parses and describes nothing.
    Thread-safe: the Source resolves several models at once on worker threads.
    """

    def __init__(
        self,
        registry: BackendRegistry,
        *,
        auto_complete: bool = True,
        default_platform: str | None = None,
    ) -> None:
        self._registry = registry
        self._auto_complete = auto_complete
        self._default_platform = default_platform
        self._described: dict[tuple[Path, str, int, int], ModelSignature] = {}
        self._resolved: dict[tuple[ModelFolder, str | None, bool], ResolvedModel] = {}
        self._lock = threading.Lock()

    def resolve(
        self, folder: ModelFolder, *, override: str | None = None, check_all: bool = False
    ) -> ResolvedModel:
        """``folder`` resolved. ``override``: a config (JSON) replacing the folder's own for
        every version (the load API's). ``check_all``: describe every version, not only the
        wanted ones (validate). Never raises for a bad model: it records why."""
        key = (folder, override, check_all)
        with self._lock:
            cached = self._resolved.get(key)
        if cached is not None:
            return cached
        resolved = self._resolve(folder, override, check_all)
        if override is not None:
            # NOTE: a load request's config (up to the size limit each, any number of them)
            # is answered once; kept as a key it would let loads grow the server without end.
            return resolved
        with self._lock:
            if len(self._resolved) > 4096:  # NOTE: bounded: old folder states are never asked again
                self._resolved.clear()
            self._resolved[key] = resolved
        return resolved

    def _resolve(self, folder: ModelFolder, override: str | None, check_all: bool) -> ResolvedModel:
        present = frozenset(v.number for v in folder.versions) | frozenset(folder.settling)
        try:
            if override is not None:
                config = parse_model_config(
                    override,
                    filename=OVERRIDE_NAME,
                    fmt="json",  # NOTE: as Triton's load API: JSON only
                    model_name=folder.name,
                    default_platform=self._default_platform,
                )
            else:
                config = self._model_config(folder, folder.config_file, _latest(folder))
        except RepomanError as exc:
            return ResolvedModel(folder.name, folder.path, None, exc, present=present)
        versions = {
            v.number: self._version(folder, v, config, use_own=override is None)
            for v in folder.versions
        }
        complete = [n for n in versions if n not in folder.settling]
        wanted = select_versions(config.version_policy, complete)
        for number in wanted if not check_all else tuple(versions):
            versions[number] = self._check(versions[number])
        return ResolvedModel(folder.name, folder.path, config, None, versions, wanted, present)

    def _model_config(
        self, folder: ModelFolder, config_file: ConfigFile | None, read_from: VersionFolder | None
    ) -> ModelConfig:
        """The config in ``config_file`` (None: none at all), completed from ``read_from``."""
        complete = self._completer(folder.path, read_from) if self._auto_complete else None
        if config_file is None:
            if complete is None:
                names = ", ".join(CONFIG_FORMATS)
                raise ConfigError(
                    [
                        ConfigIssue(
                            str(folder.path), None, None, "", f"expected one of {names}, found none"
                        )
                    ]
                )
            text, filename, fmt = "{}", str(folder.path / "(auto-completed config)"), "yaml"
        elif config_file.error is not None:
            raise config_file.error
        else:
            text, filename, fmt = config_file.text, str(config_file.path), config_file.fmt
        config = parse_model_config(
            text,
            filename=filename,
            fmt=fmt,
            model_name=folder.name,
            default_platform=self._default_platform,
            complete=complete,
        )
        if config_file is None:
            return config
        return dataclasses.replace(config, source=config_file.path)

    def _version(
        self, folder: ModelFolder, version: VersionFolder, config: ModelConfig, *, use_own: bool
    ) -> ResolvedVersion:
        made = ResolvedVersion(version.number, version.path, version.fingerprint, config)
        if version.refused:
            return dataclasses.replace(made, config=None, error=RepomanError(version.refused))
        if use_own and version.config_file is not None:
            try:
                own = self._model_config(folder, version.config_file, version)
            except RepomanError as exc:
                return dataclasses.replace(made, config=None, error=exc)
            return dataclasses.replace(made, config=own)
        return made

    def _check(self, version: ResolvedVersion) -> ResolvedVersion:
        """The version, failed when its config disagrees with what its model file declares."""
        config = version.config
        if config is None or version.error is not None:
            return version
        try:
            spec = self._registry.resolve(config)
        except RepomanError:
            return version  # NOTE: the load reports an unknown backend, with the ones there are
        try:
            model_path = _model_path(version.path, config.default_model_filename, spec)
        except RepomanError as exc:
            return dataclasses.replace(version, error=exc)
        if spec.describe is None or not spec.check_complete or not model_path.exists():
            return version
        try:
            signature = self._describe(spec, model_path, config.parameters)
        except RepomanError as exc:
            return dataclasses.replace(version, unreadable=exc)
        problems = compare(config, signature)
        if not problems:
            return version
        reason = "; ".join(f"{name}: {message}" for name, message in problems)
        return dataclasses.replace(version, error=RepomanError(reason), mismatches=tuple(problems))

    def _completer(self, model_dir: Path, read_from: VersionFolder | None) -> Completer:
        return lambda doc: complete(
            doc,
            registry=self._registry,
            describe=self._describe,
            model_dir=model_dir,
            version_dir=read_from.path if read_from is not None else None,
        )

    def _describe(
        self, spec: BackendSpec, model_path: Path, parameters: Mapping[str, str]
    ) -> ModelSignature:
        """What the backend says the model file holds; RepomanError when it cannot read it."""
        assert spec.describe is not None
        # NOTE: parameters by digest: a load request's may be large, and differ every time.
        digest = hashlib.sha256(repr(sorted(parameters.items())).encode()).hexdigest()
        key = (model_path, digest, *_stamp(model_path))
        with self._lock:
            cached = self._described.get(key)
        if cached is not None:
            return cached
        try:
            signature = spec.describe(model_path, parameters)
        except Exception as exc:
            raise RepomanError(f"{type(exc).__name__}: {exc}") from None
        with self._lock:
            if len(self._described) > 4096:  # NOTE: bounded, as the results above
                self._described.clear()
            self._described[key] = signature
        return signature


def select_versions(policy: VersionPolicy, available: Iterable[int]) -> tuple[int, ...]:
    """The versions a policy serves out of those available (sorted ascending)."""
    versions = sorted(set(available))
    if policy.kind == "all":
        return tuple(versions)
    if policy.kind == "specific":
        return tuple(v for v in versions if v in set(policy.versions))
    return tuple(versions[-policy.num_versions :]) if policy.num_versions > 0 else ()


def _model_path(version_dir: Path, filename: str | None, spec: BackendSpec) -> Path:
    """The model file; RepomanError when it leads out of the version folder (a symlink)."""
    name = filename or spec.default_model_filename
    return path_inside(version_dir, name, "default_model_filename") if name else version_dir


def _latest(folder: ModelFolder) -> VersionFolder | None:
    usable = [v for v in folder.versions if not v.refused]
    return max(usable, key=lambda v: v.number) if usable else None


def _stamp(path: Path) -> tuple[int, int]:
    """Newest modification time and total size of a model file, or of every file in a model
    folder (a SavedModel's folder time does not change when a file inside is replaced)."""
    try:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        stats = [p.stat() for p in files]
    except OSError:
        return 0, 0
    return max((s.st_mtime_ns for s in stats), default=0), sum(s.st_size for s in stats)
