"""A stub's output as the server's log lines: both ends of that channel.

In the stub, every log record (``pb_utils.Logger``, ``logging``) and every line written to
``sys.stdout`` / ``sys.stderr`` (``print``) becomes one marked JSON line on the real stderr.
The server reads the stub's stdout and stderr and logs each line through its own logging, in
its own format (``--log-format json`` included), under ``repoman.models.<model>.<instance>``
with the model, version and instance as fields. A line without the mark (written by native
code straight to the descriptor, or a crash report) is logged as it is: INFO from stdout,
WARNING from stderr. Nothing the stub writes can name another model or a server logger.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from dataclasses import dataclass
from typing import IO, Any

MARK = "\x1erepoman-log "
LINE_LIMIT = 64 << 10
"""Bytes of one line the server reads at a time; a longer line is logged in pieces."""


# ---- the server's end --------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """Whose process it is: what each line it writes is attributed to."""

    model: str
    version: int | None
    instance: str

    def logger(self) -> logging.Logger:
        return logging.getLogger(f"repoman.models.{self.model}.{self.instance}")

    def fields(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "instance": self.instance}


def forward(pipe: IO[bytes], origin: Origin, plain_level: int) -> threading.Thread:
    """Log each line read from ``pipe`` as ``origin``'s, on a daemon thread, until EOF."""
    thread = threading.Thread(
        target=_forward, args=(pipe, origin, plain_level), name="repoman-stub-output", daemon=True
    )
    thread.start()
    return thread


def _forward(pipe: IO[bytes], origin: Origin, plain_level: int) -> None:
    logger, fields = origin.logger(), origin.fields()
    with pipe:
        for raw in iter(lambda: pipe.readline(LINE_LIMIT), b""):
            level, message = parse(raw.decode("utf-8", "replace").rstrip("\r\n"), plain_level)
            logger.log(level, "%s", message, extra=fields)


def parse(line: str, plain_level: int) -> tuple[int, str]:
    """(level, message) of one line: a marked record's own, else the line at ``plain_level``."""
    if not line.startswith(MARK):
        return plain_level, line
    try:
        entry = json.loads(line[len(MARK) :])
        level, message = int(entry["level"]), str(entry["message"])
        if entry.get("exception"):
            message += "\n" + str(entry["exception"])
    except (ValueError, KeyError, TypeError):
        return plain_level, line
    return min(max(level, logging.DEBUG), logging.CRITICAL), message


# ---- the stub's end ----------------------------------------------------------------------


class _Marked(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"level": record.levelno, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return MARK + json.dumps(entry)


class _Lines(io.TextIOBase):
    """A text stream that logs each whole line written to it (what ``print`` writes)."""

    def __init__(self, logger: logging.Logger, level: int) -> None:
        self._logger, self._level = logger, level
        self._pending = ""
        self._lock = threading.Lock()
        self._inside = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if getattr(self._inside, "logging", False):
            # NOTE: a handler the model added writes here while a record is logged: as it
            # is, to the real stderr, or each record would log another without end.
            sys.__stderr__.write(text)
            return len(text)
        with self._lock:
            *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self._log(line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            line, self._pending = self._pending, ""
        if line:
            self._log(line)

    def _log(self, line: str) -> None:
        self._inside.logging = True
        try:
            self._logger.log(self._level, "%s", line)
        finally:
            self._inside.logging = False


def capture(level: str) -> None:
    """In the stub: log records and ``print`` output leave as marked lines on stderr."""
    handler = logging.StreamHandler(sys.__stderr__)
    handler.setFormatter(_Marked())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # NOTE: the handler writes to the real stderr (sys.__stderr__), never to these.
    sys.stdout = _Lines(logging.getLogger("stdout"), logging.INFO)
    sys.stderr = _Lines(logging.getLogger("stderr"), logging.WARNING)
