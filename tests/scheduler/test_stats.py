"""Per-version statistics: histograms merged from another process add up exactly."""

from __future__ import annotations

import pytest

from repoman.scheduler.stats import SECONDS_BUCKETS, Histogram


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
