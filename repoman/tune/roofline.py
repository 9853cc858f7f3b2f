"""The raw backend's curve: one model instance in this process, timed per batch size."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from repoman.backends import Backend, BackendRegistry, Batch
from repoman.config.model import ModelConfig, TensorConfig
from repoman.errors import RepomanError
from repoman.instances import instance_contexts, load_instances, unload_instances
from repoman.tune.space import RooflinePoint
from repoman.types import DataType

MIN_REPEATS = 3


@dataclasses.dataclass(frozen=True)
class RawModel:
    """The version being tuned, as the repository has it."""

    name: str
    version: int
    path: Path
    config: ModelConfig


def synthetic_inputs(
    config: ModelConfig, rows: int, shapes: Mapping[str, Sequence[int]]
) -> dict[str, np.ndarray]:
    """Inputs for ``rows`` batch rows: random floats in [0, 1), zeros for integers and booleans,
    empty strings for BYTES; a variable dimension is 1 unless ``shapes`` names it."""
    rng = np.random.default_rng(0)
    return {
        tensor.name: _tensor(tensor, rows if config.max_batch_size > 0 else 0, shapes, rng)
        for tensor in config.inputs
        if not tensor.optional
    }


def _tensor(
    tensor: TensorConfig, rows: int, shapes: Mapping[str, Sequence[int]], rng: np.random.Generator
) -> np.ndarray:
    given = shapes.get(tensor.name)
    dims = tuple(given) if given is not None else tuple(d if d >= 0 else 1 for d in tensor.dims)
    shape = ((rows,) if rows else ()) + dims
    dtype = tensor.data_type
    if dtype is DataType.BYTES:
        return np.full(shape, b"", dtype=object)
    if np.issubdtype(dtype.numpy_dtype, np.floating):
        return rng.random(shape).astype(dtype.numpy_dtype)
    return np.zeros(shape, dtype=dtype.numpy_dtype)


def measure_roofline(
    model: RawModel,
    registry: BackendRegistry,
    sizes: Sequence[int],
    seconds: float,
    *,
    shapes: Mapping[str, Sequence[int]] | None = None,
    on_point: Callable[[RooflinePoint], None] | None = None,
) -> list[RooflinePoint]:
    """Time one instance of ``model`` at each batch size, ``seconds`` in all (split evenly).

    Each size runs at least MIN_REPEATS times after one unmeasured run; the median counts and
    the spread is the 10th-90th percentile range over the median.
    Stops early past the size where throughput stopped growing twice in a row (the curve is
    flat there). Raises RepomanError when the model cannot be loaded or run.
    """
    config = dataclasses.replace(model.config, instance_groups=())
    spec = registry.resolve(config)
    filename = config.default_model_filename or spec.default_model_filename
    context = instance_contexts(config, model.version, model.path, filename)[0]
    instance = spec.factory(context)
    load_instances([instance])
    try:
        points: list[RooflinePoint] = []
        flat = 0
        per_size = seconds / max(len(sizes), 1)
        for size in sizes:
            point = _time_batches(instance, config, size, per_size, shapes or {})
            points.append(point)
            if on_point is not None:
                on_point(point)
            if len(points) > 1 and point.throughput < 1.05 * points[-2].throughput:
                flat += 1
                if flat == 2:
                    break
            else:
                flat = 0
        return points
    finally:
        unload_instances([instance])


def _time_batches(
    instance: Backend,
    config: ModelConfig,
    size: int,
    seconds: float,
    shapes: Mapping[str, Sequence[int]],
) -> RooflinePoint:
    batching = config.max_batch_size > 0
    inputs = synthetic_inputs(config, size, shapes)
    outputs = config.output_names

    def run() -> float:
        batch = Batch([inputs], outputs, tuple(inputs), batching, row_counts=[size])
        started = time.perf_counter()
        results = instance.execute(batch)
        took = time.perf_counter() - started
        if len(results) != 1 or isinstance(results[0], Exception):
            problem = results[0] if results else "no result"
            raise RepomanError(f"the raw backend failed on a batch of {size}: {problem}")
        return took

    run()  # unmeasured: first-run allocations and lazy initialisation
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < MIN_REPEATS or time.perf_counter() < deadline:
        times.append(run())
    median = statistics.median(times)
    low, high = np.percentile(times, [10, 90])
    return RooflinePoint(size, median, float(high - low) / median if median else 0.0)
