"""The ``repoman`` command: parse the arguments, set up logging, run the sub-command."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import repoman.perf
import repoman.tune
from repoman import logs
from repoman.cli import commands
from repoman.cli.parser import build_parser
from repoman.cli.serve import serve
from repoman.errors import RepomanError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(getattr(args, "log_level", "warning"), getattr(args, "log_format", "text"))
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


if __name__ == "__main__":
    sys.exit(main())
