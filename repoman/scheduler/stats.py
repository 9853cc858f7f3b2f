"""Per-version inference statistics, kept by the scheduler, in Triton's statistics shape."""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from repoman.errors import ModelNotReady, RequestTimeout, ServerBusy, StepFailed


@dataclass
class Duration:
    """A count and the total nanoseconds it took."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class Histogram:
    """Counts per upper bound (the last bucket is +Inf) and the sum, Prometheus-style."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += count
        self.total += value * count

    def observe_each(self, values: Iterable[float]) -> None:
        """:meth:`observe` for each of ``values`` (one call for many observations)."""
        counts, bounds, total = self.counts, self.bounds, 0.0
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1
            total += value
        self.total += total

    def merge(self, counts: list[int], total: float) -> None:
        """Add another histogram's counts (same bounds) and sum: observations made elsewhere."""
        if len(counts) != len(self.counts):
            raise ValueError(f"expected {len(self.counts)} bucket counts, found {len(counts)}")
        mine = self.counts
        for index, count in enumerate(counts):
            mine[index] += count
        self.total += total

    def as_dict(self) -> dict[str, Any]:
        """Bounds, per-bucket (not cumulative) counts ending with +Inf's, and the sum."""
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.total}

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound as text, cumulative count) pairs ending with +Inf."""
        running, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out


BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
QUEUE_SECONDS_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)

SECONDS_BUCKETS = (*QUEUE_SECONDS_BUCKETS, 5.0, 10.0)
"""Bounds of the request-time histograms (end to end, batch wait, compute, encode)."""

FAILURE_REASONS = (
    "bad_input",
    "unknown_output",
    "too_large",
    "body_timeout",
    "unauthorized",
    "queue_full",
    "timeout",
    "unavailable",
    "backend",
)
"""Why a request was answered with an error, as ``nv_inference_request_failure``'s ``reason``:
refused before the queue (the first five), refused or dropped by the queue (``queue_full``,
``timeout``; ``unavailable``: the version stopped serving while it waited), or failed by its
backend (``backend``, an execution timeout included)."""


def failure_reason(error: BaseException) -> str:
    """The FAILURE_REASONS entry for an error a request got once it was queued."""
    while isinstance(error, StepFailed):  # NOTE: an ensemble's failure is its step's
        error = error.cause
    if isinstance(error, ServerBusy):
        return "queue_full"
    if isinstance(error, RequestTimeout):
        return "timeout"
    if isinstance(error, ModelNotReady):
        return "unavailable"
    return "backend"


def _seconds() -> Histogram:
    return Histogram(SECONDS_BUCKETS)


@dataclass
class BatchSizeStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class VersionStats:
    """Counters for one model version. Updated on the event loop thread only.

    ``inference_count`` counts batch rows (a request of 4 rows counts 4), ``execution_count``
    counts backend executions: their ratio is the mean batch size formed.
    """

    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, BatchSizeStats] = field(default_factory=lambda: defaultdict(BatchSizeStats))
    batch_sizes: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BUCKETS))
    queue_seconds: Histogram = field(default_factory=lambda: Histogram(QUEUE_SECONDS_BUCKETS))
    rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Requests refused by the queue, by reason (``queue_full``, ``timeout``)."""
    failures: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Every request answered with an error, by reason (FAILURE_REASONS); sums to fail.count."""
    request_seconds: Histogram = field(default_factory=_seconds)
    """End to end in the scheduler (queued to answered), successes and failures alike."""
    batch_wait_seconds: Histogram = field(default_factory=_seconds)
    """Taken from the queue to its batch's execute starting (hand-off, earlier batches of the
    same run)."""
    compute_seconds: Histogram = field(default_factory=_seconds)
    """The backend's execute of the request's batch."""
    encode_seconds: Histogram = field(default_factory=_seconds)
    """Encoding the response, at the edge (HTTP or gRPC, in whichever process answered)."""

    def record_queued(self, seconds: float, count: int = 1) -> None:
        queue = self.queue
        queue.count += count
        queue.ns += int(seconds * 1e9) * count
        self.queue_seconds.observe(seconds, count)

    def record_rejection(self, reason: str, elapsed_ns: int = 0, count: int = 1) -> None:
        self.rejected[reason] += count
        self.record_failure(reason, elapsed_ns, count)

    def record_failure(self, reason: str, elapsed_ns: int = 0, count: int = 1) -> None:
        """Requests answered with an error (refused before the queue, by it, or failed):
        ``count`` of them, each after ``elapsed_ns``."""
        self.failures[reason] += count
        self.fail.add(elapsed_ns * count, count)
        self.request_seconds.observe(elapsed_ns / 1e9, count)

    def record_success(self, elapsed_ns: int, count: int = 1) -> None:
        self.success.add(elapsed_ns * count, count)
        self.request_seconds.observe(elapsed_ns / 1e9, count)

    def record_batch(
        self, size: int, requests: int, *, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One execution of ``size`` rows for ``requests`` requests.

        ``input_ns``: hand-off to the worker; ``infer_ns``: the backend's execute;
        ``output_ns``: back to the event loop. Request-level durations count each request
        once with the whole batch's time, as Triton does.
        """
        self.execution_count += 1
        self.inference_count += size
        self.batch_sizes.observe(size)
        self.batch_wait_seconds.observe(input_ns / 1e9, requests)
        self.compute_seconds.observe(infer_ns / 1e9, requests)
        self.last_inference_ms = time.time_ns() // 1_000_000
        batch = self.batches[size]
        # NOTE: written out (no loop, no add()): this runs once per execution, and without
        # dynamic batching that is once per request.
        total = self.compute_input
        total.count += requests
        total.ns += input_ns * requests
        total = self.compute_infer
        total.count += requests
        total.ns += infer_ns * requests
        total = self.compute_output
        total.count += requests
        total.ns += output_ns * requests
        per_batch = batch.compute_input
        per_batch.count += 1
        per_batch.ns += input_ns
        per_batch = batch.compute_infer
        per_batch.count += 1
        per_batch.ns += infer_ns
        per_batch = batch.compute_output
        per_batch.count += 1
        per_batch.ns += output_ns

    def record_executions(
        self,
        elapsed_ns: Sequence[int],
        queued_ns: Sequence[int],
        rows: Sequence[int],
        computes: Sequence[tuple[int, int, int]],
    ) -> None:
        """Successful requests that each count as one execution of their own rows, as an
        ensemble's requests do: for each, :meth:`record_success` (``elapsed_ns``),
        :meth:`record_queued` (``queued_ns``) and :meth:`record_batch` (its ``rows``, one
        request, its ``computes``: input, infer and output nanoseconds), in one call for
        many requests (the parallel sequences, one entry per request)."""
        count = len(elapsed_ns)
        if not count:
            return
        self.success.add(sum(elapsed_ns), count)
        self.request_seconds.observe_each([ns / 1e9 for ns in elapsed_ns])
        self.queue.add(sum(queued_ns), count)
        self.queue_seconds.observe_each([ns / 1e9 for ns in queued_ns])
        self.execution_count += count
        self.inference_count += sum(rows)
        self.batch_sizes.observe_each(rows)
        self.batch_wait_seconds.observe_each([compute[0] / 1e9 for compute in computes])
        self.compute_seconds.observe_each([compute[1] / 1e9 for compute in computes])
        self.last_inference_ms = time.time_ns() // 1_000_000
        totals = (self.compute_input, self.compute_infer, self.compute_output)
        for part, total in enumerate(totals):
            total.add(sum(compute[part] for compute in computes), count)
        by_size: dict[int, list[tuple[int, int, int]]] = {}
        for size, compute in zip(rows, computes, strict=True):
            same = by_size.get(size)
            if same is None:
                by_size[size] = [compute]
            else:
                same.append(compute)
        for size, each in by_size.items():
            batch, number = self.batches[size], len(each)
            batch.compute_input.add(sum(compute[0] for compute in each), number)
            batch.compute_infer.add(sum(compute[1] for compute in each), number)
            batch.compute_output.add(sum(compute[2] for compute in each), number)

    def record_solo(self, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """:meth:`record_batch` for one request of one row (a model without dynamic batching
        records one per request)."""
        self.record_batch(1, 1, input_ns=input_ns, infer_ns=infer_ns, output_ns=output_ns)

    def as_dict(self, name: str, version: int) -> dict[str, Any]:
        empty = Duration().as_dict()
        return {
            "name": name,
            "version": str(version),
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
                "cache_hit": empty,
                "cache_miss": empty,
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": stats.compute_input.as_dict(),
                    "compute_infer": stats.compute_infer.as_dict(),
                    "compute_output": stats.compute_output.as_dict(),
                }
                for size, stats in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
