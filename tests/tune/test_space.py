"""The tuner's search space: settings applied to configs, and the roofline's pruning rules."""

from __future__ import annotations

import pytest

from repoman.config import parse_model_config
from repoman.tune.space import (
    RooflinePoint,
    Settings,
    batch_candidates,
    cortex_batch,
    delay_candidates,
    instance_candidates,
    knee,
    roofline_sizes,
    settings_of,
    variations,
)

BASE = {
    "name": "m",
    "platform": "onnxruntime_onnx",
    "max_batch_size": 8,
    "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [2]}],
    "dynamic_batching": {
        "max_queue_delay_microseconds": 100,
        "priority_levels": 2,
        "default_priority_level": 1,
        "allowed_batch_sizes": [4, 8, 16],
    },
    "instance_group": [{"name": "m_0", "kind": "KIND_CPU", "count": 1}],
}


def curve(*ms_per_batch: float) -> list[RooflinePoint]:
    """A roofline from the time of a batch of 1, 2, 4, ... in ms."""
    return [RooflinePoint(1 << k, t / 1e3) for k, t in enumerate(ms_per_batch)]


# a model that batches well up to 16 (throughput 1000, 1800, 3200, 5000, 6000, 6100/s)
HEAVY = curve(1.0, 1.111, 1.25, 1.6, 2.667, 5.246)
# a tiny model: the raw time hardly grows with the batch (fixed cost dominates)
TINY = curve(0.03, 0.03, 0.031, 0.032, 0.034, 0.036, 0.04, 0.05)


def test_settings_apply_replaces_only_the_tuned_fields_and_keeps_the_rest():
    tuned = Settings(max_batch_size=16, batching=True, delay_us=2000, preferred=(8,), instances=2)
    out = tuned.apply(BASE)
    assert out["max_batch_size"] == 16
    assert out["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
    assert out["dynamic_batching"]["preferred_batch_size"] == [8]
    assert out["dynamic_batching"]["priority_levels"] == 2  # kept
    assert out["dynamic_batching"]["allowed_batch_sizes"] == [4, 8, 16]
    assert out["instance_group"][0]["count"] == 2
    assert BASE["max_batch_size"] == 8 and BASE["instance_group"][0]["count"] == 1  # untouched
    # the result is a config repoman accepts
    import json

    parse_model_config(json.dumps(out), filename="t", fmt="yaml", model_name="m")


def test_settings_apply_drops_allowed_sizes_above_the_new_maximum_and_batching_off_drops_it_all():
    small = Settings(max_batch_size=4, batching=True).apply(BASE)
    assert small["dynamic_batching"]["allowed_batch_sizes"] == [4]
    off = Settings(max_batch_size=8, batching=False).apply(BASE)
    assert "dynamic_batching" not in off and off["max_batch_size"] == 8


def test_settings_of_reads_a_config_back_and_describe_is_short_and_distinct():
    assert settings_of(BASE) == Settings(8, True, 100, (), 1)
    assert settings_of(Settings(16, True, 2000, (8,), 2).apply(BASE)) == Settings(
        16, True, 2000, (8,), 2
    )
    described = {
        Settings(8, False).describe(),
        Settings(8, True).describe(),
        Settings(8, True, 500).describe(),
        Settings(8, True, 2000, (4,)).describe(),
        Settings(8, True, 2000, (4,), 2).describe(),
    }
    assert len(described) == 5
    assert Settings(16, True, 2000, (8,), 2).describe() == "bs16 d2ms pref8 x2"
    assert Settings(8, False).describe() == "no batching x1"


def test_a_model_without_batching_keeps_max_batch_size_zero():
    unbatched = dict(BASE, max_batch_size=0)
    unbatched.pop("dynamic_batching")
    out = Settings(0, False, instances=2).apply(unbatched)
    assert out["max_batch_size"] == 0 and "dynamic_batching" not in out
    assert out["instance_group"][0]["count"] == 2


def test_knee_is_where_a_bigger_batch_stops_helping():
    assert knee(HEAVY) == 16  # 5000/s is under 90% of 6100, 6000 is over
    assert knee(curve(1.0, 2.0, 4.0)) == 1  # no gain at all from batching


def test_cortex_rule_is_single_request_throughput_times_the_wait():
    assert cortex_batch(HEAVY, 0.010) == 10  # 1000/s x 10 ms
    assert cortex_batch(TINY, 0.010) == 333


@pytest.mark.parametrize(
    ("roofline", "budget_s", "concurrency", "expected"),
    [
        (HEAVY, 1.0, 64, [2, 4, 8, 16, 32]),  # up to twice the knee
        (HEAVY, 0.008, 64, [2, 4, 8, 16]),  # batch 32 alone takes 5.2 ms > half of 8 ms
        (HEAVY, 1.0, 8, [2, 4, 8]),  # 8 clients never queue more than 8
        (HEAVY, 1.0, 12, [2, 4, 8, 16]),
        (TINY, 0.05, 256, [2, 8, 16, 32, 128]),  # at most five, spread, the top kept
        (curve(1.0, 2.0, 4.0), 1.0, 64, [2, 4]),  # Cortex says 500: only what was measured
        (curve(1.0, 2.0, 4.0), 0.002, 64, [2]),  # batching never helps: still try the least
    ],
)
def test_batch_candidates_are_pruned_by_the_roofline(roofline, budget_s, concurrency, expected):
    assert batch_candidates(roofline, budget_s, concurrency) == expected


def test_delay_candidates_climb_from_half_a_batch_time_within_ten_ms_and_a_quarter_budget():
    best = Settings(16, True, 0)
    assert delay_candidates(HEAVY, best, 1.0) == [1300, 5300, 10000]
    assert delay_candidates(HEAVY, best, 0.02) == [1300, 5000]  # a quarter of 20 ms
    assert delay_candidates(TINY, Settings(8, True, 0), 1.0) == [50, 200, 800]
    # the delay already measured is not measured again
    assert 200 not in delay_candidates(TINY, Settings(8, True, 200), 1.0)


def test_variations_add_the_knee_as_preferred_size_only_below_the_maximum():
    found = variations(HEAVY, Settings(32, True, 0), 1.0)
    assert Settings(32, True, 0, (16,)) in found
    assert all(s.max_batch_size == 32 for s in found)
    assert not [s for s in variations(HEAVY, Settings(16, True, 0), 1.0) if s.preferred]


def test_instance_candidates_go_up_to_one_per_core():
    assert instance_candidates(Settings(8, True), cores=2) == [Settings(8, True, instances=2)]
    assert instance_candidates(Settings(8, True), cores=1) == []
    assert [s.instances for s in instance_candidates(Settings(8, True), cores=8)] == [2, 3]


def test_roofline_sizes_are_powers_of_two():
    assert roofline_sizes(100) == [1, 2, 4, 8, 16, 32, 64]
    assert roofline_sizes(1) == [1]
