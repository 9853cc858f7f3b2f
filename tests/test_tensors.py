"""Requests' tensors merged into a batch and split back (repoman/tensors.py, Batch)."""

from __future__ import annotations

import numpy as np
import pytest

from repoman.backends import Batch
from repoman.tensors import Rows, end_to_end, merge_rows, offsets_of


def whole(rows: int, start: float = 0) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + rows * 2, dtype=np.float32).reshape(rows, 2)}


def test_rows_cut_whole_arrays_into_each_request_s_rows() -> None:
    rows = Rows.of(whole(6), [1, 3, 2])
    assert (len(rows), rows.rows, rows.total, list(rows.offsets)) == (3, [1, 3, 2], 6, [0, 1, 4, 6])
    assert [r["x"][:, 0].tolist() for r in rows] == [[0], [2, 4, 6], [8, 10]]
    assert rows[-1] is rows[2]  # NOTE: made once, the same mapping at every read
    assert np.shares_memory(rows[1]["x"], rows.whole["x"])
    with pytest.raises(IndexError):
        rows[3]


def test_rows_never_give_the_padding_past_their_requests() -> None:
    rows = Rows.of(whole(8), [1, 2])
    assert rows.total == 3 and [len(r["x"]) for r in rows] == [1, 2]


def test_a_slice_of_rows_is_rows_of_those_requests() -> None:
    rows = Rows.of(whole(6), [1, 3, 2])
    assert rows[0:3] is rows
    part = rows[1:3]
    assert isinstance(part, Rows) and part.rows == [3, 2] and list(part.offsets) == [0, 3, 5]
    assert part[0]["x"][:, 0].tolist() == [2, 4, 6]
    with pytest.raises(ValueError):
        rows[::2]


def test_rows_join_end_to_end_and_refuse_what_differs() -> None:
    first, second = Rows.of(whole(3), [1, 2]), Rows.of(whole(2, 100), [2])
    joined = Rows.join([first, second[0:1]])
    assert joined is not None and joined.rows == [1, 2, 2]
    assert joined[2]["x"][:, 0].tolist() == [100, 102]
    other = Rows.of({"x": np.zeros((1, 3), np.float32)}, [1])
    assert Rows.join([first, other]) is None
    assert Rows.join([first, Rows.of({"y": np.zeros((1, 2), np.float32)}, [1])]) is None


def test_a_batch_of_rows_merges_by_taking_them_as_they_are() -> None:
    rows = Rows.of(whole(3), [1, 2])
    batch = Batch(rows, ("y",), ("x",), row_counts=rows.rows)
    assert batch.merged()["x"] is rows.whole["x"]
    trimmed = Batch(Rows.of(whole(5), [1, 2]), ("y",), ("x",), row_counts=[1, 2])
    assert trimmed.merged()["x"].shape == (3, 2)
    padded = Batch(rows, ("y",), ("x",), pad_to=4, row_counts=rows.rows)
    assert padded.merged()["x"][:, 0].tolist() == [0, 2, 4, 4]
    listed = Batch(list(rows), ("y",), ("x",))
    assert np.array_equal(listed.merged()["x"], rows.whole["x"])


def test_a_batch_splits_its_outputs_into_rows_of_each_request() -> None:
    batch = Batch([whole(1), whole(2)], ("y",), ("x",))
    outputs = {"y": np.arange(8, dtype=np.float32).reshape(4, 2)}  # NOTE: one padding row
    split = batch.split(outputs)
    assert isinstance(split, Rows) and split.rows == [1, 2]
    assert [r["y"][:, 0].tolist() for r in split] == [[0], [2, 4]]
    alone = Batch([whole(1)], ("y",), ("x",), batching=False)
    assert alone.split(outputs) == [outputs]


def test_merge_rows_pads_with_the_last_row() -> None:
    merged = merge_rows([whole(1), whole(1, 10)], ["x"], pad_to=3)
    assert merged["x"][:, 0].tolist() == [0, 10, 10]


def test_offsets_of_counts_and_of_cut_arrays_put_end_to_end():
    assert offsets_of([1, 3, 0, 2]) == [0, 1, 4, 4, 6]
    assert offsets_of([]) == [0]
    # a part whose rows start past its array's first (a slice of a larger batch)
    assert end_to_end([[0, 2, 5], [3, 4, 7]]) == [0, 2, 5, 6, 9]


def test_a_rows_arrays_are_its_requests_rows_alone():
    layout = Rows({"x": whole(5)["x"], "y": whole(5)["x"]}, [1, 2, 4])  # rows 1-3 only
    arrays = layout.arrays(["x"])
    assert list(arrays) == ["x"] and arrays["x"][:, 0].tolist() == [2, 4, 6]
    exact = Rows.of(whole(3), [1, 2])
    assert exact.arrays()["x"] is exact.whole["x"]  # nothing to cut: the array itself
