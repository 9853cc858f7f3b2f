"""Merging requests into one batch tensor and splitting batch outputs back, per request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def merge_rows(
    requests: Sequence[Mapping[str, np.ndarray]], names: Sequence[str], pad_to: int = 0
) -> dict[str, np.ndarray]:
    """Concatenate each named input along the batch axis (axis 0).

    ``pad_to`` (a row count larger than the total) appends copies of the last row, so a
    backend sees only the batch sizes it was tuned for; ``split_rows`` never returns them.
    All requests must carry every name with the same non-batch shape; the scheduler
    guarantees that before calling.
    """
    merged: dict[str, np.ndarray] = {}
    for name in names:
        parts = [request[name] for request in requests]
        tensor = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        extra = pad_to - tensor.shape[0]
        if extra > 0:
            filler = np.repeat(tensor[-1:], extra, axis=0)
            tensor = np.concatenate([tensor, filler], axis=0)
        merged[name] = tensor
    return merged


def split_rows(
    outputs: Mapping[str, np.ndarray], rows: Sequence[int]
) -> list[dict[str, np.ndarray]]:
    """Cut every batch output into one slice per request, ``rows[i]`` rows each, padding dropped."""
    results: list[dict[str, np.ndarray]] = [{} for _ in rows]
    for name, tensor in outputs.items():
        start = 0
        for index, count in enumerate(rows):
            results[index][name] = tensor[start : start + count]
            start += count
    return results


def batch_rows(inputs: Mapping[str, np.ndarray]) -> int:
    """The number of batch rows a request carries (the first dimension of its inputs)."""
    for tensor in inputs.values():
        return int(tensor.shape[0]) if tensor.ndim else 1
    return 0


def shape_signature(inputs: Mapping[str, np.ndarray]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """What must agree for two requests to share a batch: each input's non-batch shape."""
    if len(inputs) == 1:  # the common case, without the sort
        ((name, tensor),) = inputs.items()
        return ((name, tensor.shape[1:]),)
    return tuple(sorted((name, tensor.shape[1:]) for name, tensor in inputs.items()))
