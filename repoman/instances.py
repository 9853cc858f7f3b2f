"""Building, loading (with warm-up) and unloading the backend instances of one model version."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from repoman.backends import Backend, BackendContext, Batch
from repoman.config.deployment import MAX_WARMUP_BYTES, warmup_bytes
from repoman.config.model import ModelConfig
from repoman.errors import RepomanError
from repoman.memory import release_freed_memory, resident_bytes
from repoman.names import path_inside
from repoman.types import DataType

log = logging.getLogger(__name__)


def instance_contexts(
    config: ModelConfig, version: int, path: Path, filename: str
) -> list[BackendContext]:
    """One context per instance the config's ``instance_group`` asks for (at least one).

    Raises RepomanError when ``filename`` leads out of the version folder ``path``.
    """
    model_path = path_inside(path, filename, "default_model_filename") if filename else path
    contexts = []
    for group in config.instance_groups:
        for index in range(group.count):
            device = group.gpus[index % len(group.gpus)] if group.gpus else None
            contexts.append(
                BackendContext(
                    config=config,
                    version=version,
                    version_path=path,
                    model_path=model_path,
                    instance_name=f"{group.name}_{index}",
                    instance_kind=group.kind,
                    device_id=device,
                )
            )
    return contexts or [BackendContext(config, version, path, model_path)]


def load_instances(instances: list[Backend]) -> None:
    """Load and warm up every instance; on any failure unload those loaded and raise.

    Runs on a loader thread, never on the event loop.
    """
    loaded: list[Backend] = []
    try:
        for instance in instances:
            instance.load()
            loaded.append(instance)
            warm_up(instance)
    except BaseException:
        unload_instances(loaded)
        raise


def load_measured(instances: list[Backend]) -> int:
    """:func:`load_instances`, returning the memory the load took: what the process's resident
    set grew by, plus what instances hold elsewhere (``Backend.memory_bytes``). Exact when no
    other load runs meanwhile (the manager runs them one at a time under a memory budget)."""
    before = resident_bytes()
    load_instances(instances)
    grown = max(resident_bytes() - before, 0)
    outside = 0
    for instance in instances:
        try:
            outside += instance.memory_bytes() or 0
        except Exception as exc:  # a figure is a nicety: the load itself succeeded
            log.warning("%s: memory_bytes() failed: %s", instance.context.instance_name, exc)
    return grown + outside


def unload_released(instances: list[Backend]) -> None:
    """:func:`unload_instances`, then the freed heap pages go back to the system, so what the
    next load adds to the resident set is its own."""
    unload_instances(instances)
    release_freed_memory()


def unload_instances(instances: list[Backend]) -> None:
    for instance in instances:
        try:
            instance.unload()
        except Exception as exc:
            log.warning("unloading %s failed: %s", instance.context.instance_name, exc)


def warm_up(instance: Backend) -> None:
    """Run the config's ``model_warmup`` samples; a failing sample fails the load."""
    config = instance.context.config
    for sample in config.model_warmup:
        name = sample.get("name", "warmup")
        rows = int(sample.get("batch_size", 1) or 1)
        specs = sample.get("inputs") or {}
        _check_sample(config, name, rows, specs)
        model_dir = instance.context.version_path.parent
        inputs = {
            input_name: _warmup_tensor(spec, rows if config.max_batch_size > 0 else 0, model_dir)
            for input_name, spec in specs.items()
        }
        batch = Batch(
            requests=[inputs],
            output_names=config.output_names,
            input_names=tuple(inputs),
            batching=config.max_batch_size > 0,
        )
        results = instance.execute(batch)
        if len(results) != 1 or isinstance(results[0], Exception):
            problem = results[0] if results else "no result"
            raise RepomanError(f"warm-up sample '{name}' failed: {problem}")


def _check_sample(
    config: ModelConfig, name: str, rows: int, specs: dict[str, dict[str, Any]]
) -> None:
    """Config validation refuses both already: checked again before anything is allocated."""
    limit = max(config.max_batch_size, 1)
    if not 1 <= rows <= limit:
        raise RepomanError(
            f"warm-up sample '{name}': expected a batch_size from 1 to {limit}, found {rows}"
        )
    batch_rows = rows if config.max_batch_size > 0 else 1
    size = sum(warmup_bytes(spec, batch_rows) for spec in specs.values())
    if size > MAX_WARMUP_BYTES:
        raise RepomanError(
            f"warm-up sample '{name}': expected at most {MAX_WARMUP_BYTES} bytes "
            f"({MAX_WARMUP_BYTES >> 20} MiB), found {size}"
        )


def _warmup_tensor(spec: dict[str, Any], rows: int, model_dir: Path) -> np.ndarray:
    """A warm-up input: zeros, random values, or (Triton's ``input_data_file``) the raw
    little-endian contents of ``<model>/warmup/<file>``, repeated for every batch row."""
    data_type = DataType.from_config_name(spec["data_type"])
    dims = tuple(int(d) for d in spec.get("dims", ()))
    shape = ((rows,) if rows else ()) + dims
    if data_type is DataType.BYTES:
        return np.full(shape, b"", dtype=object)
    if spec.get("input_data_file"):
        # NOTE: the warm-up folder may be a symlink too: it must stay in the model folder.
        warmup_dir = path_inside(model_dir, "warmup", "the warm-up folder")
        path = path_inside(warmup_dir, spec["input_data_file"], "warm-up input_data_file")
        expected = warmup_bytes(spec, 1)
        found = path.stat().st_size
        if found != expected:
            raise RepomanError(
                f"warm-up input_data_file '{spec['input_data_file']}': expected {expected} bytes "
                f"({' x '.join(map(str, dims))} x {spec['data_type']}), found {found}"
            )
        raw = path.read_bytes()
        one = np.frombuffer(raw, dtype=data_type.numpy_dtype.newbyteorder("<")).reshape(dims)
        return np.broadcast_to(one, shape).astype(data_type.numpy_dtype)
    if spec.get("random_data"):
        rng = np.random.default_rng(0)
        return rng.random(shape).astype(data_type.numpy_dtype)
    return np.zeros(shape, dtype=data_type.numpy_dtype)
