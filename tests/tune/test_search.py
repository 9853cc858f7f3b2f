"""The tuner's search policy, driven by made-up measurements: no server, no clock, no sleeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from repoman.tune import search
from repoman.tune.report import Sample, Trial
from repoman.tune.search import BATCH_SIZE, DELAY_PREF, INSTANCES, OFF, UNTUNED, Search
from repoman.tune.space import RooflinePoint, Settings


def curve(*ms_per_batch: float) -> list[RooflinePoint]:
    """A roofline from the time of a batch of 1, 2, 4, ... in ms."""
    return [RooflinePoint(1 << k, t / 1e3) for k, t in enumerate(ms_per_batch)]


# batches well up to 16: 1000, 1800, 3200, 5000, 6000, 6100 infer/s at 1..32 (knee 16)
HEAVY = curve(1.0, 1.111, 1.25, 1.6, 2.667, 5.246)
# the raw time hardly grows with the batch: the knee is 128
TINY = curve(0.03, 0.03, 0.031, 0.032, 0.034, 0.036, 0.04, 0.05)

BS8 = Settings(8, True, 100, (), 1)  # the config as it is, in most cases below
DEFAULT = (1000.0, 10.0)  # infer/s and p99 ms of a config a case does not name
TRIAL_S = 10.0


def sample(throughput: float, p99_ms: float, spread: float = 0.0) -> Sample:
    """One concurrency's result whose repeats spread by ``spread`` around ``throughput``."""
    repeats = (throughput * (1 - spread / 2), throughput, throughput * (1 + spread / 2))
    return Sample(8, repeats, p99_ms / 2, p99_ms, None)


def make(
    untuned: Settings = BS8,
    roofline: Sequence[RooflinePoint] = HEAVY,
    *,
    budget_ms: float = 50.0,
    concurrency: int = 32,
    cores: int = 4,
) -> Search:
    return Search(
        untuned,
        roofline,
        budget_ms=budget_ms,
        max_concurrency=concurrency,
        cores=cores,
        trial_s=TRIAL_S,
    )


def drive(
    policy: Search,
    measured: Mapping[str, tuple[float, float]] = {},
    *,
    failing: Sequence[str] = (),
    left_s: float = 1e6,
    load_s: float = 1.0,
) -> list[tuple[str, str]]:
    """Run ``policy`` to the end; each config measures as ``measured`` says (else DEFAULT) and
    costs TRIAL_S + ``load_s`` of ``left_s``. The configs measured and their stages, in order."""
    order = []
    while (trial := policy.next(left_s)) is not None:
        name = trial.settings.describe()
        if name in failing:
            trial.error = "refused"
        else:
            trial.samples = [sample(*measured.get(name, DEFAULT))]
        policy.record(trial, load_s)
        left_s -= TRIAL_S + load_s
        order.append((name, trial.stage))
    return order


def named(order: list[tuple[str, str]], stage: str) -> list[str]:
    return [name for name, s in order if s == stage]


def test_the_stages_run_in_order_each_starting_from_the_best_so_far():
    order = drive(make(), {"bs16 d0us x1": (5000, 20)})
    assert order == [
        ("bs8 d100us x1", UNTUNED),
        ("no batching x1", OFF),
        ("bs2 d0us x1", BATCH_SIZE),
        ("bs4 d0us x1", BATCH_SIZE),
        ("bs8 d0us x1", BATCH_SIZE),
        ("bs16 d0us x1", BATCH_SIZE),
        ("bs32 d0us x1", BATCH_SIZE),
        # half bs16's raw 2.667 ms, then x4, capped at 10 ms; no preferred size: 16 is the knee
        ("bs16 d1.3ms x1", DELAY_PREF),
        ("bs16 d5.3ms x1", DELAY_PREF),
        ("bs16 d10ms x1", DELAY_PREF),
        ("bs16 d0us x2", INSTANCES),
        ("bs16 d0us x3", INSTANCES),
    ]


def test_a_batch_size_above_the_knee_also_tries_the_knee_as_preferred_size():
    # bs32 and a 2.6 ms delay win their stages; the ladder from 2.6 ms meets the cap twice
    order = drive(make(), {"bs32 d0us x1": (6000, 20), "bs32 d2.6ms x1": (7000, 20)})
    assert named(order, DELAY_PREF) == ["bs32 d2.6ms x1", "bs32 d10ms x1", "bs32 d0us pref16 x1"]
    assert named(order, INSTANCES) == ["bs32 d2.6ms x2", "bs32 d2.6ms x3"]


