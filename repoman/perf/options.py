"""The ``repoman perf`` flags, their parsers, and the usage error every bad value becomes."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from repoman.errors import RepomanError


class UsageError(RepomanError):
    """A bad flag, an unreachable server or a model perf cannot drive: exit 2, one line."""


def describe(exc: BaseException) -> str:
    """``TypeName: message``, or just the type when the message is empty (as for timeouts)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def concurrency_range(text: str) -> list[int]:
    """``START[:END[:STEP]]`` -> levels; STEP adds (perf_analyzer's meaning), ``xK`` multiplies.

    ``4`` -> [4]; ``1:8`` -> 1..8; ``1:16:4`` -> [1, 5, 9, 13]; ``1:64:x2`` -> [1, 2, 4, ..., 64].
    """
    parts = text.split(":")
    try:
        if not 1 <= len(parts) <= 3:
            raise ValueError
        start = int(parts[0])
        end = int(parts[1]) if len(parts) > 1 else start
        step_text = parts[2] if len(parts) > 2 else "1"
        factor = int(step_text[1:]) if step_text[:1] in ("x", "*") else 0
        step = 0 if factor else int(step_text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not START[:END[:STEP]] (STEP a number to add or xN to multiply)"
        ) from None
    if start < 1 or end < start or (factor < 2 and step < 1):
        raise argparse.ArgumentTypeError(
            f"'{text}': need 1 <= START <= END and STEP >= 1 (or xN with N >= 2)"
        )
    levels, level = [], start
    while level <= end:
        levels.append(level)
        level = level * factor if factor else level + step
    return levels


def concurrency_list(text: str) -> list[int]:
    """``1,8,32`` -> [1, 8, 32]; each level must be a positive integer."""
    try:
        levels = [int(part) for part in text.split(",")]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma list of positive integers")
    return levels


def shape_option(text: str) -> tuple[str, list[int]]:
    """``NAME:d1,d2`` -> (NAME, [d1, d2]); the dimensions exclude the batch dimension."""
    name, sep, dims = text.rpartition(":")
    try:
        shape = [int(d) for d in dims.split(",")] if dims else []
    except ValueError:
        shape = [-1]
    if not sep or not name or any(d < 0 for d in shape):
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME:d1,d2,... (non-negative dims)")
    return name, shape


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive number of seconds")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds >= 0")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every ``repoman perf`` flag to ``parser`` (the ``perf`` sub-command's parser).

    Also keeps the line breaks of ``DESCRIPTION`` (its example commands) in ``--help``, unless
    the caller chose a formatter of its own.
    """
    if parser.formatter_class is argparse.HelpFormatter:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    target = parser.add_argument_group("target")
    target.add_argument("-m", "--model-name", required=True, help="the model to load-test")
    target.add_argument(
        "-x", "--model-version", default="", help="the version to drive (default: the server's)"
    )
    target.add_argument(
        "-u",
        "--url",
        default="127.0.0.1:8000",
        help="the server: HOST:PORT or http://HOST:PORT (default: %(default)s)",
    )
    target.add_argument(
        "--timeout",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="give up on one request after S seconds; it counts as an error (default: 30)",
    )

    load = parser.add_argument_group("load")
    levels = load.add_mutually_exclusive_group()
    levels.add_argument(
        "--concurrency-range",
        dest="concurrency",
        type=concurrency_range,
        metavar="START[:END[:STEP]]",
        help="concurrent requests per step, as perf_analyzer: STEP adds (1:16:4 is 1,5,9,13); "
        "xN multiplies (1:64:x2 is 1,2,4,...,64) (default: 1)",
    )
    levels.add_argument(
        "--concurrency",
        dest="concurrency",
        type=concurrency_list,
        metavar="N[,N...]",
        help="the concurrency levels as a list, e.g. 1,8,32,64",
    )
    load.add_argument(
        "-b", "--batch-size", type=positive_int, default=1, help="rows per request (default: 1)"
    )
    window = load.add_mutually_exclusive_group()
    window.add_argument(
        "--duration",
        type=positive_float,
        metavar="S",
        help="measure each step for S seconds (default: 5)",
    )
    window.add_argument(
        "--requests",
        type=positive_int,
        metavar="N",
        help="measure each step until N requests have completed, instead of --duration",
    )
    load.add_argument(
        "--warmup",
        type=non_negative_float,
        default=1.0,
        metavar="S",
        help="run each step S seconds before measuring, unmeasured (default: 1)",
    )
    load.add_argument(
        "--client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="raw: a minimal HTTP/1.1 keep-alive client, each request one pre-built write "
        "(about a quarter of aiohttp's CPU per request); aiohttp: aiohttp's ClientSession "
        "(default: raw)",
    )
    load.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        metavar="N",
        help="split each step's concurrency over N client processes (default: 1; more only "
        "helps when the client has cores the server does not use)",
    )

    data = parser.add_argument_group("input data")
    data.add_argument(
        "--input-data",
        default="random",
        metavar="random|zero|FILE",
        help='random or zero tensors, or a perf_analyzer JSON file {"data": [{INPUT: [...]}]} '
        "used round-robin, one entry per row (default: random)",
    )
    data.add_argument(
        "--shape",
        action="append",
        type=shape_option,
        default=[],
        metavar="NAME:d1,d2",
        help="the shape of input NAME without the batch dimension, for its -1 dimensions "
        "(repeat for several inputs)",
    )
    data.add_argument(
        "--tensor-format",
        choices=("binary", "json"),
        default="binary",
        help="binary: the binary tensor extension for inputs and outputs; json: plain JSON "
        "(default: binary)",
    )

    output = parser.add_argument_group("output")
    output.add_argument("--csv", type=Path, metavar="FILE", help="also write the steps as CSV")
    output.add_argument("--json", type=Path, metavar="FILE", help="also write the steps as JSON")
    output.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it is drawn on stderr only when stderr is a terminal)",
    )
