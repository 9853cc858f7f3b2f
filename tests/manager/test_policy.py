"""The transition policy as a table: held versions + aspired versions -> actions. No I/O."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from repoman.aspired import Aspired, AspiredVersion
from repoman.config.model import ModelConfig, TensorConfig
from repoman.manager.policy import Held, Load, Retire, plan
from repoman.manager.version import State
from repoman.types import DataType


def config(note: str = "") -> ModelConfig:
    tensor = (TensorConfig("x", DataType.FP32, (1,)),)
    return ModelConfig(
        name="m",
        platform="",
        backend=f"fake{note}",
        max_batch_size=0,
        inputs=tensor,
        outputs=tensor,
    )


A, B = config(), config("-edited")  # two configs: B stands for a config edit


def want(number: int, files: str = "f", cfg: ModelConfig = A, error: str = "") -> AspiredVersion:
    return AspiredVersion(number, cfg, ((files, 1, 1),), None, error)


def held(state: State, files: str = "f", cfg: ModelConfig = A) -> Held:
    return Held(state, (((files, 1, 1),), cfg))


READY, FAILED = State.READY, State.FAILED


@dataclass(frozen=True)
class Row:
    held: dict[int, Held]
    aspired: Aspired
    expected: list
    failed: dict | None = None


ROWS = {
    # ---- loading ------------------------------------------------------------------
    "a new model loads its wanted version": Row(
        {}, Aspired("m", (want(1),), frozenset({1})), [Load(want(1))]
    ),
    "an unchanged READY version is left alone": Row(
        {1: held(READY)}, Aspired("m", (want(1),), frozenset({1})), []
    ),
    "several wanted versions load side by side": Row(
        {}, Aspired("m", (want(1), want(2)), frozenset({1, 2})), [Load(want(1)), Load(want(2))]
    ),
    "only the new one of several wanted versions loads": Row(
        {1: held(READY), 2: held(READY)},
        Aspired("m", (want(1), want(2), want(3)), frozenset({1, 2, 3})),
        [Load(want(3))],
    ),
    # ---- a new version takes over (availability first) ----------------------------
    "a new version loads while the old one keeps serving": Row(
        {1: held(READY)}, Aspired("m", (want(2),), frozenset({1, 2})), [Load(want(2))]
    ),
    "once the new version is READY the old one retires": Row(
        {1: held(READY), 2: held(READY)}, Aspired("m", (want(2),), frozenset({1, 2})), [Retire(1)]
    ),
    "a new version that failed leaves the old one serving": Row(
        {1: held(READY), 2: held(FAILED)},
        Aspired("m", (want(2),), frozenset({1, 2})),
        [],
        failed={2: want(2).identity},
    ),
    "an unwanted version that is not serving retires at once": Row(
        {1: held(FAILED)}, Aspired("m", (want(2),), frozenset({1, 2})), [Load(want(2)), Retire(1)]
    ),
    "a READY wanted version lets an unwanted one go while it reloads": Row(
        {1: held(READY), 2: held(READY)},
        Aspired("m", (want(2, cfg=B),), frozenset({1, 2})),
        [Load(want(2, cfg=B), replacing=True), Retire(1)],
    ),
    # ---- edits in place --------------------------------------------------------------
    "a config edit reloads the version, replacing it": Row(
        {1: held(READY)},
        Aspired("m", (want(1, cfg=B),), frozenset({1})),
        [Load(want(1, cfg=B), replacing=True)],
    ),
    "a model file replaced in place reloads the version, replacing it": Row(
        {1: held(READY)},
        Aspired("m", (want(1, files="g"),), frozenset({1})),
        [Load(want(1, files="g"), replacing=True)],
    ),
    "a reload that failed is not retried with the same files": Row(
        {1: held(READY)},
        Aspired("m", (want(1, cfg=B),), frozenset({1})),
        [],
        failed={1: want(1, cfg=B).identity},
    ),
    "a failed version is not retried with the same files": Row(
        {1: held(FAILED)},
        Aspired("m", (want(1),), frozenset({1})),
        [],
        failed={1: want(1).identity},
    ),
    "a failed version is retried once its files change": Row(
        {1: held(FAILED)},
        Aspired("m", (want(1, files="g"),), frozenset({1})),
        [Load(want(1, files="g"))],
        failed={1: want(1).identity},
    ),
    "a version whose own config is broken is handed over as a load that fails": Row(
        {},
        Aspired("m", (want(1, error="bad config"),), frozenset({1})),
        [Load(want(1, error="bad config"))],
    ),
    # ---- removal ---------------------------------------------------------------------
    "removing the serving version's folder retires it at once": Row(
        {1: held(READY)}, Aspired("m", (), frozenset()), [Retire(1)]
    ),
    "a version folder removed retires it even with no replacement READY": Row(
        {1: held(READY), 2: held(FAILED)},
        Aspired("m", (want(2),), frozenset({2})),
        [Retire(1)],
        failed={2: want(2).identity},
    ),
    "nothing wanted at all retires every version": Row(
        {1: held(READY)}, Aspired("m", (), frozenset({1})), [Retire(1)]
    ),
    "a model removed (or unloaded) retires every version": Row(
        {1: held(READY), 2: held(FAILED)}, Aspired("m"), [Retire(1), Retire(2)]
    ),
    # ---- a model-level error (its config is broken) ---------------------------------
    "a broken model config keeps serving versions still there": Row(
        {1: held(READY)}, Aspired("m", present=frozenset({1}), error="bad"), []
    ),
    "a broken model config still retires versions whose folders are gone": Row(
        {1: held(READY), 2: held(READY)},
        Aspired("m", present=frozenset({2}), error="bad"),
        [Retire(1)],
    ),
    "a broken model config loads nothing new": Row(
        {}, Aspired("m", present=frozenset({1}), error="bad"), []
    ),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_plan(row: Row) -> None:
    assert plan(row.held, row.aspired, row.failed or {}) == row.expected


def settle(held: dict[int, Held], aspired: Aspired, outcomes: dict[int, bool]) -> list[list]:
    """Run the policy to a fixed point the way the manager does, loads succeeding or failing
    as ``outcomes`` says; returns each round's actions."""
    failed: dict = {}
    rounds = []
    for _ in range(10):
        actions = plan(held, aspired, failed)
        if not actions:
            return rounds
        rounds.append(actions)
        for action in actions:
            if isinstance(action, Retire):
                del held[action.version]
                failed.pop(action.version, None)
            elif outcomes.get(action.target.version, True) and not action.target.error:
                held[action.target.version] = Held(READY, action.target.identity)
                failed.pop(action.target.version, None)
            else:
                failed[action.target.version] = action.target.identity
                if not action.replacing:
                    held[action.target.version] = Held(FAILED, action.target.identity)
    raise AssertionError(f"the policy did not settle: {rounds}")


def test_a_swap_loads_first_and_retires_in_the_next_round() -> None:
    held_now = {1: held(READY)}
    rounds = settle(held_now, Aspired("m", (want(2),), frozenset({1, 2})), {})
    assert rounds == [[Load(want(2))], [Retire(1)]]
    assert held_now == {2: Held(READY, want(2).identity)}


def test_a_failed_swap_settles_with_the_old_version_serving() -> None:
    held_now = {1: held(READY)}
    rounds = settle(held_now, Aspired("m", (want(2),), frozenset({1, 2})), {2: False})
    assert rounds == [[Load(want(2))]]
    assert held_now[1].state is READY and held_now[2].state is FAILED


def test_a_failed_reload_settles_serving_the_previous_files() -> None:
    held_now = {1: held(READY)}
    rounds = settle(held_now, Aspired("m", (want(1, cfg=B),), frozenset({1})), {1: False})
    assert rounds == [[Load(want(1, cfg=B), replacing=True)]]
    assert held_now == {1: held(READY)}