@pytest.mark.parametrize(
    ("roofline", "concurrency", "budget_ms", "sizes"),
    [
        (HEAVY, 32, 50.0, [2, 4, 8, 16, 32]),  # up to twice the knee
        (HEAVY, 8, 50.0, [2, 4, 8]),  # 8 clients never queue more than 8 requests
        (HEAVY, 5, 50.0, [2, 4, 8]),  # ... 5 clients: the power of two above
        (HEAVY, 4, 50.0, [2, 4]),
        (HEAVY, 1, 50.0, [2]),  # always one batch size
        (HEAVY, 32, 4.0, [2, 4, 8]),  # bs16's raw 2.667 ms is over half the budget
        (HEAVY[:4], 32, 50.0, [2, 4, 8]),  # nothing above the roofline's top
        (TINY, 256, 50.0, [2, 8, 16, 32, 128]),  # seven sizes thinned to five, both ends kept
        (TINY, 64, 50.0, [2, 4, 8, 32, 64]),
    ],
)
def test_which_batch_sizes_are_tried(roofline, concurrency, budget_ms, sizes):
    order = drive(make(roofline=roofline, concurrency=concurrency, budget_ms=budget_ms))
    assert named(order, BATCH_SIZE) == [f"bs{size} d0us x1" for size in sizes]


@pytest.mark.parametrize(
    ("cores", "instances"),
    [(1, []), (2, ["x2"]), (3, ["x2", "x3"]), (16, ["x2", "x3"])],  # at most two more
)
def test_more_instances_up_to_one_per_core(cores, instances):
    order = drive(make(Settings(0, False, 0, (), 1), [], cores=cores))
    assert named(order, UNTUNED) == ["no batching x1"]
    assert named(order, INSTANCES) == [f"no batching {n}" for n in instances]
    assert len(order) == 1 + len(instances)  # no roofline: no batch stages


def test_without_a_roofline_a_batching_config_goes_straight_to_instances():
    order = drive(make(roofline=[]))
    assert [stage for _, stage in order] == [UNTUNED, OFF, INSTANCES, INSTANCES]
    assert named(order, INSTANCES) == ["bs8 d100us x2", "bs8 d100us x3"]


def test_the_best_so_far_is_picked_without_the_noise_margin():
    # bs16 measured only 1% more than the config as it is: the search still refines bs16 ...
    measured = {"bs8 d100us x1": (1000, 10), "bs16 d0us x1": (1010, 10)}
    policy = make()
    order = drive(policy, measured)
    assert named(order, DELAY_PREF)[0].startswith("bs16 ")
    assert named(order, INSTANCES) == ["bs16 d0us x2", "bs16 d0us x3"]
    # ... but the recommendation keeps the config as it is: 1% is within the noise
    assert search.pick(policy.trials, 50.0) is policy.trials[0]


def test_the_config_as_it_is_competes_in_the_best_so_far_and_batching_off_does_not():
    order = drive(make(), {"bs8 d100us x1": (3000, 10), "no batching x1": (9000, 1)})
    assert named(order, DELAY_PREF) == ["bs8 d800us x1", "bs8 d3.2ms x1", "bs8 d10ms x1"]
    assert named(order, INSTANCES) == ["bs8 d100us x2", "bs8 d100us x3"]


def test_over_the_latency_budget_everywhere_the_lowest_p99_is_the_best_so_far():
    measured = {"bs8 d100us x1": (8000, 80), "bs4 d0us x1": (100, 6)}
    measured |= {"bs2 d0us x1": (9000, 90), "bs8 d0us x1": (9000, 90)}
    order = drive(make(budget_ms=5.0), measured)  # DEFAULT's 10 ms p99 is over it too
    assert named(order, BATCH_SIZE) == ["bs2 d0us x1", "bs4 d0us x1", "bs8 d0us x1"]
    # the delay ladder is capped at a quarter of the budget
    assert named(order, DELAY_PREF) == ["bs4 d620us x1", "bs4 d1.25ms x1"]
    assert named(order, INSTANCES) == ["bs4 d0us x2", "bs4 d0us x3"]


def test_when_every_batch_size_fails_the_config_as_it_is_goes_on_without_a_delay_stage():
    unbatched = Settings(8, False, 0, (), 1)  # may batch, but does not
    failing = [f"bs{size} d0us x1" for size in (2, 4, 8, 16, 32)]
    order = drive(make(unbatched), failing=failing)
    assert [stage for _, stage in order] == [UNTUNED] + [BATCH_SIZE] * 5 + [INSTANCES] * 2
    assert named(order, INSTANCES) == ["no batching x2", "no batching x3"]


def test_a_config_asked_for_again_is_not_measured_again():
    untuned = Settings(4, True, 0, (), 1)  # also stage 2's bs4
    policy = make(untuned)
    order = drive(policy, {"bs4 d0us x1": (5000, 10)})
    assert named(order, BATCH_SIZE) == [f"bs{size} d0us x1" for size in (2, 8, 16, 32)]
    assert [t.number for t in policy.trials] == list(range(1, len(order) + 1))
    # its one measurement still counts in stage 2: the delays are bs4's
    assert named(order, DELAY_PREF) == ["bs4 d620us x1", "bs4 d2.5ms x1", "bs4 d10ms x1"]


