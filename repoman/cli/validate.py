"""`repoman validate`: every config in a repository checked without serving, compiler-style."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from repoman.backends import BackendRegistry
from repoman.config.model import ModelConfig
from repoman.errors import ConfigError, ConfigIssue, RepomanError
from repoman.source.resolve import ResolvedVersion, Resolver
from repoman.source.scan import ScanOptions, looks_like_a_model, scan_repository


@dataclass
class Report:
    """What validation found: issues in order, and how much was checked."""

    issues: list[ConfigIssue] = field(default_factory=list)
    models: int = 0
    versions: int = 0

    @property
    def errors(self) -> int:
        return sum(issue.severity == "error" for issue in self.issues)

    @property
    def warnings(self) -> int:
        return sum(issue.severity == "warning" for issue in self.issues)

    def summary(self) -> str:
        return (
            f"{self.models} model(s), {self.versions} version(s) checked: "
            f"{self.errors} error(s), {self.warnings} warning(s)"
        )


def validate_repository(
    root: Path,
    registry: BackendRegistry,
    *,
    default_platform: str | None = None,
    auto_complete: bool = True,
    model_name: str | None = None,
) -> Report:
    """Check every model config (parse, schema, semantics), that a backend serves it, and,
    where the backend can read model files, that the config matches each version's model.

    The messages are the ones the server gives for the same problems.
    """
    report = Report()
    if not root.is_dir():
        report.issues.append(
            ConfigIssue(str(root), None, None, "", "expected a folder, found none")
        )
        return report
    resolver = Resolver(registry, auto_complete=auto_complete, default_platform=default_platform)
    # NOTE: a folder that is itself one model (KServe's single-model layout) is checked as
    # the server would serve it, under its own name.
    single = (model_name or root.resolve().name) if looks_like_a_model(root) else None
    scan = scan_repository(root, ScanOptions(), now=time.time(), single=single)
    for line in scan.ignored:
        path, _, reason = line.partition(": ")
        report.issues.append(ConfigIssue(path, None, None, "", reason, severity="warning"))
    for folder in scan.models.values():
        report.models += 1
        model = resolver.resolve(folder, check_all=True)
        if model.error is not None or model.config is None:
            report.issues += _issues(model.error or RepomanError("no config"), str(folder.path))
            continue
        _check_config(model.config, str(model.config.source or folder.path), registry, report)
        if not model.versions:
            report.issues.append(
                ConfigIssue(
                    str(folder.path),
                    None,
                    None,
                    "",
                    "no version folder (1/, 2/, ...) to serve",
                    severity="warning",
                )
            )
        for _, version in sorted(model.versions.items()):
            report.versions += 1
            _check_version(version, model.config, registry, report)
    return report


def _check_version(
    version: ResolvedVersion, model_config: ModelConfig, registry: BackendRegistry, report: Report
) -> None:
    config = version.config
    where = str((config.source if config else None) or version.path)
    if version.mismatches and config is not None:
        report.issues += [
            ConfigIssue(where, None, None, name, message) for name, message in version.mismatches
        ]
        return
    if version.error is not None or config is None:
        report.issues += _issues(version.error or RepomanError("no config"), str(version.path))
        return
    if config is not model_config:
        _check_config(config, where, registry, report)
    if config.is_ensemble:
        return  # NOTE: no model file: its members are checked when it is served
    try:
        spec = registry.resolve(config)
    except RepomanError:
        return  # reported once for the config
    filename = config.default_model_filename or spec.default_model_filename
    if filename and not (version.path / filename).exists():
        report.issues.append(
            ConfigIssue(
                str(version.path),
                None,
                None,
                "",
                f"expected the model file {filename}, found none",
                hint=f"backend {spec.name} loads {filename}",
            )
        )
    elif version.unreadable is not None:
        report.issues.append(
            ConfigIssue(
                str(version.path / filename),
                None,
                None,
                "",
                f"{spec.name} cannot read it: {version.unreadable}",
            )
        )


def _check_config(
    config: ModelConfig, where: str, registry: BackendRegistry, report: Report
) -> None:
    for warning in config.warnings:
        report.issues.append(ConfigIssue(where, None, None, "", warning, severity="warning"))
    if config.is_ensemble:
        return  # NOTE: run by the server itself, not by a backend
    try:
        registry.resolve(config)
    except RepomanError as exc:
        field_name = "backend" if config.backend else "platform"
        report.issues.append(ConfigIssue(where, None, None, field_name, str(exc)))


def _issues(error: RepomanError, where: str) -> list[ConfigIssue]:
    if isinstance(error, ConfigError):
        return list(error.issues)
    return [ConfigIssue(where, None, None, "", str(error))]
