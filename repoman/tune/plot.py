"""An SVG chart of ``repoman tune``'s configurations (throughput against p99), drawn by hand."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PlotPoint", "RawPoint", "render_svg", "write_plot"]

SVG_NS = "http://www.w3.org/2000/svg"
WIDTH, HEIGHT = 800, 500
# The plot area in pixels; the margin right of it holds the legend.
LEFT, RIGHT, TOP, BOTTOM = 70, 610, 50, 440
MID_X, MID_Y = (LEFT + RIGHT) / 2, (TOP + BOTTOM) / 2
LOG_RATIO = 20  # wider x ranges go on a log axis, or the fast configurations crowd at the left
LABEL_MINOR_DECADES = 4  # a log axis this many decades wide or less also labels its 2s and 5s
BLUE, GREY, GREEN, RED, ORANGE = "#1f77b4", "#a8a8a8", "#2ca02c", "#d62728", "#ff7f0e"
INK, GRID = "#333333", "#e6e6e6"
# XML 1.0 allows no control characters but tab and newlines, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


@dataclass(frozen=True)
class PlotPoint:
    """One configuration tried: its throughput and p99 latency."""

    label: str  # short text such as "#3 bs16 d2ms x1"; any characters (they are escaped)
    throughput: float  # inferences/s
    p99_ms: float  # nan when nothing succeeded: such points are not drawn
    recommended: bool = False
    pareto: bool = False  # on the Pareto front (higher throughput, lower p99)
    within_budget: bool = True


@dataclass(frozen=True)
class RawPoint:
    """The raw backend (no server) at one batch size: one batch's time and the throughput."""

    batch_size: int
    throughput: float  # inferences/s = batch_size / seconds per batch
    latency_ms: float  # milliseconds per batch


@dataclass(frozen=True)
class _Axis:
    """A value range mapped onto a pixel range, linear or log10, with its ticks."""

    lo: float
    hi: float
    start: float  # the pixel of ``lo``
    end: float  # the pixel of ``hi``
    log: bool
    ticks: tuple[float, ...]
    labels: tuple[str, ...]  # one per tick; "" leaves a tick unlabelled

    def at(self, value: float) -> float:
        scale = math.log10 if self.log else float
        share = (scale(value) - scale(self.lo)) / (scale(self.hi) - scale(self.lo))
        return self.start + share * (self.end - self.start)


def _fmt(value: float) -> str:
    """A tick value without float noise: 0.30000000000000004 -> "0.3", 2000.0 -> "2000"."""
    if abs(value - round(value)) < 1e-9 * max(1.0, abs(value)):
        return str(round(value))
    return f"{value:.6g}"