def test_a_failed_config_is_numbered_and_kept_but_never_the_best():
    policy = make(roofline=[])
    order = drive(policy, {"no batching x1": (1e6, 1)}, failing=["bs8 d100us x1"])
    assert [(t.number, t.error) for t in policy.trials[:2]] == [(1, "refused"), (2, None)]
    assert named(order, INSTANCES) == ["bs8 d100us x2", "bs8 d100us x3"]


def test_the_search_stops_measuring_when_the_time_is_spent_and_names_the_rest():
    policy = make()
    # each config costs TRIAL_S + 1 s of loading: 35 s pays for three
    order = drive(policy, {"bs8 d100us x1": (3000, 10)}, left_s=35.0)
    assert order == [
        ("bs8 d100us x1", UNTUNED),
        ("no batching x1", OFF),
        ("bs2 d0us x1", BATCH_SIZE),
    ]
    assert policy.skipped == [
        "bs4 d0us x1",
        "bs8 d0us x1",
        "bs16 d0us x1",
        "bs32 d0us x1",
        "bs8 d800us x1",
        "bs8 d3.2ms x1",
        "bs8 d10ms x1",
        "bs8 d100us x2",
        "bs8 d100us x3",
    ]
    assert policy.done and policy.next(1e6) is None  # done stays done


@pytest.mark.parametrize(
    ("loads", "expected_s"),
    [
        ([], 1.0),  # the guess before any load was timed
        ([5.0], 3.0),  # half the old estimate, half the new time
        ([5.0, 5.0], 4.0),
        ([5.0, None], 3.0),  # a failed load tells nothing
        ([0.0, 0.0, 0.0], 0.2),  # never under MIN_LOAD_S
    ],
)
def test_the_load_time_estimate(loads, expected_s):
    policy = make(roofline=[], cores=16)
    for load_s in loads:
        trial = policy.next(1e6)
        assert trial is not None
        trial.samples = [sample(*DEFAULT)]
        policy.record(trial, load_s)
    assert policy.load_s == pytest.approx(expected_s)
    # a config needs TRIAL_S plus that estimate of the time left
    ask = policy.next(TRIAL_S + expected_s - 0.01)
    assert ask is None and policy.skipped


def test_a_config_that_just_fits_is_measured():
    assert make().next(TRIAL_S + search.LOAD_GUESS_S) is not None


def test_one_config_at_a_time():
    policy = make()
    first = policy.next(1e6)
    assert first is not None and (first.number, first.stage) == (1, UNTUNED)
    with pytest.raises(RuntimeError, match="record trial #1"):
        policy.next(1e6)
    with pytest.raises(RuntimeError, match="not the one asked for"):
        policy.record(Trial(1, first.settings, UNTUNED), 1.0)
    policy.record(first, 1.0)
    second = policy.next(1e6)
    assert second is not None and (second.number, second.stage) == (2, OFF)


def trial(number: int, stage: str, throughput: float, p99_ms: float, spread: float) -> Trial:
    return Trial(number, BS8, stage, [sample(throughput, p99_ms, spread)])


@pytest.mark.parametrize(
    ("untuned", "other", "kept"),
    [
        # (throughput, p99 ms, spread) of the config as it is and of the best change
        ((1000, 10, 0.0), (1049, 10, 0.0), True),  # a change must beat it by over 5%
        ((1000, 10, 0.0), (1051, 10, 0.0), False),
        ((1000, 10, 0.2), (1140, 10, 0.0), True),  # plus half the larger spread: 15%
        ((1000, 10, 0.0), (1160, 10, 0.2), False),  # either one's spread counts
        ((1000, 10, 0.0), (1140, 10, 0.2), True),
        ((1000, 10, 0.6), (1190, 10, 0.0), True),  # at most 20% ...
        ((1000, 10, 0.6), (1210, 10, 0.0), False),
        ((1000, 60, 0.0), (1001, 10, 0.0), False),  # ... and only when it meets the budget
        ((1000, 10, 0.0), (5000, 60, 0.0), True),  # a change over the budget never wins
    ],
)
def test_the_pick_keeps_the_config_as_it_is_within_the_noise(untuned, other, kept):
    trials = [trial(1, UNTUNED, *untuned), trial(2, BATCH_SIZE, *other)]
    assert search.pick(trials, 50.0) is trials[0 if kept else 1]


def test_the_incumbent_is_the_config_as_it_is_only_when_it_was_measured_first():
    measured = trial(1, UNTUNED, 1000, 10, 0.0)
    assert search.incumbent([measured, trial(2, OFF, 1000, 10, 0.0)]) is measured
    assert search.incumbent([trial(1, OFF, 1000, 10, 0.0)]) is None
    assert search.incumbent([]) is None
    assert search.pick([], 50.0) is None
