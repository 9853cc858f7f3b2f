"""The ``repoman tune`` flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from repoman.perf.options import concurrency_list


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive number")
    return value


def add_arguments(parser: argparse.ArgumentParser, default_repository: Path) -> None:
    parser.add_argument("model", metavar="MODEL", help="the model folder's name in the repository")
    parser.add_argument(
        "--repo",
        "--model-repository",
        dest="repo",
        type=Path,
        default=default_repository,
        metavar="DIR",
        help="the model repository (default: %(default)s)",
    )
    parser.add_argument(
        "--url",
        default=None,
        metavar="URL",
        help="tune on a running repoman started with --model-control-mode explicit (it must "
        "serve --repo) instead of starting one; its model is reloaded from disk at the end",
    )
    parser.add_argument(
        "--control-token",
        # NOTE: never a default from the environment: --help prints defaults.
        default=None,
        metavar="TOKEN",
        help="bearer token for --url's repository API (when not given: $REPOMAN_CONTROL_TOKEN)",
    )
    parser.add_argument(
        "--latency-budget-ms",
        type=positive_float,
        default=50.0,
        metavar="MS",
        help="the p99 latency the recommended config must stay within, at every concurrency "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--concurrency",
        type=concurrency_list,
        default=[8, 32],
        metavar="C[,C...]",
        help="closed-loop client counts each config is measured at (default: 8,32)",
    )
    parser.add_argument(
        "--time-budget",
        type=positive_float,
        default=120.0,
        metavar="S",
        help="seconds for the whole run, server start included; the search stops early to "
        "keep it (default: %(default)s)",
    )
    parser.add_argument(
        "--max-batch-limit",
        type=int,
        default=128,
        metavar="N",
        help="largest batch size the raw backend is measured at (default: %(default)s)",
    )
    parser.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME:D1,D2",
        help="dimensions (batch excluded) for an input with variable ones (repeatable)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="where to write the recommended config (default: MODEL.tuned.pbtxt or "
        "MODEL.tuned.yaml, matching the model's config, in the current folder)",
    )
    parser.add_argument(
        "--apply",
        action="store_true",
        help="also write the recommended config into the repository (atomically: a server "
        "following the repository reloads it with no failed request)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="FILE.svg",
        help="where to save the throughput vs p99 chart (default: MODEL.tune.svg)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write every number as JSON"
    )
    parser.add_argument("--plugins-dir", type=Path, default=None, metavar="DIR")
    parser.add_argument(
        "--num-batch-threads",
        type=int,
        default=None,
        metavar="N",
        help="passed to the server the tuner starts (default: the server's, one per core)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def parse_shapes(items: list[str]) -> dict[str, list[int]]:
    """``NAME:D1,D2`` items -> {NAME: [D1, D2]}; ValueError naming the bad item."""
    shapes = {}
    for item in items:
        name, _, dims = item.rpartition(":")
        try:
            values = [int(d) for d in dims.split(",")]
        except ValueError:
            values = []
        if not name or not values or min(values) < 1:
            raise ValueError(f"--shape {item!r}: expected NAME:D1,D2,... with positive sizes")
        shapes[name] = values
    return shapes
