"""Tensors through the arena: every served dtype and BYTES round-trip, numbers without a copy, inline when full."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from repoman.ipc import tensors
from repoman.ipc.arena import Arena
from repoman.types import DataType

pytestmark = pytest.mark.timeout(60)

NUMERIC = [t.numpy_dtype for t in DataType if t is not DataType.BYTES]
"""Every numeric dtype repoman serves (from the data type table itself)."""

SHAPES = [(0,), (3, 0, 2), (7,), (2, 3, 4), (1, 1)]


@pytest.fixture
def arena() -> Iterator[Arena]:
    arena = Arena.create(1 << 20, "repoman-test-tensors")
    yield arena
    arena.close()


def sample(dtype: np.dtype, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values across the dtype's range, its extremes (and NaN, inf for floats) included."""
    rng = np.random.default_rng(seed)
    count = int(np.prod(shape))
    if dtype.kind == "b":
        flat = rng.integers(0, 2, count).astype(bool)
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        flat = rng.integers(info.min, info.max, count, dtype=dtype, endpoint=True)
        flat[: min(count, 2)] = [info.min, info.max][: min(count, 2)]
    else:
        flat = (rng.standard_normal(count) * 1000).astype(dtype)
        flat[: min(count, 3)] = [np.nan, np.inf, -np.inf][: min(count, 3)]
    return flat.reshape(shape)


def same(result: np.ndarray, expected: np.ndarray) -> None:
    assert result.dtype == expected.dtype
    assert result.shape == expected.shape
    if expected.dtype == object:
        assert result.tolist() == expected.tolist()
    else:
        assert result.tobytes() == np.ascontiguousarray(expected).tobytes()


def bytes_array(values: list[bytes], shape: tuple[int, ...] | None = None) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array if shape is None else array.reshape(shape)


# ---- round trips ------------------------------------------------------------------------------


def test_the_served_dtypes_are_the_twelve_numeric_ones() -> None:
    integers = ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"]
    floats = ["float16", "float32", "float64"]
    assert sorted(d.name for d in NUMERIC) == sorted(["bool", *integers, *floats])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", NUMERIC, ids=str)
def test_every_numeric_dtype_round_trips_through_the_arena(
    arena: Arena, dtype: np.dtype, shape: tuple[int, ...]
) -> None:
    array = sample(dtype, shape)
    blocks: list[int] = []
    descriptor = tensors.put(arena, array, blocks)
    same(tensors.get(arena, descriptor), array)
    if array.nbytes:
        assert descriptor[2] is not None and blocks == [descriptor[2]]


@pytest.mark.parametrize(
    "values, shape",
    [
        ([b"hello", b"", b"world\x00with nul", bytes(range(256)) * 40], None),
        ([b"", b"", b""], None),
        ([b""], None),
        ([b"a", b"bc", b"", b"def", b"g", b""], (2, 3)),
        ([], None),
        ([], (2, 0)),
        ([b"only"], ()),
        ([b""], ()),
    ],
    ids=[
        "mixed",
        "all-empty-strings",
        "one-empty-string",
        "2x3",
        "empty",
        "2x0",
        "0-d",
        "0-d-empty",
    ],
)
def test_bytes_tensors_round_trip(arena: Arena, values: list[bytes], shape) -> None:
    array = bytes_array(values, shape)
    descriptor = tensors.put(arena, array, [])
    assert descriptor[0] == "BYTES"
    same(tensors.get(arena, descriptor), array)


def test_text_elements_travel_as_utf8_bytes(arena: Arena) -> None:
    # NOTE: onnxruntime gives its string tensors as str; bytes() of a str raises
    array = np.array([["grüße", b"raw"], ["", "x"]], dtype=object)
    descriptor = tensors.put(arena, array, [])
    got = tensors.get(arena, descriptor)
    assert got.tolist() == [["grüße".encode(), b"raw"], [b"", b"x"]]


def test_bytes_are_written_length_prefixed_in_the_arena(arena: Arena) -> None:
    blocks: list[int] = []
    _, _, offset, nbytes = tensors.put(arena, bytes_array([b"ab", b"", b"c"]), blocks)
    expected = b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x01\x00\x00\x00c"
    assert (offset, nbytes) == (blocks[0], len(expected))
    assert bytes(arena.view(offset, nbytes)) == expected


