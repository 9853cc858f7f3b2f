"""An ensemble's tensors between steps: whole columns, passed from member to member as they are."""

from __future__ import annotations

import numpy as np
import pytest

from repoman.pipeline.columns import Column
from tests.pipeline.test_dispatch import BATCHING, Core, chain, member, run, send


def test_a_member_s_batch_outputs_reach_the_next_member_as_they_are() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("a", extra=BATCHING), member("b", extra=BATCHING))
        await core.serve(chain("pipe", "a", "b"))
        answers = await send(core, "pipe", [1, 2, 3, 4])
        assert [float(answer["OUT"][0, 0]) for answer in answers] == [1, 2, 3, 4]
        (_, given), = core.manager.route("a").instances[0].tensors
        (taken, _), = core.manager.route("b").instances[0].tensors
        # NOTE: b's batch is a's output itself: no request-by-request split and merge
        assert taken is given["OUTPUT"]

    run(scenario)


def test_a_request_that_failed_leaves_the_others_taken_one_by_one_to_the_end() -> None:
    async def scenario(core: Core) -> None:
        await core.serve(member("a", extra=BATCHING), member("c", extra=BATCHING))
        await core.serve(member("bad", "per_request_error", BATCHING))
        await core.serve(chain("pipe", "a", "bad", "c"))
        first, failed, last = await send(core, "pipe", [1, -2, 3])
        assert (float(first["OUT"][0, 0]), float(last["OUT"][0, 0])) == (1, 3)
        assert "step 1 (model 'bad' version 1)" in str(failed)
        (taken, _), = core.manager.route("c").instances[0].tensors
        assert taken[:, 0].tolist() == [1, 3]

    run(scenario)


def test_requests_alike_are_gathered_into_one_array_in_order() -> None:
    parts = [np.full((rows, 2), rows, np.float32) for rows in (1, 3, 2)]
    column = Column.gathered(parts, batching=True)
    assert column.whole is not None and column.offsets == [0, 1, 4, 6]
    for pos, part in enumerate(parts):
        assert np.array_equal(column[pos], part)


@pytest.mark.parametrize(
    "parts, batching",
    [
        ([np.zeros((1, 2), np.float32), np.zeros((1, 3), np.float32)], True),
        ([np.zeros((1, 2), np.float32), np.zeros((1, 2), np.int32)], True),
        ([np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32)], False),
    ],
    ids=["shapes differ", "types differ", "no batching"],
)
def test_requests_that_differ_or_do_not_batch_stay_one_array_each(parts, batching) -> None:
    column = Column.gathered(parts, batching)
    assert column.whole is None and column.parts == parts


def test_one_request_is_its_own_whole_column_without_a_copy() -> None:
    only = np.zeros((2, 2), np.float32)
    column = Column.gathered([only], batching=True)
    assert column.whole is only and column.offsets == [0, 2]


def test_two_whole_columns_join_into_one_with_their_rows_in_order() -> None:
    mine = Column(whole=np.arange(8, dtype=np.float32).reshape(4, 2), offsets=[1, 2, 4])
    theirs = Column(whole=np.arange(6, dtype=np.float32).reshape(3, 2) + 100, offsets=[0, 3])
    joined = mine.joined(theirs)
    assert joined is not None and joined.offsets == [0, 1, 3, 6]
    assert [joined[pos][:, 0].tolist() for pos in range(3)] == [[2], [4, 6], [100, 102, 104]]
    other_type = Column(whole=np.zeros((1, 2), np.int32), offsets=[0, 1])
    assert mine.joined(other_type) is None
    assert mine.joined(Column([np.zeros((1, 2), np.float32)])) is None


def test_writing_one_request_s_array_splits_a_whole_column() -> None:
    column = Column(whole=np.arange(6, dtype=np.float32).reshape(3, 2), offsets=[0, 1, 3])
    replacement = np.zeros((1, 2), np.float32)
    column[0] = replacement
    assert column.whole is None and column[0] is replacement
    assert column[1][:, 0].tolist() == [2, 4]
