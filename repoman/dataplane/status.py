"""The status page's one document: every model and version, live counters, the repository."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, Protocol

from repoman import __version__
from repoman.errors import RepomanError
from repoman.manager import ModelManager, ModelVersion
from repoman.pipeline.dispatch import Dispatcher
from repoman.scheduler.stats import FAILURE_REASONS, VersionStats

_LOCATED = re.compile(
    r"^(?P<file>[^\n]+?):(?P<line>\d+)(?::(?P<column>\d+))?: (?P<severity>error|warning): "
    r"(?P<message>.*)$",
    re.M,
)


class RepositoryReport(Protocol):
    """What the last pass over the repository saw (the Source provides it)."""

    def report(self) -> dict[str, Any]: ...


def located(text: str) -> list[dict[str, Any]]:
    """The config issues in an error's text, each with its file and line, as ``repoman
    validate`` prints them (``file:line[:column]: error: field: message``)."""
    return [
        {
            "file": m["file"],
            "line": int(m["line"]),
            "column": int(m["column"]) if m["column"] else None,
            "severity": m["severity"],
            "message": m["message"],
        }
        for m in _LOCATED.finditer(text)
    ]


def counters(stats: VersionStats, queued: int) -> dict[str, Any]:
    """A version's cumulative counters: the page turns two of them into rates."""
    return {
        "success": stats.success.count,
        "fail": stats.fail.count,
        "failures": {reason: stats.failures.get(reason, 0) for reason in FAILURE_REASONS},
        "inferences": stats.inference_count,
        "executions": stats.execution_count,
        "queued": queued,
        "latency_seconds": stats.request_seconds.as_dict(),
        "queue_seconds": stats.queue_seconds.as_dict(),
        "batch_wait_seconds": stats.batch_wait_seconds.as_dict(),
        "compute_seconds": stats.compute_seconds.as_dict(),
        "encode_seconds": stats.encode_seconds.as_dict(),
        "batch_sizes": stats.batch_sizes.as_dict(),
    }


class StatusBoard:
    """Builds the status document from the manager, the scheduler's counters and the Source.

    Loop thread only. ``redact`` makes paths relative to the repository, as every answer.
    """

    def __init__(
        self,
        manager: ModelManager,
        dispatcher: Dispatcher,
        redact: Callable[[str], str],
        repository: RepositoryReport | None = None,
    ) -> None:
        self._manager = manager
        self._dispatcher = dispatcher
        self._redact = redact
        self._repository = repository

    def document(self, *, ready: bool, repository: bool) -> dict[str, Any]:
        """Everything the page shows; ``repository``: with what the watcher saw (only for
        a caller the repository API would answer)."""
        return {
            "server": {"name": "repoman", "version": __version__, "ready": ready},
            "time": time.time(),
            "models": [self._model(name) for name in self._manager.model_names()],
            "memory": self._memory(),
            "repository": self._repository_report() if repository else None,
        }

    def _memory(self) -> dict[str, Any]:
        """The memory budget (null: none), what loaded versions hold, loads and evictions."""
        books = self._manager.books
        return {
            "budget_bytes": books.limit,
            "used_bytes": books.used,
            "loads": dict(books.loads),
            "evictions": dict(books.evictions),
        }

    def _model(self, name: str) -> dict[str, Any]:
        error = self._redact(self._manager.model_error(name))
        try:
            serving: int | None = self._manager.route(name, None).version
            why_none = ""
        except RepomanError as exc:
            serving, why_none = None, self._redact(exc.message)
        versions = self._manager.versions(name)
        return {
            "name": name,
            "error": error,
            "issues": located(error),
            "serving": serving,
            "not_serving": why_none,
            "ensemble": any(mv.config.is_ensemble for mv in versions),
            "versions": [self._version(mv) for mv in versions],
        }

    def _version(self, mv: ModelVersion) -> dict[str, Any]:
        state, reason = self._manager.serving_state(mv)
        reason = self._redact(reason)
        config = mv.config
        return {
            "version": mv.version,
            "state": state.value,
            "reason": reason,
            "issues": located(reason),
            "load_seconds": mv.load_seconds,
            "memory_bytes": mv.memory_bytes,
            "memory_measured": mv.memory_measured,
            "config": config.as_dict(),
            "auto_completed": list(config.auto_completed),
            "warnings": list(config.warnings),
            "steps": [
                {
                    "model": step.model_name,
                    "version": step.model_version,
                    "inputs": step.input_map,
                    "outputs": step.output_map,
                }
                for step in config.ensemble_steps
            ],
            "stats": counters(self._dispatcher.stats(mv), self._dispatcher.queued(mv)),
        }

    def _repository_report(self) -> dict[str, Any] | None:
        if self._repository is None:
            return None
        report = self._repository.report()
        for key in ("ignored", "unreadable"):
            if key in report:
                report[key] = [self._redact(line) for line in report[key]]
        return report
