"""Prometheus metrics, read from the scheduler's statistics and the manager at scrape time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from repoman.manager import ModelManager, ModelVersion, State
from repoman.pipeline.dispatch import Dispatcher
from repoman.scheduler.stats import FAILURE_REASONS, Histogram, VersionStats

log = logging.getLogger(__name__)

LABELS = ["model", "version"]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (Triton's metric name, help, how to read it from VersionStats) — durations in microseconds.
_COUNTERS = (
    ("nv_inference_request_success", "Successful inference requests", lambda s: s.success.count),
    (
        "nv_inference_count",
        "Inferences performed (batch rows, not requests)",
        lambda s: s.inference_count,
    ),
    ("nv_inference_exec_count", "Model executions (batches)", lambda s: s.execution_count),
    (
        "nv_inference_request_duration_us",
        "Cumulative end-to-end request time in the scheduler",
        lambda s: s.success.ns // 1000,
    ),
    (
        "nv_inference_queue_duration_us",
        "Cumulative time requests waited in queues",
        lambda s: s.queue.ns // 1000,
    ),
    (
        "nv_inference_compute_input_duration_us",
        "Cumulative hand-off time to a worker",
        lambda s: s.compute_input.ns // 1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative backend execute time",
        lambda s: s.compute_infer.ns // 1000,
    ),
    (
        "nv_inference_compute_output_duration_us",
        "Cumulative hand-back time from a worker",
        lambda s: s.compute_output.ns // 1000,
    ),
)

# The per-request time split, each a histogram in seconds (the queue's is
# repoman_queue_duration_seconds): (name part, help, how to read it from VersionStats).
_REQUEST_SPLIT: tuple[tuple[str, str, Callable[[VersionStats], Histogram]], ...] = (
    (
        "duration",
        "End to end in the scheduler, queued to answered (failures included)",
        lambda s: s.request_seconds,
    ),
    (
        "batch_wait",
        "Taken from the queue to its batch's execute starting",
        lambda s: s.batch_wait_seconds,
    ),
    ("compute", "The backend's execute of the request's batch", lambda s: s.compute_seconds),
    ("encode", "Encoding the response at the HTTP or gRPC edge", lambda s: s.encode_seconds),
)


class RepomanCollector(Collector):
    """Everything is read when Prometheus scrapes: nothing is added to the request path.

    Triton's metric names where Triton has one (counters carry Triton's names without the
    ``_total`` suffix, as Triton exposes them), plus histograms of batch size and queue
    time, rejections by reason, version states and load failures.
    """

    def __init__(self, manager: ModelManager, dispatcher: Dispatcher) -> None:
        self._manager = manager
        self._scheduler = dispatcher

    def versions(self) -> list[ModelVersion]:
        return [mv for name in self._manager.model_names() for mv in self._manager.versions(name)]

    def triton_counters(self) -> str:
        """Triton's counters, in the text format, with Triton's exact names.

        NOTE: prometheus-client would expose a counter's family as ``<name>_total``; Triton's
        dashboards expect ``nv_inference_count`` itself, so these lines are written here.
        """
        lines = []
        versions = self.versions()
        for name, help_text, read in _COUNTERS:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            for mv in versions:
                value = read(self._scheduler.stats(mv))
                lines.append(f'{name}{{model="{mv.model}",version="{mv.version}"}} {value}')
        name = "nv_inference_request_failure"
        lines += [
            f"# HELP {name} Inference requests answered with an error, by reason: refused "
            "before the queue, refused by it, timed out, failed by the backend",
            f"# TYPE {name} counter",
        ]
        for mv in versions:
            failures = self._scheduler.stats(mv).failures
            for reason in FAILURE_REASONS:
                lines.append(
                    f'{name}{{model="{mv.model}",version="{mv.version}",reason="{reason}"}} '
                    f"{failures.get(reason, 0)}"
                )
        return "\n".join(lines) + "\n"

    def collect(self) -> Iterator[Metric]:
        versions = self.versions()
        pending = GaugeMetricFamily(
            "nv_inference_pending_request_count", "Requests waiting for a worker", labels=LABELS
        )
        load = GaugeMetricFamily(
            "nv_model_load_duration_secs", "Time the last load took", labels=LABELS
        )
        state = GaugeMetricFamily(
            "repoman_version_state", "1 for the state each version is in", labels=[*LABELS, "state"]
        )
        rejected = CounterMetricFamily(
            "repoman_rejected_requests", "Requests the queue refused", labels=[*LABELS, "reason"]
        )
        batch = HistogramMetricFamily("repoman_batch_size", "Rows per execution", labels=LABELS)
        queued = HistogramMetricFamily(
            "repoman_queue_duration_seconds", "Time each request waited in the queue", labels=LABELS
        )
        split = [
            (
                HistogramMetricFamily(f"repoman_request_{part}_seconds", help_text, labels=LABELS),
                read,
            )
            for part, help_text, read in _REQUEST_SPLIT
        ]
        for mv in versions:
            labels = [mv.model, str(mv.version)]
            stats = self._scheduler.stats(mv)
            pending.add_metric(labels, self._scheduler.queued(mv))
            load.add_metric(labels, mv.load_seconds)
            shown, _ = self._manager.serving_state(mv)
            for each in State:
                state.add_metric([*labels, each.value], 1.0 if shown is each else 0.0)
            for reason in ("queue_full", "timeout"):
                rejected.add_metric([*labels, reason], stats.rejected.get(reason, 0))
            batch.add_metric(labels, *_buckets(stats.batch_sizes))
            queued.add_metric(labels, *_buckets(stats.queue_seconds))
            for family, read in split:
                family.add_metric(labels, *_buckets(read(stats)))
        failures = CounterMetricFamily(
            "repoman_model_load_failures", "Failed load attempts", labels=LABELS
        )
        for (model, version), count in sorted(self._manager.load_failures.items()):
            failures.add_metric([model, str(version)], count)
        yield from (pending, load, state, rejected, batch, queued, failures)
        yield from (family for family, _ in split)
        yield from self._memory(versions)

    def _memory(self, versions: list[ModelVersion]) -> Iterator[Metric]:
        """The memory budget's figures: per version and in total, loads, evictions, waits."""
        books = self._manager.books
        holding = books.holding()
        memory = GaugeMetricFamily(
            "repoman_version_memory_bytes",
            "Memory a loaded version holds (measured at load; 0 when not in memory)",
            labels=LABELS,
        )
        for mv in versions:
            if not mv.config.is_ensemble:
                memory.add_metric([mv.model, str(mv.version)], holding.get(mv, 0))
        yield memory
        yield GaugeMetricFamily(
            "repoman_memory_used_bytes", "Memory all loaded versions hold", value=books.used
        )
        if books.limit is not None:
            yield GaugeMetricFamily(
                "repoman_memory_budget_bytes",
                "The memory budget (--memory-budget)",
                value=books.limit,
            )
        loads = CounterMetricFamily(
            "repoman_model_loads",
            "Versions loaded into memory, by cause (eager, lazy: a request, explicit: the API)",
            labels=["cause"],
        )
        for cause in ("eager", "lazy", "explicit"):
            loads.add_metric([cause], books.loads.get(cause, 0))
        evictions = CounterMetricFamily(
            "repoman_model_evictions",
            "Versions unloaded to make room or for being idle, by reason",
            labels=["reason"],
        )
        for reason in ("memory_budget", "idle"):
            evictions.add_metric([reason], books.evictions.get(reason, 0))
        waits = HistogramMetricFamily(
            "repoman_lazy_load_wait_seconds",
            "Time requests waited for their version to load (lazy loads)",
            labels=LABELS,
        )
        for (model, version), histogram in sorted(self._scheduler.lazy_waits.items()):
            waits.add_metric([model, str(version)], *_buckets(histogram))
        yield from (loads, evictions, waits)


