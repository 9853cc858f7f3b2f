"""The batching settings ``repoman tune`` tries, and how the raw backend's curve prunes them."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

KNEE_FRACTION = 0.9
"""The roofline's knee: the smallest batch reaching this fraction of the best raw throughput."""
MAX_DELAY_US = 10_000
"""TF Serving's guidance for CPUs: a batch timeout between 0 and 10 ms."""
MAX_BATCH_CANDIDATES = 5
MIN_DELAY_US = 50
DELAY_STEPS = 3


@dataclass(frozen=True)
class RooflinePoint:
    """The raw backend (no server, no HTTP) running one batch of ``batch_size`` rows."""

    batch_size: int
    seconds: float  # median time of one batch
    spread: float = 0.0  # (slowest - fastest) / median of the repeats

    @property
    def throughput(self) -> float:
        return self.batch_size / self.seconds


@dataclass(frozen=True)
class Settings:
    """The knobs tuned: they replace the same fields of the model's own config."""

    max_batch_size: int
    batching: bool  # dynamic_batching on
    delay_us: int = 0
    preferred: tuple[int, ...] = ()
    instances: int = 1

    def describe(self) -> str:
        """Short and unique, e.g. ``bs16 d500us pref8 x2`` or ``no batching x1``."""
        if not self.batching:
            return f"no batching x{self.instances}"
        text = f"bs{self.max_batch_size} d{_delay(self.delay_us)}"
        if self.preferred:
            text += " pref" + ",".join(map(str, self.preferred))
        return f"{text} x{self.instances}"

    def apply(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` (a normalised config dict) with these settings; the input is not changed.

        Other dynamic-batching fields (priorities, queue policies, ordering) are kept.
        """
        out = copy.deepcopy(config)
        if out.get("max_batch_size", 0) > 0:
            out["max_batch_size"] = self.max_batch_size
        if self.batching and out.get("max_batch_size", 0) > 0:
            dynamic = dict(out.get("dynamic_batching") or {})
            dynamic["max_queue_delay_microseconds"] = self.delay_us
            if self.preferred:
                dynamic["preferred_batch_size"] = list(self.preferred)
            else:
                dynamic.pop("preferred_batch_size", None)
            allowed = [
                s for s in dynamic.get("allowed_batch_sizes", []) if s <= self.max_batch_size
            ]
            if allowed:
                dynamic["allowed_batch_sizes"] = allowed
            else:
                dynamic.pop("allowed_batch_sizes", None)
            out["dynamic_batching"] = dynamic
        else:
            out.pop("dynamic_batching", None)
        groups = [dict(group) for group in out.get("instance_group") or [{"kind": "KIND_CPU"}]]
        # NOTE: only a single group is resized; several groups (GPUs, say) are the user's layout.
        if len(groups) == 1:
            groups[0]["count"] = self.instances
        out["instance_group"] = groups
        return out


def settings_of(config: dict[str, Any]) -> Settings:
    """The settings a normalised config dict has now."""
    dynamic = config.get("dynamic_batching")
    groups = config.get("instance_group") or [{}]
    max_batch_size = int(config.get("max_batch_size", 0))
    return Settings(
        max_batch_size=max_batch_size,
        batching=dynamic is not None and max_batch_size > 0,
        delay_us=int((dynamic or {}).get("max_queue_delay_microseconds", 0)),
        preferred=tuple((dynamic or {}).get("preferred_batch_size", ())),
        instances=sum(int(group.get("count", 1)) for group in groups),
    )


def knee(roofline: Sequence[RooflinePoint]) -> int:
    """Where a bigger batch stops helping: the smallest batch within 90% of the best."""
    best = max(point.throughput for point in roofline)
    return min(p.batch_size for p in roofline if p.throughput >= KNEE_FRACTION * best)


def cortex_batch(roofline: Sequence[RooflinePoint], wait_s: float) -> int:
    """Cortex's rule of thumb: max batch ~ single-request throughput x acceptable wait."""
    single = next((p for p in roofline if p.batch_size == 1), roofline[0])
    return max(1, int(single.throughput * wait_s))


def batch_candidates(
    roofline: Sequence[RooflinePoint], budget_s: float, max_concurrency: int
) -> list[int]:
    """max_batch_size values worth measuring, at most MAX_BATCH_CANDIDATES, ascending.

    Powers of two up to twice the knee (or Cortex's size when that is bigger), but never
    above the highest concurrency (a closed loop of C clients never has more than C requests
    queued, so a bigger batch can never form), and never one whose raw batch alone takes over
    half the latency budget (it cannot meet the budget with any queueing at all).
    """
    limit = max(2 * knee(roofline), _pow2_floor(cortex_batch(roofline, budget_s / 2)))
    limit = min(limit, _pow2_ceil(max_concurrency))
    measured = {p.batch_size: p for p in roofline}
    top = max(measured)
    sizes = []
    size = 2
    while size <= min(limit, top):
        point = measured.get(size)
        if point is not None and point.seconds > budget_s / 2:
            break
        sizes.append(size)
        size *= 2
    if len(sizes) > MAX_BATCH_CANDIDATES:
        # keep the ends and spread the rest, so the top of the curve is always tried
        step = (len(sizes) - 1) / (MAX_BATCH_CANDIDATES - 1)
        sizes = sorted({sizes[round(k * step)] for k in range(MAX_BATCH_CANDIDATES)})
    return sizes or [2]


def delay_candidates(
    roofline: Sequence[RooflinePoint], best: Settings, budget_s: float
) -> list[int]:
    """Queue delays to try with ``best``'s batch size, microseconds, ascending.

    A ladder from half a raw batch time (a batch forms while the previous one runs; at least
    MIN_DELAY_US) up by 4x, within TF Serving's 0-10 ms for CPUs and a quarter of the budget.
    Waiting longer than the raw batch lets more of the requests that are on their way (over
    HTTP, through the server) join: for small models that is where batches come from.
    """
    point = _at(roofline, best.max_batch_size)
    cap = min(MAX_DELAY_US, int(budget_s / 4 * 1e6))
    first = max(MIN_DELAY_US, point.seconds / 2 * 1e6)
    delays = {min(cap, _round_us(first * 4**k)) for k in range(DELAY_STEPS)}
    return sorted(d for d in delays if d > 0 and d != best.delay_us)


def variations(
    roofline: Sequence[RooflinePoint], best: Settings, budget_s: float
) -> list[Settings]:
    """The second stage: ``best`` with queue delays, and with the knee as preferred size."""
    out = [
        Settings(best.max_batch_size, True, d, (), best.instances)
        for d in delay_candidates(roofline, best, budget_s)
    ]
    k = knee(roofline)
    if 1 < k < best.max_batch_size:
        out.append(Settings(best.max_batch_size, True, best.delay_us, (k,), best.instances))
    return out


def instance_candidates(best: Settings, cores: int) -> list[Settings]:
    """The third stage: more instances of ``best``, up to one per core."""
    return [
        Settings(best.max_batch_size, best.batching, best.delay_us, best.preferred, n)
        for n in range(best.instances + 1, max(cores, 1) + 1)
    ][:2]


def roofline_sizes(limit: int) -> list[int]:
    """Batch sizes the raw backend is measured at: 1, 2, 4, ... up to ``limit``."""
    sizes, size = [], 1
    while size <= limit:
        sizes.append(size)
        size *= 2
    return sizes


def _at(roofline: Sequence[RooflinePoint], batch_size: int) -> RooflinePoint:
    """The measured point for ``batch_size``, else the nearest one above (or the largest)."""
    above = [p for p in roofline if p.batch_size >= batch_size]
    return min(above, key=lambda p: p.batch_size) if above else roofline[-1]


def _pow2_floor(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


def _pow2_ceil(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def _round_us(us: float) -> int:
    """Two significant figures: 1234 -> 1200, so configs read as chosen values."""
    if us < 10:
        return round(us)
    digits = math.floor(math.log10(us)) - 1
    return int(round(us, -digits))


def _delay(us: int) -> str:
    return f"{us / 1000:g}ms" if us >= 1000 else f"{us}us"
