"""The tune chart: well-formed SVG, one marker per usable point, escaped labels, axis choice."""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from repoman.tune.plot import PlotPoint, RawPoint, render_svg, write_plot

NS = "{http://www.w3.org/2000/svg}"
NAN = float("nan")


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg"
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    return root


def group(root: ET.Element, name: str) -> ET.Element | None:
    return root.find(f".//{NS}g[@class='{name}']")


def markers(root: ET.Element) -> list[ET.Element]:
    return [c for c in root.iter(f"{NS}circle") if "point" in c.get("class", "").split()]


def tooltip(marker: ET.Element) -> str:
    """The label a marker's <title> starts with (the text before the numbers)."""
    title = marker.find(f"{NS}title")
    assert title is not None and title.text
    return title.text.rsplit(": ", 1)[0]


def texts(root: ET.Element, cls: str | None = None) -> list[str]:
    found = root.iter(f"{NS}text")
    return [t.text or "" for t in found if cls is None or t.get("class") == cls]


def tick_positions(root: ET.Element) -> dict[str, float]:
    return {
        t.text or "": float(t.get("x", ""))
        for t in root.iter(f"{NS}text")
        if t.get("class") == "x-tick"
    }


def sample_points() -> list[PlotPoint]:
    return [
        PlotPoint("#1 bs1", 800.0, 1.2, pareto=True),
        PlotPoint("#2 bs8", 3000.0, 4.0, pareto=True, recommended=True),
        PlotPoint("#3 bs8 d2ms", 2500.0, 6.5),
        PlotPoint("#4 bs32", 3400.0, 9.0, pareto=True, within_budget=False),
        PlotPoint("#5 failed", 0.0, NAN),
    ]


def test_one_circle_per_usable_point_and_nan_is_skipped():
    root = parse(render_svg(sample_points(), [], title="t"))
    circles = markers(root)
    assert len(circles) == 4
    assert sorted(tooltip(c) for c in circles) == ["#1 bs1", "#2 bs8", "#3 bs8 d2ms", "#4 bs32"]
    assert "#5 failed" not in ET.tostring(root, encoding="unicode")


@pytest.mark.parametrize(
    "bad",
    [
        PlotPoint("zero", 10.0, 0.0),
        PlotPoint("negative", 10.0, -3.0),
        PlotPoint("inf", 10.0, math.inf),
        PlotPoint("no throughput", NAN, 3.0),
    ],
)
def test_unusable_values_are_skipped(bad: PlotPoint):
    root = parse(render_svg([bad, PlotPoint("ok", 5.0, 2.0)], [], title="t"))
    assert len(markers(root)) == 1


def test_recommended_point_is_bigger_ringed_and_labelled():
    root = parse(render_svg(sample_points(), [], title="t"))
    [best] = [c for c in markers(root) if "recommended" in c.get("class", "")]
    others = [c for c in markers(root) if c is not best]
    assert all(float(best.get("r", "")) > float(c.get("r", "")) for c in others)
    ring = [c for c in root.iter(f"{NS}circle") if c.get("fill") == "none"]
    assert any((c.get("cx"), c.get("cy")) == (best.get("cx"), best.get("cy")) for c in ring)
    assert "#2 bs8" in texts(root)
    assert "#1 bs1" not in texts(root)  # the others only get a tooltip


def test_colour_tells_within_budget_from_over_budget():
    root = parse(render_svg(sample_points(), [], title="t", latency_budget_ms=8.0))
    fills = {tooltip(c): c.get("fill") for c in markers(root)}
    assert fills["#4 bs32"] != fills["#1 bs1"] == fills["#3 bs8 d2ms"]


def test_pareto_line_joins_front_points_in_latency_order():
    points = [
        PlotPoint("c", 30.0, 9.0, pareto=True),
        PlotPoint("a", 10.0, 1.0, pareto=True),
        PlotPoint("off", 5.0, 5.0),
        PlotPoint("b", 20.0, 4.0, pareto=True),
    ]
    root = parse(render_svg(points, [], title="t"))
    [line] = root.iter(f"{NS}polyline")
    xs = [float(pair.split(",")[0]) for pair in (line.get("points") or "").split()]
    assert len(xs) == 3
    assert xs == sorted(xs)


@pytest.mark.parametrize("label", ["#7 <bs8> & \"quoted\" 'x'", "a]]>b", "ctl\x01char"])
def test_labels_are_escaped_and_round_trip(label: str):
    points = [PlotPoint(label, 10.0, 2.0, recommended=True), PlotPoint(label + "!", 5.0, 1.0)]
    svg = render_svg(points, [], title=f"model {label}")
    root = parse(svg)
    expected = label.replace("\x01", "\ufffd")  # XML cannot carry control characters
    assert expected in texts(root)
    assert f"model {expected}" in texts(root, "title")
    assert sorted(tooltip(c) for c in markers(root)) == sorted([expected, expected + "!"])
    if "<" in label:
        assert "<bs8>" not in svg


def test_raw_curve_has_a_marker_and_a_batch_label_per_batch_size():
    raw = [RawPoint(b, b / (0.5 + 0.1 * b) * 1000, 0.5 + 0.1 * b) for b in (4, 1, 2, 8)]
    raw.append(RawPoint(16, NAN, NAN))  # not measured: skipped
    root = parse(render_svg(sample_points(), raw, title="t"))
    curve = group(root, "raw")
    assert curve is not None
    assert len(list(curve.iter(f"{NS}rect"))) == 4
    assert texts(curve) == ["b1", "b2", "b4", "b8"]
    [line] = curve.iter(f"{NS}polyline")
    assert line.get("stroke-dasharray")
    assert "raw backend" in texts(root)


