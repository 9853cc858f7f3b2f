"""An ensemble cohort's tensors between steps: each a :class:`Column`, the requests' own
arrays or one array holding all of theirs end to end, as a member's batch gave it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from repoman.config.model import ModelConfig
from repoman.tensors import end_to_end, offsets_of


class Column:
    """One tensor of a cohort's requests: each request's own array (``parts``), or one array
    holding all of theirs end to end (``whole``, request ``i`` owning rows ``offsets[i]`` to
    ``offsets[i + 1]``), as a member's batch gave it. Held whole, it goes to the next member
    as it is: no request-by-request work between steps, no copy. Event loop only."""

    __slots__ = ("offsets", "parts", "whole")

    def __init__(
        self,
        parts: list[Any] | None = None,
        whole: np.ndarray | None = None,
        offsets: Sequence[int] | None = None,
    ) -> None:
        self.parts = parts
        self.whole = whole
        self.offsets = offsets

    @classmethod
    def gathered(cls, parts: list[Any], batching: bool) -> Column:
        """A column of the requests' own arrays: whole (one concatenation) when they batch
        and agree in data type and shape past the batch axis, so that every step takes them
        whole; else as they are."""
        head = parts[0]
        if batching and head.ndim:
            if len(parts) == 1:
                return cls(whole=head, offsets=[0, len(head)])
            dtype, tail = head.dtype, head.shape[1:]
            if all(p.dtype == dtype and p.shape[1:] == tail for p in parts):
                offsets = offsets_of([len(part) for part in parts])
                return cls(whole=np.concatenate(parts), offsets=offsets)
        return cls(parts)

    def __getitem__(self, pos: int) -> Any:
        if self.parts is not None:
            return self.parts[pos]
        assert self.whole is not None and self.offsets is not None
        return self.whole[self.offsets[pos] : self.offsets[pos + 1]]

    def __setitem__(self, pos: int, value: Any) -> None:
        self.split()[pos] = value

    def split(self) -> list[Any]:
        """Its requests' arrays, one each (views), from now on held so."""
        if self.parts is None:
            assert self.whole is not None and self.offsets is not None
            whole, offsets = self.whole, self.offsets
            self.parts = [whole[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
            self.whole = self.offsets = None
        return self.parts

    def joined(self, other: Column) -> Column | None:
        """This column's requests, then ``other``'s, as one whole column (None unless both
        are whole, alike in data type and shape past the batch axis)."""
        mine, theirs = self.whole, other.whole
        if mine is None or theirs is None or self.offsets is None or other.offsets is None:
            return None
        if mine.dtype != theirs.dtype or mine.shape[1:] != theirs.shape[1:]:
            return None
        a, b = self.offsets, other.offsets
        whole = np.concatenate([mine[a[0] : a[-1]], theirs[b[0] : b[-1]]])
        return Column(whole=whole, offsets=end_to_end([a, b]))


def whole_inputs(
    config: ModelConfig, columns: list[tuple[str, Column]]
) -> tuple[dict[str, np.ndarray], Sequence[int]] | None:
    """A step's inputs as whole arrays and where each request's rows start, when the member
    batches and every column is whole, cut alike (one batch's outputs); else None (taken
    request by request)."""
    if config.max_batch_size <= 0:
        return None
    offsets = columns[0][1].offsets
    if offsets is None:
        return None
    whole: dict[str, np.ndarray] = {}
    for key, column in columns:
        cut = column.offsets
        if column.whole is None or cut is None or (cut is not offsets and cut != offsets):
            return None
        whole[key] = column.whole
    return whole, offsets
