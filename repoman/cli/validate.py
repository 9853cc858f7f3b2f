"""`repoman validate`: every config in a repository checked without serving, compiler-style."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from repoman.autocomplete import ConfigCompleter
from repoman.backends import BackendRegistry
from repoman.config.model import ModelConfig
from repoman.errors import ConfigError, ConfigIssue, RepomanError
from repoman.signature import compare_signature
from repoman.source.scan import ScanOptions, scan_repository


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
    completer = ConfigCompleter(registry) if auto_complete else None
    options = ScanOptions(default_platform=default_platform, completer=completer)
    scan = scan_repository(root, options, now=time.time())
    for line in scan.ignored:
        path, _, reason = line.partition(": ")
        report.issues.append(ConfigIssue(path, None, None, "", reason, severity="warning"))
    for entry in scan.models.values():
        report.models += 1
        if entry.error is not None:
            report.issues += _issues(entry.error, str(entry.path))
            continue
        assert entry.config is not None
        _check_config(entry.config, str(entry.config.source or entry.path), registry, report)
        if not entry.versions:
            report.issues.append(
                ConfigIssue(
                    str(entry.path),
                    None,
                    None,
                    "",
                    "no version folder (1/, 2/, ...) to serve",
                    severity="warning",
                )
            )
        for _, version in sorted(entry.versions.items()):
            report.versions += 1
            if version.error is not None:
                report.issues += _issues(version.error, str(version.path))
            elif version.config is not None:
                if version.config is not entry.config:
                    where = str(version.config.source or version.path)
                    _check_config(version.config, where, registry, report)
                _check_model_file(version.config, version.path, registry, report)
    return report


def _check_config(
    config: ModelConfig, where: str, registry: BackendRegistry, report: Report
) -> None:
    for warning in config.warnings:
        report.issues.append(ConfigIssue(where, None, None, "", warning, severity="warning"))
    try:
        registry.resolve(config)
    except RepomanError as exc:
        field_name = "backend" if config.backend else "platform"
        report.issues.append(ConfigIssue(where, None, None, field_name, str(exc)))


def _check_model_file(
    config: ModelConfig, version_path: Path, registry: BackendRegistry, report: Report
) -> None:
    try:
        spec = registry.resolve(config)
    except RepomanError:
        return  # reported once for the config
    filename = config.default_model_filename or spec.default_model_filename
    model_path = version_path / filename if filename else version_path
    if filename and not model_path.exists():
        report.issues.append(
            ConfigIssue(
                str(version_path),
                None,
                None,
                "",
                f"expected the model file {filename}, found none",
                hint=f"backend {spec.name} loads {filename}",
            )
        )
        return
    if spec.describe is None:
        return
    try:
        signature = spec.describe(model_path)
    except Exception as exc:
        report.issues.append(
            ConfigIssue(
                str(model_path),
                None,
                None,
                "",
                f"{spec.name} cannot read it: {type(exc).__name__}: {exc}",
            )
        )
        return
    for problem in compare_signature(config, signature):
        report.issues.append(
            ConfigIssue(str(config.source or version_path), None, None, problem[0], problem[1])
        )


def _issues(error: RepomanError, where: str) -> list[ConfigIssue]:
    if isinstance(error, ConfigError):
        return list(error.issues)
    return [ConfigIssue(where, None, None, "", str(error))]
