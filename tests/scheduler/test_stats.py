"""Per-version statistics: histograms merged from another process add up exactly; many
requests recorded in one call count as each recorded alone."""

from __future__ import annotations

import pytest

from repoman.scheduler.stats import SECONDS_BUCKETS, Histogram, VersionStats


def test_a_merged_histogram_equals_one_that_saw_every_observation() -> None:
    values = [0.00005, 0.0003, 0.0003, 0.02, 7.0, 30.0]
    direct, here, elsewhere = (Histogram(SECONDS_BUCKETS) for _ in range(3))
    for index, value in enumerate(values):
        direct.observe(value)
        (here if index % 2 else elsewhere).observe(value)
    here.merge(elsewhere.counts, elsewhere.total)
    assert here.counts == direct.counts
    assert here.total == pytest.approx(direct.total)


def test_merging_counts_of_other_bounds_is_refused() -> None:
    with pytest.raises(ValueError, match="bucket counts"):
        Histogram(SECONDS_BUCKETS).merge([1, 2], 0.5)


def test_executions_recorded_together_count_as_each_recorded_alone() -> None:
    # NOTE: an ensemble's cohort records its answered requests in one call
    elapsed = [1_200_000, 40_000, 3_000_000_000]
    queued = [50_000, 0, 2_000_000]
    rows = [1, 4, 1]
    computes = [(10, 2_000, 30), (0, 7_000_000, 5), (1, 1, 1)]
    alone, together = VersionStats(), VersionStats()
    for each in zip(elapsed, queued, rows, computes, strict=True):
        spent, waited, size, (input_ns, infer_ns, output_ns) = each
        alone.record_success(spent)
        alone.record_queued(waited / 1e9)
        alone.record_batch(size, 1, input_ns=input_ns, infer_ns=infer_ns, output_ns=output_ns)
    together.record_executions(elapsed, queued, rows, computes)
    mine, theirs = together.as_dict("m", 1), alone.as_dict("m", 1)
    assert abs(mine.pop("last_inference") - theirs.pop("last_inference")) < 1000
    assert mine == theirs
    for name in (
        "request_seconds",
        "queue_seconds",
        "batch_sizes",
        "batch_wait_seconds",
        "compute_seconds",
    ):
        seen, expected = getattr(together, name), getattr(alone, name)
        assert seen.counts == expected.counts, name
        assert seen.total == pytest.approx(expected.total), name
    assert together.as_dict("m", 1)["execution_count"] == 3
    assert together.as_dict("m", 1)["inference_count"] == 6
