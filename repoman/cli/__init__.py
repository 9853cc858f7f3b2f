"""The ``repoman`` command: parse the arguments, set up logging, run the sub-command."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import repoman.perf
import repoman.tune
from repoman.cli import commands
from repoman.cli.parser import build_parser
from repoman.cli.serve import serve
from repoman.errors import RepomanError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = getattr(args, "log_level", "warning").upper()
    handler = logging.StreamHandler()
    if getattr(args, "log_format", "text") == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    try:
        if args.command == "serve":
            return asyncio.run(serve(args))
        if args.command == "plugins":
            return commands.plugins(args)
        if args.command == "config":
            return commands.config(args)
        if args.command == "validate":
            return commands.validate(args)
        if args.command == "perf":
            return repoman.perf.run(args)
        if args.command == "tune":
            return repoman.tune.run(args)
    except RepomanError as exc:
        print(f"repoman: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 2


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


if __name__ == "__main__":
    sys.exit(main())
