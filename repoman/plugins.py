"""The plugin manager factory: entry points, a plugins directory, blocking, and the registry."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pluggy

from repoman import hookspecs
from repoman.backends import BackendRegistry
from repoman.errors import PluginError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "repoman"


@dataclass
class PluginReport:
    """What plugin discovery found: loaded plugin names, and failures by plugin name."""

    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)


def plugins_dir_for(given: Path | None, repository: Path) -> Path | None:
    """The drop-in plugins folder: the one given, else ``plugins/`` beside the repository."""
    if given is None and (repository.parent / "plugins").is_dir():
        return repository.parent / "plugins"
    return given


def make_plugin_manager(
    *,
    entry_points: bool = True,
    plugins_dir: Path | None = None,
    blocked: Iterable[str] = (),
    extra: Iterable[object] = (),
) -> tuple[pluggy.PluginManager, PluginReport]:
    """Build a fresh plugin manager (there is no global one).

    Plugins come from the ``repoman`` entry-point group, from ``*.py`` files in
    ``plugins_dir``, and from ``extra`` objects (tests). A plugin that fails to import or
    to register is reported in the returned report and skipped: it never takes the
    server down. Names in ``blocked`` are not loaded at all.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    report = PluginReport()
    for name in blocked:
        pm.set_blocked(name)
        report.blocked.append(name)

    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            _register(pm, report, ep.name, ep.load)
    if plugins_dir is not None and plugins_dir.is_dir():
        for path in sorted(plugins_dir.glob("*.py")):
            name = path.stem
            if name.startswith(("_", ".")) or pm.is_blocked(name) or pm.has_plugin(name):
                continue
            _register(pm, report, name, lambda path=path: _import_file(path))
    for plugin in extra:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        _register(pm, report, name, lambda plugin=plugin: plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements an unknown hook: {exc}") from None
    return pm, report


def build_backend_registry(pm: pluggy.PluginManager, report: PluginReport) -> BackendRegistry:
    """Ask every plugin to register its backends; a plugin that fails is reported and skipped.

    Each plugin's backends are attributed to it: its hook receives ``registry.for_plugin(name)``.
    """
    registry = BackendRegistry()
    hook = "repoman_register_backends"
    impls = pm.hook.repoman_register_backends.get_hookimpls()
    for impl in impls:
        # NOTE: each plugin is called through its own subset caller (the hook minus every
        # other plugin), not through pm.hook once, so one plugin raising cannot keep the
        # others from registering.
        others = [other.plugin for other in impls if other.plugin is not impl.plugin]
        call_one = pm.subset_hook_caller(hook, remove_plugins=others)
        try:
            call_one(registry=registry.for_plugin(impl.plugin_name))
        except Exception as exc:
            report.failed[impl.plugin_name] = f"{hook} failed: {exc}"
            log.error("plugin %s: %s failed: %s", impl.plugin_name, hook, exc)
    return registry


def _register(pm: pluggy.PluginManager, report: PluginReport, name: str, load) -> None:
    try:
        plugin = load()
        pm.register(plugin, name=name)
    except Exception as exc:
        report.failed[name] = f"{type(exc).__name__}: {exc}"
        log.error("plugin %s could not be loaded: %s: %s", name, type(exc).__name__, exc)
        return
    report.loaded.append(name)


def _import_file(path: Path) -> ModuleType:
    module_name = f"repoman_dropin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
