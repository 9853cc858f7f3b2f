"""The small sub-commands: ``validate``, ``config`` and ``plugins``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from repoman.cli.validate import validate_repository
from repoman.config import config_to_pbtxt, config_to_yaml
from repoman.errors import RepomanError
from repoman.plugins import build_backend_registry, make_plugin_manager, plugins_dir_for
from repoman.source.resolve import Resolver
from repoman.source.scan import ScanOptions, read_model


def validate(args: argparse.Namespace) -> int:
    pm, report = make_plugin_manager(plugins_dir=plugins_dir_for(args.plugins_dir, args.repository))
    registry = build_backend_registry(pm, report)
    found = validate_repository(
        args.repository,
        registry,
        default_platform=args.default_platform,
        auto_complete=not args.disable_auto_complete_config,
        model_name=args.model_name,
    )
    for issue in found.issues:
        print(issue)
    print(found.summary())
    return 1 if found.errors else 0


def config(args: argparse.Namespace) -> int:
    pm, report = make_plugin_manager(plugins_dir=args.plugins_dir)
    registry = build_backend_registry(pm, report)
    model_dir: Path = args.model_dir
    if not model_dir.is_dir():
        raise RepomanError(f"{model_dir} is not a model folder")
    folder = read_model(model_dir, ScanOptions(), now=time.time())
    resolved = Resolver(registry).resolve(folder)
    if resolved.error is not None or resolved.config is None:
        raise resolved.error or RepomanError(f"{model_dir}: no config")
    config = resolved.config
    render = config_to_yaml if args.format == "yaml" else config_to_pbtxt
    print(render(config.as_dict()), end="")
    for warning in config.warnings:
        print(f"repoman: warning: {warning}", file=sys.stderr)
    return 0


def plugins(args: argparse.Namespace) -> int:
    pm, report = make_plugin_manager(plugins_dir=args.plugins_dir, blocked=args.block_plugin)
    registry = build_backend_registry(pm, report)
    print("plugins:")
    for name in report.loaded:
        print(f"  {name}")
    for name in report.blocked:
        print(f"  {name} (blocked)")
    for name, reason in report.failed.items():
        print(f"  {name} (FAILED: {reason})")
    print("backends:")
    for spec in registry.specs():
        platforms = ", ".join(spec.platforms) or "-"
        print(f"  {spec.name:<16} platforms: {platforms:<28} plugin: {spec.plugin}")
    return 1 if report.failed else 0
