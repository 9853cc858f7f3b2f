"""The transition policy as a table: held versions + aspired versions -> actions. No I/O."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from repoman.aspired import Aspired, AspiredVersion
from repoman.config.model import ModelConfig, ModelManagement, TensorConfig
from repoman.manager.policy import Held, Load, Park, Retire, plan
from repoman.manager.version import State
from repoman.types import DataType


def config(note: str = "", load: str = "") -> ModelConfig:
    tensor = (TensorConfig("x", DataType.FP32, (1,)),)
    return ModelConfig(
        name="m",
        platform="",
        backend=f"fake{note}",
        max_batch_size=0,
        inputs=tensor,
        outputs=tensor,
        management=ModelManagement(load=load),
    )


A, B = config(), config("-edited")  # two configs: B stands for a config edit
LAZY, EAGER = config(load="LAZY"), config(load="EAGER")


def want(number: int, files: str = "f", cfg: ModelConfig = A, error: str = "") -> AspiredVersion:
    return AspiredVersion(number, cfg, ((files, 1, 1),), None, error)


def held(state: State, files: str = "f", cfg: ModelConfig = A) -> Held:
    return Held(state, (((files, 1, 1),), cfg))


READY, FAILED, AVAILABLE = State.READY, State.FAILED, State.AVAILABLE


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


@dataclass(frozen=True)
class LazyRow:
    held: dict[int, Held]
    aspired: Aspired
    expected: list
    lazy_default: bool = False
    force: bool = False


def lazy(number: int, files: str = "f", cfg: ModelConfig = LAZY) -> AspiredVersion:
    return want(number, files, cfg)


LAZY_ROWS = {
    "a LAZY model is parked, not loaded": LazyRow(
        {}, Aspired("m", (lazy(1),), frozenset({1})), [Park(lazy(1))]
    ),
    "the server default makes a model that does not say lazy": LazyRow(
        {}, Aspired("m", (want(1),), frozenset({1})), [Park(want(1))], lazy_default=True
    ),
    "EAGER in the config wins over the server default": LazyRow(
        {}, Aspired("m", (want(1, cfg=EAGER),), frozenset({1})), [Load(want(1, cfg=EAGER))],
        lazy_default=True,
    ),
    "an AVAILABLE version with the same files stays parked": LazyRow(
        {1: held(AVAILABLE, cfg=LAZY)}, Aspired("m", (lazy(1),), frozenset({1})), []
    ),
    "an EAGER version the budget unloaded stays parked until asked for": LazyRow(
        {1: held(AVAILABLE)}, Aspired("m", (want(1),), frozenset({1})), []
    ),
    "a new version of an unloaded EAGER model is what loads next (parked)": LazyRow(
        {1: held(AVAILABLE)},
        Aspired("m", (want(2),), frozenset({1, 2})),
        [Park(want(2)), Retire(1)],
    ),
    "changed files of a parked version park the new files": LazyRow(
        {1: held(AVAILABLE, cfg=LAZY)},
        Aspired("m", (lazy(1, "g"),), frozenset({1})),
        [Park(lazy(1, "g"))],
    ),
    "a LAZY model in memory loads its new version at once (no cold start)": LazyRow(
        {1: held(READY, cfg=LAZY)},
        Aspired("m", (lazy(2),), frozenset({1, 2})),
        [Load(lazy(2))],
    ),
    "a LAZY model in memory reloads changed files in place": LazyRow(
        {1: held(READY, cfg=LAZY)},
        Aspired("m", (lazy(1, "g"),), frozenset({1})),
        [Load(lazy(1, "g"), replacing=True)],
    ),
    "an explicit load loads a parked version": LazyRow(
        {1: held(AVAILABLE, cfg=LAZY)},
        Aspired("m", (lazy(1),), frozenset({1})),
        [Load(lazy(1))],
        force=True,
    ),
    "an explicit load loads a LAZY model's new version": LazyRow(
        {}, Aspired("m", (lazy(1),), frozenset({1})), [Load(lazy(1))], force=True
    ),
    "an unwanted READY version goes once the wanted one is parked": LazyRow(
        {1: held(READY, cfg=LAZY), 2: held(AVAILABLE, cfg=LAZY)},
        Aspired("m", (lazy(2),), frozenset({1, 2})),
        [Retire(1)],
    ),
    "several versions: each parked on its own": LazyRow(
        {}, Aspired("m", (lazy(1), lazy(2)), frozenset({1, 2})), [Park(lazy(1)), Park(lazy(2))]
    ),
    "a parked version that failed with these files is not parked again": LazyRow(
        {1: held(FAILED, cfg=LAZY)}, Aspired("m", (lazy(1),), frozenset({1})), []
    ),
}


@pytest.mark.parametrize("row", LAZY_ROWS.values(), ids=LAZY_ROWS.keys())
def test_plan_lazy(row: LazyRow) -> None:
    failed = {
        v: h.identity for v, h in row.held.items() if h.state is FAILED
    }
    found = plan(row.held, row.aspired, failed, lazy_default=row.lazy_default, force=row.force)
    assert found == row.expected


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
