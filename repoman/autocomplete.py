"""Auto-complete: fill what a config leaves out (or a missing config) from the model file."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from repoman.backends import BackendRegistry, BackendSpec, ModelSignature
from repoman.config import Completer
from repoman.config.model import TensorConfig
from repoman.errors import ConfigError, ConfigIssue

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 4
"""What a model that can batch gets when its config says nothing (Triton's default too)."""


class ConfigCompleter:
    """Completes configs from model files, with the backends' ``describe`` functions.

    Only what is missing is filled: ``input``/``output`` lists, a tensor's ``data_type`` or
    ``dims``, ``max_batch_size`` (plus ``dynamic_batching {}`` when it enables batching) and
    the backend. Where the config is explicit and the model disagrees, that is an error
    showing both values; it is never silently overridden. Descriptions are cached per model
    file and its modification time, so rescans do not reopen unchanged models.
    """

    def __init__(self, registry: BackendRegistry) -> None:
        self._registry = registry
        self._cache: dict[tuple[Path, int, int], ModelSignature] = {}

    def for_model(self, model_dir: Path, version_dir: Path | None = None) -> Completer:
        """A completer for ``model_dir``'s config, reading ``version_dir`` (default: the
        newest version folder)."""
        return lambda doc: self.complete(model_dir, doc, version_dir)

    def complete(
        self, model_dir: Path, doc: dict[str, Any], version_dir: Path | None = None
    ) -> dict[str, Any]:
        if not _incomplete(doc):
            return doc
        where = str(model_dir)
        version_dir = version_dir or _latest_version(model_dir)
        try:
            if version_dir is None:
                raise _error(where, "", "a version folder to read the model from", "none")
            spec = self._backend(doc, version_dir, where)
            filename = doc.get("default_model_filename") or spec.default_model_filename
            signature = self._describe(spec, version_dir / filename, where)
        except ConfigError:
            if doc and (_tensors_complete(doc) or not (version_dir and _has_model(version_dir))):
                # NOTE: nothing to complete from (or only max_batch_size, which then means 0,
                # as in Triton): let the config's own checks speak, with line numbers.
                return doc
            raise
        completed = copy.deepcopy(doc)
        if not completed.get("backend") and not completed.get("platform"):
            completed["backend"] = spec.name
        if "max_batch_size" not in completed:
            suggested = signature.max_batch_size or DEFAULT_MAX_BATCH_SIZE
            completed["max_batch_size"] = suggested if signature.batching else 0
            if signature.batching:
                completed.setdefault("dynamic_batching", {})
        elif completed["max_batch_size"] > 0 and not signature.batching:
            raise _error(
                where,
                "max_batch_size",
                "0 (the model has no variable batch dimension)",
                str(completed["max_batch_size"]),
            )
        strip = completed["max_batch_size"] > 0
        for key, tensors in (("input", signature.inputs), ("output", signature.outputs)):
            completed[key] = _merge(completed.get(key), tensors, key, strip, where)
        log.info("model %s: config auto-completed from %s", model_dir.name, version_dir / filename)
        return completed

    def _backend(self, doc: dict[str, Any], version_dir: Path, where: str) -> BackendSpec:
        specs = self._registry.specs()
        for spec in specs:
            if doc.get("backend") == spec.name or (
                not doc.get("backend") and doc.get("platform") in spec.platforms
            ):
                if spec.describe is None:
                    raise _error(
                        where,
                        "backend",
                        "a backend that can read its model files",
                        f"'{spec.name}', which cannot",
                    )
                return spec
        if doc.get("backend") or doc.get("platform"):
            named = doc.get("backend") or doc.get("platform")
            raise _error(where, "backend", "a registered backend", f"'{named}'")
        for spec in specs:
            if (
                spec.describe
                and spec.default_model_filename
                and (version_dir / spec.default_model_filename).exists()
            ):
                return spec
        looked = ", ".join(s.default_model_filename for s in specs if s.describe)
        raise _error(
            where, "", f"a model file a backend recognises ({looked})", f"none in {version_dir}"
        )

    def _describe(self, spec: BackendSpec, path: Path, where: str) -> ModelSignature:
        assert spec.describe is not None
        if not path.exists():
            raise _error(where, "", f"the model file {path}", "nothing there")
        key = (path, *_stamp(path))
        if key not in self._cache:
            try:
                self._cache[key] = spec.describe(path)
            except Exception as exc:
                raise _error(
                    where, "", f"a model file {spec.name} can read", f"{type(exc).__name__}: {exc}"
                ) from None
        return self._cache[key]


def _stamp(path: Path) -> tuple[int, int]:
    """Newest modification time and total size of a model file, or of every file in a model
    folder (a SavedModel's folder time does not change when a file inside is replaced)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    stats = [p.stat() for p in files]
    return max((s.st_mtime_ns for s in stats), default=0), sum(s.st_size for s in stats)


def _tensors_complete(doc: dict[str, Any]) -> bool:
    """Inputs and outputs are all there, each with a data_type and dims."""
    tensors = list(doc.get("input") or []) + list(doc.get("output") or [])
    return (
        bool(doc.get("input"))
        and bool(doc.get("output"))
        and all(isinstance(t, dict) and "data_type" in t and "dims" in t for t in tensors)
    )


def _has_model(version_dir: Path) -> bool:
    return any(not p.name.startswith(".") for p in version_dir.iterdir())


def _incomplete(doc: dict[str, Any]) -> bool:
    if "max_batch_size" not in doc or not doc.get("input") or not doc.get("output"):
        return True
    tensors = list(doc.get("input", [])) + list(doc.get("output", []))
    return any("data_type" not in t or "dims" not in t for t in tensors if isinstance(t, dict))


def _merge(
    given: list[dict[str, Any]] | None,
    tensors: tuple[TensorConfig, ...],
    key: str,
    strip: bool,
    where: str,
) -> list[dict[str, Any]]:
    model = {t.name: t for t in tensors}

    def dims_of(tensor: TensorConfig) -> list[int]:
        return list(tensor.dims[1:] if strip and tensor.dims else tensor.dims)

    if not given:
        return [
            {"name": t.name, "data_type": t.data_type.config_name, "dims": dims_of(t)}
            for t in tensors
        ]
    merged = []
    for index, entry in enumerate(given):
        entry = dict(entry)
        field = f"{key}[{index}]"
        found = model.get(entry.get("name", ""))
        if found is None:
            raise _error(
                where,
                f"{field}.name",
                f"one of the model's {key}s ({', '.join(sorted(model))})",
                repr(entry.get("name")),
            )
        model_type = found.data_type.config_name
        if entry.setdefault("data_type", model_type) != model_type:
            raise _error(
                where,
                f"{field}.data_type",
                f"{model_type} (what the model says)",
                f"{entry['data_type']} in the config",
            )
        model_dims = dims_of(found)
        dims = entry.setdefault("dims", model_dims)
        if len(dims) != len(model_dims) or any(
            a != b and a >= 0 and b >= 0 for a, b in zip(dims, model_dims, strict=True)
        ):
            raise _error(
                where,
                f"{field}.dims",
                f"{model_dims} (what the model says)",
                f"{dims} in the config",
            )
        merged.append(entry)
    return merged


def _latest_version(model_dir: Path) -> Path | None:
    numbers = (
        [
            int(p.name)
            for p in model_dir.iterdir()
            if p.is_dir() and p.name.isdigit() and not p.name.startswith("0")
        ]
        if model_dir.is_dir()
        else []
    )
    return model_dir / str(max(numbers)) if numbers else None


def _error(where: str, field: str, expected: str, found: str) -> ConfigError:
    return ConfigError(
        [ConfigIssue(where, None, None, field, f"auto-complete expected {expected}, found {found}")]
    )
