"""Merging requests into one batch tensor and splitting batch outputs back, per request."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import overload

import numpy as np


def merge_rows(
    requests: Sequence[Mapping[str, np.ndarray]], names: Sequence[str], pad_to: int = 0
) -> dict[str, np.ndarray]:
    """Concatenate each named input along the batch axis (axis 0).

    ``pad_to`` (a row count larger than the total) appends copies of the last row, so a
    backend sees only the batch sizes it was tuned for; ``Batch.split`` never returns them.
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


def offsets_of(counts: Sequence[int]) -> list[int]:
    """Where each of end-to-end parts of ``counts[i]`` rows starts, and where the last ends."""
    offsets = [0]
    at = 0
    for count in counts:
        at += count
        offsets.append(at)
    return offsets


def end_to_end(cuts: Sequence[Sequence[int]]) -> list[int]:
    """The offsets of several cut arrays' parts once their cut rows are put end to end (each
    one's rows from its first offset to its last, in order)."""
    offsets = [0]
    at = 0
    for cut in cuts:
        base = cut[0]
        offsets += [at + end - base for end in cut[1:]]
        at = offsets[-1]
    return offsets


class Rows(Sequence[Mapping[str, np.ndarray]]):
    """Requests' tensors held end to end: ``whole[name]`` is every request's ``name`` along
    the batch axis, request ``i`` owning rows ``offsets[i]`` to ``offsets[i + 1]``.

    A sequence of per-request mappings like any other (each made when first read, of views:
    no copy), which lets whoever knows the layout skip the per-request work: a batch of one
    group merges by taking ``whole`` as it is (``Batch.merged``), a backend's outputs split
    by ``Batch.split`` come back this way, and an ensemble hands one member's outputs to the
    next as they are. Read only: a request's mapping is the same object at every read.
    """

    __slots__ = ("_items", "offsets", "whole")

    def __init__(self, whole: Mapping[str, np.ndarray], offsets: Sequence[int]) -> None:
        self.whole = whole
        self.offsets = offsets
        self._items: list[Mapping[str, np.ndarray] | None] | None = None

    @classmethod
    def of(cls, whole: Mapping[str, np.ndarray], rows: Sequence[int]) -> Rows:
        """``whole`` cut into requests of ``rows[i]`` rows each (``whole`` may hold more rows
        than their sum: padding, never read)."""
        return cls(whole, offsets_of(rows))

    @property
    def rows(self) -> list[int]:
        offsets = self.offsets
        return [offsets[i + 1] - offsets[i] for i in range(len(offsets) - 1)]

    @property
    def total(self) -> int:
        """Rows of all its requests together."""
        return self.offsets[-1] - self.offsets[0]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, index: int) -> Mapping[str, np.ndarray]: ...

    @overload
    def __getitem__(self, index: slice) -> Rows: ...

    def __getitem__(self, index: int | slice) -> Mapping[str, np.ndarray] | Rows:
        count = len(self.offsets) - 1
        if isinstance(index, slice):
            start, stop, step = index.indices(count)
            if step != 1:
                raise ValueError("Rows slices take every request (step 1)")
            return self.part(start, max(start, stop))
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("request index out of range")
        items = self._items
        if items is None:
            items = self._items = [None] * count
        item = items[index]
        if item is None:
            start, end = self.offsets[index], self.offsets[index + 1]
            item = items[index] = {name: array[start:end] for name, array in self.whole.items()}
        return item

    def __iter__(self) -> Iterator[Mapping[str, np.ndarray]]:
        for index in range(len(self.offsets) - 1):
            yield self[index]

    def arrays(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Each tensor (of ``names``, default all) cut to its requests' rows, padding or
        rows past them left out: the arrays themselves where nothing is cut, else views."""
        whole, first, last = self.whole, self.offsets[0], self.offsets[-1]
        out = {}
        for name in whole if names is None else names:
            array = whole[name]
            out[name] = array if first == 0 and len(array) == last else array[first:last]
        return out

    def part(self, start: int, end: int) -> Rows:
        """Requests ``start`` to ``end`` (this object itself when that is all of them)."""
        offsets = self.offsets
        if start == 0 and end == len(offsets) - 1:
            return self
        first, last = offsets[start], offsets[end]
        whole = {name: array[first:last] for name, array in self.whole.items()}
        return Rows(whole, [at - first for at in offsets[start : end + 1]])

    @staticmethod
    def join(parts: Sequence[Rows]) -> Rows | None:
        """Several ``Rows`` as one, their requests in order (one concatenation per tensor);
        None when they differ in their tensors' names, data types or shapes past the batch
        axis."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0].whole
        names = first.keys()
        for part in parts[1:]:
            whole = part.whole
            if whole.keys() != names:
                return None
            for name, array in whole.items():
                head = first[name]
                if array.dtype != head.dtype or array.shape[1:] != head.shape[1:]:
                    return None
        offsets = end_to_end([part.offsets for part in parts])
        whole = {
            name: np.concatenate(
                [part.whole[name][part.offsets[0] : part.offsets[-1]] for part in parts]
            )
            for name in names
        }
        return Rows(whole, offsets)