def _nice_step(rough: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``rough``."""
    power = 10.0 ** math.floor(math.log10(rough))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= rough * (1 - 1e-9))


def _linear_axis(values: Sequence[float], start: float, end: float, *, from_zero: bool) -> _Axis:
    lo = 0.0 if from_zero or not values else min(values)
    hi = max(values, default=1.0)
    # A margin so that no point sits on the frame; one value (or all equal) gets a range of its own.
    pad = (hi - lo) * 0.05 if hi > lo else (abs(hi) * 0.1 or 1.0)
    lo, hi = (lo if from_zero else max(0.0, lo - pad)), hi + pad
    step = _nice_step((hi - lo) / 6)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    ticks = tuple(lo + i * step for i in range(round((hi - lo) / step) + 1))
    return _Axis(lo, hi, start, end, False, ticks, tuple(_fmt(t) for t in ticks))


def _log_axis(values: Sequence[float], start: float, end: float) -> _Axis:
    low, high = min(values), max(values)
    # One decade below floor(log10) guards against log10 rounding up just under a power of ten.
    decades = range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
    steps = [(m * 10.0**d, m) for d in decades for m in (1, 2, 5)]
    lo = max(s for s, _ in steps if s <= low)
    hi = min(s for s, _ in steps if s >= high)
    kept = [(s, m) for s, m in steps if lo <= s <= hi]
    minor = math.log10(hi / lo) <= LABEL_MINOR_DECADES
    labels = tuple(_fmt(s) if minor or m == 1 else "" for s, m in kept)
    return _Axis(lo, hi, start, end, True, tuple(s for s, _ in kept), labels)


def _num(value: str | float) -> str:
    return value if isinstance(value, str) else f"{round(value, 2):g}"


def _add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str | float) -> ET.Element:
    """Append a child; ``font_size=11`` is written ``font-size="11"``, ``class_`` is ``class``."""
    names = {key: key.rstrip("_").replace("_", "-") for key in attrs}
    child = ET.SubElement(parent, tag, {names[k]: _num(v) for k, v in attrs.items()})
    child.text = None if text is None else _NOT_XML.sub("\ufffd", text)
    return child


def _usable(value: float) -> bool:
    # nan (nothing measured), infinities and values <= 0 have no place on a log axis either.
    return math.isfinite(value) and value > 0


def render_svg(
    points: Sequence[PlotPoint],
    raw: Sequence[RawPoint],
    *,
    title: str,
    latency_budget_ms: float | None = None,
) -> str:
    """The chart as SVG text: x = p99 latency (ms), y = throughput; unusable values are skipped."""
    shown = [p for p in points if _usable(p.p99_ms) and _usable(p.throughput)]
    curve = sorted(
        (r for r in raw if _usable(r.latency_ms) and _usable(r.throughput)),
        key=lambda r: r.batch_size,
    )
    usable_budget = latency_budget_ms is not None and _usable(latency_budget_ms)
    budget = latency_budget_ms if usable_budget else None
    xs = [p.p99_ms for p in shown] + [r.latency_ms for r in curve] + ([budget] if budget else [])
    ys = [p.throughput for p in shown] + [r.throughput for r in curve]
    if xs and max(xs) / min(xs) > LOG_RATIO:
        x = _log_axis(xs, LEFT, RIGHT)
    else:
        x = _linear_axis(xs, LEFT, RIGHT, from_zero=False)
    y = _linear_axis(ys, BOTTOM, TOP, from_zero=True)

    size = {"width": str(WIDTH), "height": str(HEIGHT), "viewBox": f"0 0 {WIDTH} {HEIGHT}"}
    font = {"font-family": "sans-serif", "font-size": "11"}
    svg = ET.Element("svg", {"xmlns": SVG_NS, **size, **font})
    _add(svg, "rect", width=WIDTH, height=HEIGHT, fill="white")
    _add(svg, "text", title, x=WIDTH / 2, y=28, text_anchor="middle", font_size=16, class_="title")
    _draw_axes(svg, x, y)
    if budget:
        _draw_budget(svg, x, budget)
    if curve:
        _draw_raw(svg, x, y, curve)
    _draw_points(svg, x, y, shown)
    _draw_legend(svg, raw=bool(curve), budget=budget is not None)
    if not shown and not curve:
        _add(svg, "text", "no data", x=MID_X, y=MID_Y, text_anchor="middle", fill=GREY)
    ET.indent(svg)
    return ET.tostring(svg, encoding="unicode") + "\n"


def write_plot(
    path: Path,
    points: Sequence[PlotPoint],
    raw: Sequence[RawPoint],
    *,
    title: str,
    latency_budget_ms: float | None = None,
) -> None:
    """Write render_svg's text to ``path``; raises ValueError naming the path when its suffix
    is not .svg (only SVG is written)."""
    if path.suffix.lower() != ".svg":
        raise ValueError(f"{path}: only SVG plots are written; give the file a .svg suffix")
    svg = render_svg(points, raw, title=title, latency_budget_ms=latency_budget_ms)
    path.write_text(svg, encoding="utf-8")


def _draw_axes(svg: ET.Element, x: _Axis, y: _Axis) -> None:
    axes = _add(svg, "g", class_="axes")
    for value, label in zip(x.ticks, x.labels, strict=True):
        px = x.at(value)
        _add(axes, "line", x1=px, x2=px, y1=TOP, y2=BOTTOM, stroke=GRID)
        if label:
            _add(axes, "text", label, x=px, y=BOTTOM + 16, text_anchor="middle", class_="x-tick")
    for value, label in zip(y.ticks, y.labels, strict=True):
        py = y.at(value)
        _add(axes, "line", x1=LEFT, x2=RIGHT, y1=py, y2=py, stroke=GRID)
        _add(axes, "text", label, x=LEFT - 6, y=py + 4, text_anchor="end", class_="y-tick")
    _add(axes, "path", d=f"M{LEFT},{TOP}H{RIGHT}V{BOTTOM}H{LEFT}Z", fill="none", stroke=INK)
    x_label = "p99 latency (ms)" + (", log scale" if x.log else "")
    _add(axes, "text", x_label, x=MID_X, y=BOTTOM + 38, text_anchor="middle")
    y_label = _add(axes, "text", "throughput (infer/s)", x=18, y=MID_Y, text_anchor="middle")
    y_label.set("transform", f"rotate(-90 18 {MID_Y})")


def _draw_budget(svg: ET.Element, x: _Axis, budget: float) -> None:
    group = _add(svg, "g", class_="budget")
    px = x.at(budget)
    _add(group, "line", x1=px, x2=px, y1=TOP, y2=BOTTOM, stroke=RED, stroke_dasharray="6 4")
    # Near the right edge the label goes left of the line, to stay clear of the legend.
    tx, anchor = (px - 4, "end") if px > RIGHT - 100 else (px + 4, "start")
    label = f"budget {_fmt(budget)} ms"
    _add(group, "text", label, x=tx, y=TOP + 14, text_anchor=anchor, fill=RED)


def _draw_raw(svg: ET.Element, x: _Axis, y: _Axis, curve: Sequence[RawPoint]) -> None:
    group = _add(svg, "g", class_="raw")
    line = " ".join(f"{_num(x.at(r.latency_ms))},{_num(y.at(r.throughput))}" for r in curve)
    _add(group, "polyline", points=line, fill="none", stroke=GREEN, stroke_dasharray="5 3")
    for r in curve:
        px, py = x.at(r.latency_ms), y.at(r.throughput)
        marker = _add(group, "rect", x=px - 3, y=py - 3, width=6, height=6, fill=GREEN)
        _add(marker, "title", f"raw backend, batch {r.batch_size}: {r.throughput:.1f} infer/s")
        _add(group, "text", f"b{r.batch_size}", x=px + 5, y=py + 13, fill=GREEN, font_size=10)


def _draw_points(svg: ET.Element, x: _Axis, y: _Axis, shown: Sequence[PlotPoint]) -> None:
    front = sorted((p for p in shown if p.pareto), key=lambda p: p.p99_ms)
    if front:
        line = " ".join(f"{_num(x.at(p.p99_ms))},{_num(y.at(p.throughput))}" for p in front)
        _add(svg, "polyline", points=line, fill="none", stroke=BLUE, class_="pareto")
    group = _add(svg, "g", class_="points")
    # The recommended points go last so that nothing is drawn over them.
    for p in sorted(shown, key=lambda p: p.recommended):
        px, py = x.at(p.p99_ms), y.at(p.throughput)
        colour = BLUE if p.within_budget else GREY
        kind, size = ("point recommended", 7) if p.recommended else ("point", 4)
        marker = _add(group, "circle", cx=px, cy=py, r=size, fill=colour, class_=kind)
        _add(marker, "title", f"{p.label}: {p.throughput:.1f} infer/s, p99 {p.p99_ms:.3g} ms")
        if p.recommended:
            _add(group, "circle", cx=px, cy=py, r=11, fill="none", stroke=ORANGE, stroke_width=2)
            # Write the label on the side with room, so it stays inside the plot area.
            left = px > RIGHT - 150
            tx, ty = (px - 15 if left else px + 15), (py + 20 if py < TOP + 25 else py - 10)
            anchor = "end" if left else "start"
            _add(group, "text", p.label, x=tx, y=ty, text_anchor=anchor, font_weight="bold")


def _draw_legend(svg: ET.Element, *, raw: bool, budget: bool) -> None:
    group = _add(svg, "g", class_="legend")
    rows = ["configuration", *(["over budget"] if budget else []), "Pareto front", "recommended"]
    rows += (["raw backend"] if raw else []) + (["budget"] if budget else [])
    for i, row in enumerate(rows):
        mx, my = RIGHT + 25, TOP + 10 + 22 * i
        if row in ("configuration", "over budget"):
            _add(group, "circle", cx=mx, cy=my, r=4, fill=BLUE if row == "configuration" else GREY)
        elif row == "recommended":
            _add(group, "circle", cx=mx, cy=my, r=7, fill=BLUE)
            _add(group, "circle", cx=mx, cy=my, r=11, fill="none", stroke=ORANGE, stroke_width=2)
        else:
            colour = {"Pareto front": BLUE, "raw backend": GREEN, "budget": RED}[row]
            dash = "0" if row == "Pareto front" else "5 3"
            _add(group, "path", d=f"M{mx - 12},{my}h24", stroke=colour, stroke_dasharray=dash)
            if row == "raw backend":
                _add(group, "rect", x=mx - 3, y=my - 3, width=6, height=6, fill=GREEN)
        _add(group, "text", row, x=mx + 20, y=my + 4)
