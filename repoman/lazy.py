"""``module:attribute`` references imported on first call, so a plugin names heavy code cheaply."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from repoman.errors import PluginError

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_REFERENCE = re.compile(rf"({_DOTTED}):({_DOTTED})")


class LazyReference:
    """A callable that stands for ``module:attribute`` and imports it only when first called.

    ``LazyReference("pkg.backend:Backend")(context)`` imports ``pkg.backend`` (once), then calls
    ``pkg.backend.Backend(context)``. The attribute may be dotted (``module:Class.method``),
    as in an entry point. A malformed reference fails at once; one that cannot be imported
    fails at its first call, with a ``PluginError`` naming the reference, and is tried again
    at the next one. ``install_hint`` (say ``pip install 'repoman[tensorflow]'``) is what the
    error tells a user to run when the module is there but a package it imports is not.
    """

    def __init__(self, reference: str, install_hint: str = "") -> None:
        match = _REFERENCE.fullmatch(reference)
        if match is None:
            raise PluginError(
                f"expected a reference like 'package.module:name', found {reference!r}"
            )
        self.reference = reference
        self.install_hint = install_hint
        self._module, self._attribute = match.groups()
        self._target: Callable[..., Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def resolve(self) -> Callable[..., Any]:
        """The object the reference names, imported on the first call and kept."""
        # NOTE: two threads may both resolve on the first call; the import system serialises
        # the import itself and both find the same object, so no lock is needed.
        if self._target is None:
            try:
                target: Any = importlib.import_module(self._module)
                for name in self._attribute.split("."):
                    target = getattr(target, name)
            except ImportError as exc:
                raise PluginError(self._import_failure(exc)) from exc
            except AttributeError as exc:
                raise PluginError(
                    f"{self.reference} cannot be imported: {type(exc).__name__}: {exc}"
                ) from exc
            if not callable(target):
                raise PluginError(f"{self.reference} is not callable: {target!r}")
            self._target = target
        return self._target

    def _import_failure(self, exc: ImportError) -> str:
        found = f"{self.reference} cannot be imported: {type(exc).__name__}: {exc}"
        missing = (exc.name or "").partition(".")[0]
        own = self._module.partition(".")[0]
        # NOTE: only a missing *dependency* gets the hint; a reference to a module that is not
        # there at all (a typo, an uninstalled plugin) is a different mistake.
        dependency = isinstance(exc, ModuleNotFoundError) and missing not in ("", own)
        if not self.install_hint or not dependency:
            return found
        return (
            f"this backend needs the package '{missing}', which is not installed; install it "
            f"with: {self.install_hint} ({found})"
        )

    def __repr__(self) -> str:
        return f"LazyReference({self.reference!r})"