@pytest.mark.parametrize("dtype", NUMERIC, ids=str)
def test_non_contiguous_numeric_arrays_round_trip_as_their_values(arena, dtype) -> None:
    base = sample(dtype, (6, 8, 4), seed=3)
    views = [
        base[::2, 1::3],
        base.transpose(2, 0, 1),
        base[::-1, :, ::-2],
        np.asfortranarray(base),
        base[:, 3, :],
    ]
    for view in views:
        same(tensors.get(arena, tensors.put(arena, view, [])), view)


def test_non_contiguous_bytes_arrays_round_trip(arena: Arena) -> None:
    base = bytes_array([bytes([i]) * i for i in range(12)], (3, 4))
    for view in (base[:, ::2], base.T, base[::-1, 1:]):
        same(tensors.get(arena, tensors.put(arena, view, [])), view)


def test_non_native_byte_order_round_trips(arena: Arena) -> None:
    array = np.arange(10, dtype=">i4")
    result = tensors.get(arena, tensors.put(arena, array, []))
    assert result.dtype == np.dtype(">i4")
    assert result.tolist() == array.tolist()


@pytest.mark.parametrize(
    "dtype", [np.dtype(np.float32), np.dtype(np.int64), np.dtype(bool)], ids=str
)
def test_a_0_d_numeric_array_round_trips_as_0_d(arena: Arena, dtype: np.dtype) -> None:
    array = np.array(sample(dtype, (1,))[0], dtype=dtype)
    assert array.shape == ()
    copied = np.array(tensors.get(arena, tensors.put(arena, array, [])))  # no view left behind
    same(copied, array)


