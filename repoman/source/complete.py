"""Auto-complete: what a config leaves out (or a missing config), filled from the model file."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from repoman.backends import BackendRegistry, BackendSpec
from repoman.errors import ConfigError, RepomanError
from repoman.names import path_inside
from repoman.signature import (
    ModelSignature,
    completion_error,
    merge,
    needs_completion,
    tensors_complete,
)

log = logging.getLogger("repoman.source.resolve")

Describe = Callable[[BackendSpec, Path, Mapping[str, str]], ModelSignature]
"""Reads a model file through a backend (cached by the caller); RepomanError if it cannot."""


def complete(
    doc: dict[str, Any],
    *,
    registry: BackendRegistry,
    describe: Describe,
    model_dir: Path,
    version_dir: Path | None,
) -> dict[str, Any]:
    """``doc`` completed from the model file in ``version_dir`` (a no-op when complete).

    The backend is the one the config names, else the one whose default model file is in
    the version folder. Where nothing can be read and the config's tensors are all there
    (or there are no model files at all), ``doc`` is returned as it is: the config's own
    checks then speak, with line numbers.
    """
    if not needs_completion(doc) or doc.get("platform") == "ensemble":
        return doc  # NOTE: an ensemble has no model file of its own to read
    where = str(model_dir)
    try:
        if version_dir is None:
            raise completion_error(where, "", "a version folder to read the model from", "none")
        spec = _backend_for(doc, registry, version_dir, where)
        model_path = _model_path(doc, spec, version_dir, where)
        if not model_path.exists():
            raise completion_error(where, "", f"the model file {model_path}", "nothing there")
        try:
            signature = describe(spec, model_path, parameters_of(doc))
        except RepomanError as exc:
            raise completion_error(
                where, "", f"a model file {spec.name} can read", str(exc)
            ) from None
    except ConfigError:
        if doc and (tensors_complete(doc) or not _has_model_files(version_dir)):
            return doc
        raise
    completed = merge(doc, signature, where)
    if not completed.get("backend") and not completed.get("platform"):
        completed["backend"] = spec.name
    log.info("model %s: config auto-completed from %s", model_dir.name, model_path)
    return completed


def _model_path(doc: dict[str, Any], spec: BackendSpec, version_dir: Path, where: str) -> Path:
    name = doc.get("default_model_filename") or spec.default_model_filename
    if not name:
        return version_dir
    try:
        return path_inside(version_dir, str(name), "default_model_filename")
    except RepomanError as exc:
        # NOTE: not a ConfigError: it must never be passed over like a missing model file.
        raise RepomanError(f"{where}: auto-complete cannot read the model: {exc}") from None


def _backend_for(
    doc: dict[str, Any], registry: BackendRegistry, version_dir: Path, where: str
) -> BackendSpec:
    specs = registry.specs()
    named = doc.get("backend") or doc.get("platform")
    for spec in specs:
        if doc.get("backend") == spec.name or (
            not doc.get("backend") and doc.get("platform") in spec.platforms
        ):
            if spec.describe is None:
                raise completion_error(
                    where,
                    "backend",
                    "a backend that can read its model files",
                    f"'{spec.name}', which cannot",
                )
            return spec
    if named:
        raise completion_error(where, "backend", "a registered backend", f"'{named}'")
    for spec in specs:
        if (
            spec.describe
            and spec.default_model_filename
            and (version_dir / spec.default_model_filename).exists()
        ):
            return spec
    looked = ", ".join(s.default_model_filename for s in specs if s.describe)
    raise completion_error(
        where, "", f"a model file a backend recognises ({looked})", f"none in {version_dir}"
    )


def parameters_of(doc: dict[str, Any]) -> dict[str, str]:
    """A config document's ``parameters`` as the strings a backend sees."""
    raw = doc.get("parameters") or {}
    if not isinstance(raw, dict):
        return {}
    return {
        str(k): str(v.get("string_value", "")) if isinstance(v, dict) else str(v)
        for k, v in raw.items()
    }


def _has_model_files(version_dir: Path | None) -> bool:
    return version_dir is not None and any(
        not p.name.startswith(".") for p in version_dir.iterdir()
    )