def test_no_raw_curve_without_raw_points():
    root = parse(render_svg(sample_points(), [], title="t"))
    assert group(root, "raw") is None
    assert "raw backend" not in texts(root)


def test_budget_line_only_when_a_budget_is_given():
    with_budget = parse(render_svg(sample_points(), [], title="t", latency_budget_ms=7.5))
    budget = group(with_budget, "budget")
    assert budget is not None
    [line] = budget.iter(f"{NS}line")
    assert line.get("x1") == line.get("x2")
    assert line.get("stroke-dasharray")
    assert texts(budget) == ["budget 7.5 ms"]

    for value in (None, NAN, 0.0):
        without = parse(render_svg(sample_points(), [], title="t", latency_budget_ms=value))
        assert group(without, "budget") is None
        assert not any(t.startswith("budget") for t in texts(without))


def test_wide_latency_range_gets_a_log_axis():
    points = [PlotPoint(str(ms), 100.0, ms) for ms in (1.0, 3.0, 10.0, 40.0, 100.0)]
    root = parse(render_svg(points, [], title="t"))
    ticks = tick_positions(root)
    assert {"1", "10", "100"} <= ticks.keys()
    # Decades are equally far apart on a log axis.
    assert ticks["10"] - ticks["1"] == pytest.approx(ticks["100"] - ticks["10"], abs=0.1)
    # log 2 - log 1 = log 10 - log 5 < log 5 - log 2
    assert ticks["2"] - ticks["1"] == pytest.approx(ticks["10"] - ticks["5"], abs=0.1)
    assert ticks["5"] - ticks["2"] > ticks["2"] - ticks["1"] > 0
    assert any("log scale" in t for t in texts(root))


def test_narrow_latency_range_gets_a_linear_axis():
    points = [PlotPoint(str(ms), 100.0 * ms, ms) for ms in (2.0, 5.0, 9.0, 13.0)]
    root = parse(render_svg(points, [], title="t"))
    ticks = sorted((float(label), x) for label, x in tick_positions(root).items())
    values = [v for v, _ in ticks]
    steps = {round(b - a, 9) for a, b in itertools.pairwise(values)}
    assert len(steps) == 1
    assert steps.pop() in (1, 2, 5, 10)  # a 1-2-5 step
    gaps = {round(b[1] - a[1], 1) for a, b in itertools.pairwise(ticks)}
    assert len(gaps) == 1
    assert values[0] <= 2.0 and values[-1] >= 13.0
    assert not any("log scale" in t for t in texts(root))


def test_y_axis_starts_at_zero():
    root = parse(render_svg(sample_points(), [], title="t"))
    labels = texts(root, "y-tick")
    assert labels[0] == "0"
    assert float(labels[-1]) >= 3400.0


@pytest.mark.parametrize(
    ("points", "raw"),
    [
        ([], []),
        ([PlotPoint("nothing", 0.0, NAN)], [RawPoint(1, NAN, NAN)]),
    ],
)
def test_no_data_is_still_a_chart(points: list[PlotPoint], raw: list[RawPoint]):
    root = parse(render_svg(points, raw, title="empty"))
    assert markers(root) == []
    assert "no data" in texts(root)
    assert "p99 latency (ms)" in texts(root)
    assert "throughput (infer/s)" in texts(root)
    assert texts(root, "x-tick") and texts(root, "y-tick")


@pytest.mark.parametrize(
    "points",
    [
        [PlotPoint("one", 50.0, 5.0, recommended=True, pareto=True)],
        [PlotPoint(str(i), 50.0, 5.0) for i in range(3)],  # all equal
        [PlotPoint("tiny", 1e-6, 1e-4), PlotPoint("huge", 1e7, 1e5)],
    ],
)
def test_degenerate_ranges_still_place_points_inside_the_plot(points: list[PlotPoint]):
    root = parse(render_svg(points, [], title="t"))
    circles = markers(root)
    assert len(circles) == len(points)
    width, height = float(root.get("width", "")), float(root.get("height", ""))
    for c in circles:
        x, y = float(c.get("cx", "")), float(c.get("cy", ""))
        assert 0 < x < width and 0 < y < height
    assert "no data" not in texts(root)


def test_legend_names_what_is_drawn():
    raw = [RawPoint(1, 100.0, 10.0)]
    root = parse(render_svg(sample_points(), raw, title="t", latency_budget_ms=8.0))
    legend = group(root, "legend")
    assert legend is not None
    assert {"configuration", "Pareto front", "recommended", "raw backend", "budget"} <= set(
        texts(legend)
    )


def test_write_plot_writes_svg(tmp_path: Path):
    path = tmp_path / "tune.svg"
    write_plot(path, sample_points(), [], title="t", latency_budget_ms=5.0)
    text = path.read_text(encoding="utf-8")
    assert text == render_svg(sample_points(), [], title="t", latency_budget_ms=5.0)
    parse(text)


@pytest.mark.parametrize("name", ["tune.png", "tune", "tune.svg.pdf"])
def test_write_plot_refuses_other_formats(tmp_path: Path, name: str):
    path = tmp_path / name
    with pytest.raises(ValueError, match="SVG") as raised:
        write_plot(path, sample_points(), [], title="t")
    assert str(path) in str(raised.value)
    assert not path.exists()
