"""The ``repoman`` command line: every sub-command's arguments (what they mean lives here)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import repoman.perf
import repoman.tune
from repoman import __version__
from repoman.config import MAX_CONFIG_BYTES
from repoman.source.source import MODES

CHECKOUT = Path(__file__).resolve().parents[2]


def _default_repository() -> Path:
    bundled = CHECKOUT / "model_repository"
    return bundled if bundled.is_dir() else Path.cwd() / "model_repository"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repoman",
        description="A model repository manager and KServe v2 inference server.",
    )
    parser.add_argument("--version", action="version", version=f"repoman {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands)
    _add_tools(commands)
    return parser


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve a model repository over HTTP and gRPC (KServe v2 protocol)",
        description="Load every model in a repository and serve it over the KServe v2 HTTP "
        "and gRPC protocols, which Triton's clients (tritonclient, perf_analyzer) speak.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument(
        "--model-repository",
        type=Path,
        default=_default_repository(),
        metavar="DIR",
        help="the model repository: <DIR>/<model>/config.pbtxt|config.yaml and <DIR>/<model>/<N>/",
    )
    serve.add_argument(
        "--host",
        "--http-address",
        dest="host",
        default="127.0.0.1",
        help="address to listen on (use 0.0.0.0 to accept other machines)",
    )
    serve.add_argument(
        "--http-port",
        type=int,
        default=8000,
        metavar="PORT",
        help="port to listen on; 0 picks a free one (the log line 'listening on' shows it)",
    )
    serve.add_argument(
        "--grpc-port",
        type=int,
        default=8001,
        metavar="PORT",
        help="port for the KServe v2 gRPC protocol (Triton's GRPCInferenceService), on the same "
        "address; 0 picks a free one (the log line 'listening on grpc://' shows it); -1 turns "
        "gRPC off",
    )
    _repository_options(serve.add_argument_group("the repository"))
    _execution_options(serve.add_argument_group("running models"))
    _limits_and_security(serve.add_argument_group("limits and security"))
    _logging_options(serve.add_argument_group("logging"))


def _repository_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--model-control-mode",
        choices=MODES,
        default="poll",
        help="none: load what is there at start-up and ignore later changes; poll: also follow "
        "the repository while serving (file-system events plus a periodic rescan); explicit: "
        "load/unload only through the repository API and --load-model",
    )
    group.add_argument(
        "--model-name",
        default=None,
        metavar="NAME",
        help="when the repository folder is itself one model folder (a config file or numbered "
        "version folders at its top, as KServe lays out a single model in /mnt/models): the "
        "name to serve it under (default: the folder's name); ignored otherwise",
    )
    group.add_argument(
        "--load-model",
        action="append",
        default=[],
        metavar="NAME",
        help="with --model-control-mode explicit: serve NAME from start-up (repeatable; '*' = all; "
        "a lazy model stays AVAILABLE until its first request)",
    )
    group.add_argument(
        "--repository-poll-secs",
        type=float,
        default=10.0,
        metavar="S",
        help="poll mode: a full rescan every S seconds as a safety net for missed file-system "
        "events (0 disables it)",
    )
    group.add_argument(
        "--quiet-period",
        type=float,
        default=0.3,
        metavar="S",
        help="poll mode: a version folder is loaded only after its files have been unchanged "
        "for S seconds, so a half-copied model is never loaded",
    )
    group.add_argument(
        "--version-ready-file",
        default=None,
        metavar="NAME",
        help="poll mode: load a version folder only once a file NAME exists in it (for slow "
        "copies: copy the model, then create NAME)",
    )
    group.add_argument(
        "--disable-auto-complete-config",
        action="store_true",
        help="do not fill what a config leaves out (or a missing config) from the model file",
    )


def _execution_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--http-workers",
        type=int,
        default=1,
        metavar="N",
        help="front-end processes sharing the HTTP port: each parses, checks and answers "
        "requests, and hands them to the one core process that owns the models and the one "
        "scheduler (1: a single process does it all)",
    )
    group.add_argument(
        "--num-batch-threads",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="workers in the one shared pool that runs the batches of every model",
    )
    group.add_argument(
        "--switch-interval-us",
        type=int,
        default=1000,
        metavar="US",
        help="Python's thread switch interval for the server (sys.setswitchinterval): a batch "
        "worker whose backend call returned waits at most this long for the busy event loop "
        "to hand it the GIL back (Python's own default is 5000)",
    )
    group.add_argument(
        "--memory-budget",
        default=None,
        metavar="SIZE",
        help="the most memory loaded models may hold together, as measured when each loads "
        "(2GiB, 512MB, bytes, or a fraction of the machine's memory or the container's limit "
        "such as 0.5): a load that needs room unloads the versions least worth keeping "
        "(least recently used, weighed by how long they take to load); they stay AVAILABLE "
        "and load again on their next request (default: no budget)",
    )
    group.add_argument(
        "--lazy-load",
        action="store_true",
        help="a model whose config does not say (model_management { load: EAGER | LAZY }) is "
        "AVAILABLE, not loaded, until its first request, which waits while it loads",
    )
    group.add_argument(
        "--plugins-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="a folder of *.py plugin files to load (default: the plugins/ folder beside the "
        "model repository, when there is one)",
    )
    group.add_argument(
        "--block-plugin",
        action="append",
        default=[],
        metavar="NAME",
        help="do not load the plugin NAME (repeatable)",
    )


def _limits_and_security(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--max-request-size",
        type=int,
        default=64 * 1024 * 1024,
        metavar="BYTES",
        help="largest request body accepted, as sent and as inflated from gzip/deflate; "
        "larger ones get 413 (at once when Content-Length says so)",
    )
    group.add_argument(
        "--max-json-size",
        type=int,
        default=4 * 1024 * 1024,
        metavar="BYTES",
        help="largest JSON part of a request (the whole body without "
        "Inference-Header-Content-Length); larger ones get 413. Parsed JSON takes 10-30x its "
        "size in memory; big tensors belong in the binary data extension",
    )
    group.add_argument(
        "--request-read-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="a request body that has not fully arrived S seconds after reading began gets "
        "408 and its connection is closed",
    )
    group.add_argument(
        "--keepalive-timeout",
        type=float,
        default=75.0,
        metavar="S",
        help="close a connection idle for S seconds since it opened or since its last "
        "response; a request whose headers are still arriving counts as idle",
    )
    group.add_argument(
        "--max-config-size",
        type=int,
        default=MAX_CONFIG_BYTES,
        metavar="BYTES",
        help="largest config file (or load request config) read; larger ones are refused "
        "with a config error, unread",
    )
    group.add_argument(
        "--control-token",
        # NOTE: never a default from the environment: --help prints defaults.
        default=None,
        metavar="TOKEN",
        help="require 'Authorization: Bearer TOKEN' for the repository API (index, load, "
        "unload); when not given, the REPOMAN_CONTROL_TOKEN environment variable, else no "
        "token (then, in explicit mode, anyone who can reach the port can load any config)",
    )
    group.add_argument(
        "--disable-repository-api",
        action="store_true",
        help="turn the repository API (index, load, unload) off: 403",
    )
    group.add_argument(
        "--protect-inference",
        action="store_true",
        help="also require the token for inference, metadata, statistics and metrics "
        "(health endpoints stay open)",
    )
    group.add_argument(
        "--model-load-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="a version whose backend has not loaded (and warmed up) after S seconds is "
        "marked FAILED with that reason; reading a model's files before that (auto-complete, "
        "the config-vs-model check) has the same limit",
    )
    group.add_argument(
        "--execution-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="a batch whose backend call has not returned after S seconds fails, its worker "
        "is replaced and its version marked FAILED (unhealthy) until its files change; 0 "
        "disables the limit",
    )
    group.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="on SIGTERM/Ctrl-C, wait at most S seconds for in-flight requests to finish",
    )


def _logging_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="how much to log",
    )
    group.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="json: one JSON object per line (time, level, logger, message), for log shippers",
    )
    group.add_argument("--access-log", action="store_true", help="log one line per HTTP request")


def _add_tools(commands: argparse._SubParsersAction) -> None:
    config = commands.add_parser(
        "config",
        help="print a model's complete config (auto-completed from the model file)",
        description="Print the config repoman would serve for MODEL_DIR: the config file with "
        "defaults filled in and, where it leaves things out (or is missing), what the model "
        "file says. A starting point for writing one.",
    )
    config.add_argument("model_dir", type=Path, metavar="MODEL_DIR")
    config.add_argument("--format", choices=["pbtxt", "yaml"], default="pbtxt")
    config.add_argument("--plugins-dir", type=Path, default=None, metavar="DIR")

    validate = commands.add_parser(
        "validate",
        help="check every config in a repository without starting a server",
        description="Check every model config in a repository (syntax, schema, Triton's "
        "semantic rules, a backend for it) and, where the backend can read model files, that "
        "each version's model matches its config. Prints compiler-style lines "
        "(path:line:col: error: field: message (hint)) and a summary; exit code 1 on any error.",
    )
    validate.add_argument(
        "repository", type=Path, nargs="?", default=_default_repository(), metavar="REPO"
    )
    validate.add_argument("--plugins-dir", type=Path, default=None, metavar="DIR")
    validate.add_argument(
        "--default-platform",
        default=None,
        metavar="PLATFORM",
        help="platform for configs that name neither platform nor backend",
    )
    validate.add_argument("--disable-auto-complete-config", action="store_true")
    validate.add_argument(
        "--model-name",
        default=None,
        metavar="NAME",
        help="when REPO is itself one model folder: its name (default: the folder's name)",
    )

    perf = commands.add_parser("perf", help=repoman.perf.HELP, description=repoman.perf.DESCRIPTION)
    repoman.perf.add_arguments(perf)

    tune = commands.add_parser(
        "tune",
        help=repoman.tune.HELP,
        description=repoman.tune.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    repoman.tune.add_arguments(tune, _default_repository())

    plugins = commands.add_parser("plugins", help="list the plugins and backends found")
    plugins.add_argument("--plugins-dir", type=Path, default=None, metavar="DIR")
    plugins.add_argument("--block-plugin", action="append", default=[], metavar="NAME")
