"""Picking the recommendation and the Pareto front from measured trials; the printed table."""

from __future__ import annotations

import math

from repoman.tune.report import Sample, Trial, pareto_front, recommend, table
from repoman.tune.space import Settings


def trial(number: int, throughput: float, p99: float, *, errors: int = 0, error=None) -> Trial:
    samples = [
        Sample(8, (throughput * 0.9, throughput, throughput * 1.1), p99 / 2, p99, 4.0, errors)
    ]
    return Trial(number, Settings(number, True), "test", samples if error is None else [], error)


def test_sample_median_and_spread():
    sample = Sample(8, (90.0, 100.0, 120.0), 1.0, 2.0, None)
    assert sample.throughput == 100.0
    assert math.isclose(sample.spread, 0.3)
    assert Sample(8, (100.0,), 1.0, 2.0, None).spread == 0.0


def test_a_trial_aggregates_mean_throughput_and_worst_p99_over_concurrencies():
    t = Trial(1, Settings(8, True), "x")
    t.samples = [Sample(1, (100.0,), 1.0, 3.0, 1.0), Sample(8, (300.0,), 2.0, 9.0, 4.0)]
    assert t.throughput == 200.0 and t.p99_ms == 9.0
    assert t.within(9.0) and not t.within(8.9)


def test_recommend_takes_the_best_throughput_within_the_budget():
    trials = [trial(1, 1000, 10), trial(2, 3000, 40), trial(3, 2500, 20)]
    assert recommend(trials, 30).number == 3
    assert recommend(trials, 50).number == 2


def test_recommend_falls_back_to_the_lowest_p99_when_nothing_meets_the_budget():
    trials = [trial(1, 1000, 60), trial(2, 3000, 40)]
    assert recommend(trials, 10).number == 2


def test_failed_trials_and_trials_with_errors_are_never_recommended():
    trials = [trial(1, 9000, 1, errors=3), trial(2, 9000, 1, error="load failed"), trial(3, 100, 5)]
    assert recommend(trials, 10).number == 3
    assert recommend([trial(1, 1, 1, error="x")], 10) is None


def test_pareto_front_keeps_only_undominated_trials_by_latency():
    trials = [
        trial(1, 1000, 10),
        trial(2, 3000, 40),
        trial(3, 2500, 20),
        trial(4, 2000, 30),  # dominated by 3 (more throughput, less latency)
        trial(5, 900, 12),  # dominated by 1
    ]
    assert [t.number for t in pareto_front(trials)] == [1, 3, 2]


def test_table_marks_the_front_and_over_budget_and_shows_failures():
    trials = [trial(1, 1000, 10), trial(2, 3000, 40), trial(3, 10, 50, error="boom")]
    lines = table(trials, 30, [trials[0]])
    assert "infer/s" in lines[0]
    assert lines[1].startswith("  1*") and lines[2].startswith("  2!")
    assert "failed: boom" in lines[3]
    assert "3000" in lines[2] and "40.00" in lines[2]


def test_a_change_must_beat_the_config_as_it_is_by_more_than_the_noise():
    incumbent = trial(1, 1000, 10)  # repeats 900/1000/1100: spread 20%, margin 5% + 10%
    slightly = trial(2, 1100, 10)
    clearly = trial(3, 1200, 10)
    assert recommend([incumbent, slightly], 50, incumbent=incumbent) is incumbent
    assert recommend([incumbent, slightly, clearly], 50, incumbent=incumbent) is clearly
    # an incumbent over the budget is no reason to keep it
    slow = trial(4, 1000, 80)
    assert recommend([slow, slightly], 50, incumbent=slow) is slightly
