"""Model configuration: config.pbtxt or config.yaml in, one validated ModelConfig out."""

from __future__ import annotations

import copy
import os
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from repoman.config import defaults, normalise, pbtxt, schema, support, triton_rules, yaml_source
from repoman.config.build import build
from repoman.config.filled import filled_paths
from repoman.config.model import (
    DynamicBatching,
    InstanceGroup,
    ModelConfig,
    QueuePolicy,
    TensorConfig,
    VersionPolicy,
)
from repoman.config.serialise import config_to_pbtxt, config_to_yaml
from repoman.errors import ConfigError, ConfigIssue

__all__ = [
    "CONFIG_FORMATS",
    "MAX_CONFIG_BYTES",
    "Completer",
    "DynamicBatching",
    "InstanceGroup",
    "ModelConfig",
    "QueuePolicy",
    "TensorConfig",
    "VersionPolicy",
    "config_to_pbtxt",
    "config_to_yaml",
    "config_too_large",
    "find_config_file",
    "load_model_config",
    "parse_model_config",
    "read_config_text",
]

CONFIG_FORMATS = {"config.pbtxt": "pbtxt", "config.yaml": "yaml", "config.yml": "yaml"}
MAX_CONFIG_BYTES = 1 << 20
"""The largest config repoman reads by default (a file, or a load request's override): 1 MiB.
Real configs are a few KiB; the limit keeps a huge one from stalling every rescan."""


def find_config_file(model_dir: Path) -> Path | None:
    """The model folder's config file, or None. Raises ConfigError when there are several."""
    found = [model_dir / name for name in CONFIG_FORMATS if (model_dir / name).is_file()]
    if len(found) > 1:
        names = " and ".join(path.name for path in found)
        raise ConfigError(
            [
                ConfigIssue(
                    file=str(model_dir),
                    line=None,
                    column=None,
                    field="",
                    message=f"expected one config file, found {names}",
                    hint="keep one of them",
                )
            ]
        )
    return found[0] if found else None


Completer = Callable[[dict[str, Any]], dict[str, Any]]
"""Fills what a config leaves out from the model file itself (auto-complete); may raise
ConfigError for a conflict between the two."""


def load_model_config(
    model_dir: Path,
    *,
    default_platform: str | None = None,
    model_name: str | None = None,
    complete: Completer | None = None,
) -> ModelConfig:
    """Read, validate and normalise the config in ``model_dir``; its folder name is the model's.

    Raises ConfigError (never anything else) for a missing, unreadable or invalid config.
    """
    path = find_config_file(model_dir)
    if path is None and complete is not None:
        # NOTE: no config at all: everything comes from the model file.
        return parse_model_config(
            "{}",
            filename=str(model_dir / "(auto-completed config)"),
            fmt="yaml",
            model_name=model_name or model_dir.name,
            default_platform=default_platform,
            complete=complete,
        )
    if path is None:
        names = ", ".join(CONFIG_FORMATS)
        raise ConfigError(
            [ConfigIssue(str(model_dir), None, None, "", f"expected one of {names}, found none")]
        )
    config = parse_model_config(
        read_config_text(path),
        filename=str(path),
        fmt=CONFIG_FORMATS[path.name],
        model_name=model_name or model_dir.name,
        default_platform=default_platform,
        complete=complete,
    )
    return replace(config, source=path)


def read_config_text(path: Path, *, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The text of the config file at ``path`` (newlines as text mode reads them).

    Raises ConfigError when it is not a readable regular file, is not UTF-8, or holds more
    than ``max_bytes``: then at most ``max_bytes + 1`` bytes are read, never the rest.
    """
    try:
        # NOTE: O_NONBLOCK: a FIFO put in the config's place must not block the scan.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(f"{path} is not a regular file")
            data = b"" if info.st_size > max_bytes else handle.read(max_bytes + 1)
    except OSError as error:
        raise _file_error(path, f"expected a readable UTF-8 file: {error}") from None
    if info.st_size > max_bytes or len(data) > max_bytes:
        size = info.st_size if info.st_size > max_bytes else None  # /proc files say 0
        raise config_too_large(str(path), size, max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _file_error(path, f"expected a readable UTF-8 file: {error}") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def config_too_large(filename: str, size: int | None, max_bytes: int) -> ConfigError:
    """The error for a config of ``size`` bytes (None: unknown) over ``max_bytes``."""
    limit = f"{max_bytes} bytes"
    if max_bytes % (1 << 20) == 0:
        limit += f" ({max_bytes >> 20} MiB)"
    elif max_bytes % 1024 == 0:
        limit += f" ({max_bytes >> 10} KiB)"
    found = f"{size} bytes" if size is not None else f"more than {max_bytes} bytes"
    message = f"expected a config file of at most {limit}, found {found}"
    return ConfigError([ConfigIssue(filename, None, None, "", message, "see --max-config-size")])


def _file_error(path: Path, message: str) -> ConfigError:
    return ConfigError([ConfigIssue(str(path), None, None, "", message)])


def parse_model_config(
    text: str,
    *,
    filename: str,
    fmt: str,
    model_name: str | None = None,
    default_platform: str | None = None,
    complete: Completer | None = None,
) -> ModelConfig:
    """Parse config ``text`` in ``fmt`` ("pbtxt", "yaml" or "json") into a validated ModelConfig.

    ``model_name`` is the model folder's name: it fills a missing ``name`` and must match a
    given one. Stages run in order and stop at the first that finds issues, reporting all of
    that stage's issues: syntax, structure and unsupported fields, schema, then semantics.
    Raises ValueError for an unknown ``fmt`` (a caller's mistake, not the config's).
    ``complete`` (auto-complete) may fill fields from the model file before the schema and
    semantic checks; fields it adds have no line/column.
    """
    if fmt == "pbtxt":
        tree = pbtxt.parse(text, filename=filename)
    elif fmt == "yaml":
        tree = yaml_source.parse(text, filename=filename)
    elif fmt == "json":
        tree = yaml_source.parse_json(text, filename=filename)
    else:
        raise ValueError(f"unknown config format {fmt!r}; expected 'pbtxt', 'yaml' or 'json'")
    # NOTE: a JSON config is read by the YAML reader, and normalised as YAML (plus
    # protobuf's JSON mapping of numbers written as strings).
    doc, positions, issues = normalise.normalise(tree, fmt=fmt, filename=filename)
    refused, warnings = support.check(doc, positions, filename)
    # NOTE: refused fields come first: checking the rest of a sequence-batching or ensemble
    # config would only report the consequences of a feature repoman does not have.
    _raise_if(refused + issues)
    filled: tuple[str, ...] = ()
    if complete is not None:
        before = copy.deepcopy(doc)
        doc = complete(doc)
        filled = filled_paths(before, doc)
    _raise_if(schema.validate(doc, positions, filename))
    issues = defaults.apply(
        doc, positions, filename, model_name=model_name, default_platform=default_platform
    )
    gpu_count = triton_rules.visible_gpu_count()
    _raise_if(issues + triton_rules.check(doc, positions, filename, gpu_count=gpu_count))
    return build(
        schema.canonical(doc), source=None, warnings=tuple(warnings), auto_completed=filled
    )


MAX_ISSUES = 100
"""Issues one config error reports; more would only bury the first ones."""


def _raise_if(issues: list[ConfigIssue]) -> None:
    if len(issues) > MAX_ISSUES:
        more = f"more issues not shown: only the first {MAX_ISSUES} are reported"
        issues = [*issues[:MAX_ISSUES], ConfigIssue(issues[0].file, None, None, "", more)]
    if issues:
        raise ConfigError(issues)