def test_a_0_d_numeric_array_keeps_its_value(arena: Arena) -> None:
    array = np.array(2.5, dtype=np.float32)
    result = tensors.get(arena, tensors.put(arena, array, []))
    assert result.dtype == np.float32
    assert result.reshape(()) == array  # the value survives, whatever the shape (see above)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    array=hnp.arrays(
        dtype=st.sampled_from(NUMERIC),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6),
    ),
    size=st.sampled_from([64, 256, 4096]),
    taken=st.integers(0, 3),
)
def test_any_numeric_array_round_trips_whether_or_not_the_arena_has_room(
    array: np.ndarray, size: int, taken: int
) -> None:
    arena = Arena.create(size, "repoman-test-tensors-random")
    try:
        for _ in range(taken):
            arena.alloc(size // 4)
        blocks: list[int] = []
        descriptor = tensors.put(arena, array, blocks)
        same(tensors.get(arena, descriptor), array)
        assert blocks == ([] if descriptor[2] is None else [descriptor[2]])
        roundtrip = pickle.loads(pickle.dumps(descriptor))
        same(tensors.get(arena, roundtrip), array)
    finally:
        arena.close()


# ---- zero copy --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", NUMERIC, ids=str)
def test_a_numeric_get_is_a_view_of_the_arena_not_a_copy(arena: Arena, dtype: np.dtype) -> None:
    array = sample(dtype, (4, 5), seed=9)
    descriptor = tensors.put(arena, array, [])
    _, _, offset, nbytes = descriptor
    result = tensors.get(arena, descriptor)
    replacement = sample(dtype, (4, 5), seed=10)
    arena.view(offset, nbytes)[:] = replacement.tobytes()
    same(result, replacement)
    del result


def test_a_numeric_get_sees_writes_through_another_handle_on_the_arena(arena: Arena) -> None:
    reader = Arena.attach(os.dup(arena.fd), arena.size)
    try:
        array = np.arange(12, dtype=np.float64).reshape(3, 4)
        descriptor = tensors.put(arena, array, [])
        seen = tensors.get(reader, descriptor)
        same(seen, array)
        np.frombuffer(arena.view(descriptor[2], descriptor[3]), np.float64)[5] = -1.0
        assert seen[1, 1] == -1.0
        assert seen.flags.aligned
        del seen
    finally:
        reader.close()


def test_the_array_is_copied_into_the_arena_at_put(arena: Arena) -> None:
    array = np.arange(10, dtype=np.int32)
    descriptor = tensors.put(arena, array, [])
    array[:] = 0  # the caller's array may change once put returns
    assert tensors.get(arena, descriptor).tolist() == list(range(10))


# ---- inline when the arena is full ------------------------------------------------------------


def test_when_the_arena_is_full_put_carries_the_bytes_inline_and_get_round_trips() -> None:
    arena = Arena.create(256, "repoman-test-tensors-small")
    try:
        assert arena.alloc(256) == 0  # nothing left
        numbers = sample(np.dtype(np.float32), (10, 10))
        strings = bytes_array([b"abc", b"", b"d" * 300])
        blocks: list[int] = []
        for array in (numbers, strings):
            descriptor = tensors.put(arena, array, blocks)
            assert descriptor[2] is None
            assert isinstance(descriptor[3], bytes)
            same(tensors.get(arena, descriptor), array)
            same(tensors.get(arena, pickle.loads(pickle.dumps(descriptor))), array)
        assert blocks == []
        assert arena.in_use == 1
    finally:
        arena.close()


def test_an_array_bigger_than_the_whole_arena_goes_inline() -> None:
    arena = Arena.create(4096, "repoman-test-tensors-small")
    try:
        array = sample(np.dtype(np.int64), (1000,))
        blocks: list[int] = []
        descriptor = tensors.put(arena, array, blocks)
        assert descriptor[2] is None and blocks == [] and arena.in_use == 0
        same(tensors.get(arena, descriptor), array)
    finally:
        arena.close()


def test_tensors_up_to_inline_up_to_bytes_ride_inline_and_larger_ones_take_a_block(
    arena: Arena,
) -> None:
    small = sample(np.dtype(np.float32), (1, 1024))  # 4096 bytes: exactly the limit
    large = sample(np.dtype(np.float32), (1, 1025))
    strings = bytes_array([b"abc", b"de"])
    blocks: list[int] = []
    descriptors = tensors.put_all(arena, {"s": small, "l": large, "b": strings}, blocks, 4096)
    assert descriptors["s"][2] is None and descriptors["b"][2] is None
    assert descriptors["l"][2] is not None and blocks == [descriptors["l"][2]]
    assert arena.in_use == 1
    got = tensors.get_all(arena, pickle.loads(pickle.dumps(descriptors)))
    same(got["s"], small)
    same(got["l"], large)
    same(got["b"], strings)


# ---- the blocks list --------------------------------------------------------------------------


def test_put_all_appends_exactly_the_offsets_it_used_in_order() -> None:
    arena = Arena.create(8192, "repoman-test-tensors-blocks")
    try:
        arrays = {
            "a": sample(np.dtype(np.float32), (100,)),  # 400 bytes: a block
            "empty": np.zeros((0, 3), np.int8),  # no bytes: no block
            "huge": sample(np.dtype(np.float64), (2000,)),  # bigger than the arena: inline
            "s": bytes_array([b"x", b"", b"yz"]),  # a block
            "empty_s": bytes_array([]),  # no bytes: no block
            "b": sample(np.dtype(np.uint8), (3, 3)),  # a block
        }
        blocks = [12345]  # what was already there stays
        descriptors = tensors.put_all(arena, arrays, blocks)
        used = [d[2] for d in descriptors.values() if d[2] is not None]
        assert [descriptors[name][2] for name in ("a", "s", "b")] == used
        assert blocks == [12345, *used]
        assert arena.in_use == len(used) == 3
        assert descriptors["huge"][2] is None and descriptors["empty"][2] is None

        results = tensors.get_all(arena, pickle.loads(pickle.dumps(descriptors)))
        assert results.keys() == arrays.keys()
        for name, array in arrays.items():
            same(results[name], array)
        del results

        for offset in blocks[1:]:
            arena.free(offset)
        assert arena.in_use == 0
    finally:
        arena.close()


def test_the_blocks_of_many_tensors_do_not_overlap() -> None:
    arena = Arena.create(1 << 16, "repoman-test-tensors-many")
    try:
        arrays = [sample(NUMERIC[i % len(NUMERIC)], (i % 7 + 1, 5), seed=i) for i in range(60)]
        blocks: list[int] = []
        descriptors = [tensors.put(arena, array, blocks) for array in arrays]
        assert len(blocks) == len(set(blocks)) == arena.in_use == 60
        for array, descriptor in zip(arrays, descriptors, strict=True):
            same(tensors.get(arena, descriptor), array)  # nothing was written over
    finally:
        arena.close()