def _buckets(histogram: Histogram) -> tuple[list[tuple[str, float]], float]:
    return [(bound, float(count)) for bound, count in histogram.cumulative()], histogram.total


class Metrics:
    """A registry of its own (there is no global one) and its text exposition.

    ``extra`` (optional) gives more text to append at each scrape, by source: the plugins'
    ``repoman_metrics_text`` hooks. A source that raises is logged and left out.
    """

    def __init__(
        self,
        manager: ModelManager,
        dispatcher: Dispatcher,
        extra: Callable[[], Iterable[tuple[str, Callable[[], object]]]] | None = None,
    ) -> None:
        self._collector = RepomanCollector(manager, dispatcher)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self._collector)
        self._extra = extra

    async def exposition(self) -> bytes:
        text = self._collector.triton_counters().encode() + generate_latest(self.registry)
        if self._extra is not None:
            text += (await asyncio.to_thread(self._extra_text)).encode()
        return text

    def _extra_text(self) -> str:
        assert self._extra is not None
        parts = []
        for name, source in self._extra():
            try:
                part = source()
            except Exception:
                log.exception("plugin %s: repoman_metrics_text failed; left out of /metrics", name)
                continue
            if not isinstance(part, str):
                log.error(
                    "plugin %s: repoman_metrics_text returned a %s, not text; left out",
                    name,
                    type(part).__name__,
                )
                continue
            if part.strip():
                parts.append(part if part.endswith("\n") else part + "\n")
        return "".join(parts)
