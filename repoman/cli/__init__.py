"""The composition root: the ``repoman`` command builds every concrete part and wires them."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import repoman.perf
import repoman.tune
from repoman import __version__
from repoman.autocomplete import ConfigCompleter
from repoman.cli.validate import validate_repository
from repoman.config import config_to_pbtxt, config_to_yaml, load_model_config
from repoman.dataplane.service import InferenceService
from repoman.errors import RepomanError
from repoman.manager.manager import ModelManager
from repoman.plugins import build_backend_registry, make_plugin_manager, plugins_dir_for
from repoman.scheduler import SharedScheduler
from repoman.server import AccessPolicy, make_app
from repoman.source.scan import ScanOptions
from repoman.source.source import MODES, RepositoryController

log = logging.getLogger("repoman")

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

    serve = commands.add_parser(
        "serve",
        help="serve a model repository over HTTP (KServe v2 protocol)",
        description="Load every model in a repository and serve it over the KServe v2 HTTP "
        "protocol, which Triton's clients (tritonclient, perf_analyzer) speak.",
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
        "--model-control-mode",
        choices=MODES,
        default="poll",
        help="none: load what is there at start-up and ignore later changes; poll: also follow "
        "the repository while serving (file-system events plus a periodic rescan); explicit: "
        "load/unload only through the repository API and --load-model",
    )
    serve.add_argument(
        "--load-model",
        action="append",
        default=[],
        metavar="NAME",
        help="with --model-control-mode explicit: load NAME at start-up (repeatable; '*' = all)",
    )
    serve.add_argument(
        "--repository-poll-secs",
        type=float,
        default=10.0,
        metavar="S",
        help="poll mode: a full rescan every S seconds as a safety net for missed file-system "
        "events (0 disables it)",
    )
    serve.add_argument(
        "--quiet-period",
        type=float,
        default=0.3,
        metavar="S",
        help="poll mode: a version folder is loaded only after its files have been unchanged "
        "for S seconds, so a half-copied model is never loaded",
    )
    serve.add_argument(
        "--version-ready-file",
        default=None,
        metavar="NAME",
        help="poll mode: load a version folder only once a file NAME exists in it (for slow "
        "copies: copy the model, then create NAME)",
    )
    serve.add_argument(
        "--disable-auto-complete-config",
        action="store_true",
        help="do not fill what a config leaves out (or a missing config) from the model file",
    )
    serve.add_argument(
        "--num-batch-threads",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="workers in the one shared pool that runs the batches of every model",
    )
    serve.add_argument(
        "--switch-interval-us",
        type=int,
        default=1000,
        metavar="US",
        help="Python's thread switch interval for the server (sys.setswitchinterval): a batch "
        "worker whose backend call returned waits at most this long for the busy event loop "
        "to hand it the GIL back (Python's own default is 5000)",
    )
    serve.add_argument(
        "--plugins-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="a folder of *.py plugin files to load (default: the plugins/ folder beside the "
        "model repository, when there is one)",
    )
    serve.add_argument(
        "--block-plugin",
        action="append",
        default=[],
        metavar="NAME",
        help="do not load the plugin NAME (repeatable)",
    )
    serve.add_argument(
        "--max-request-size",
        type=int,
        default=64 * 1024 * 1024,
        metavar="BYTES",
        help="largest request body accepted; larger ones get 413",
    )
    serve.add_argument(
        "--control-token",
        default=os.environ.get("REPOMAN_CONTROL_TOKEN"),
        metavar="TOKEN",
        help="require 'Authorization: Bearer TOKEN' for the repository API (index, load, "
        "unload); default: the REPOMAN_CONTROL_TOKEN environment variable, else no token",
    )
    serve.add_argument(
        "--disable-repository-api",
        action="store_true",
        help="turn the repository API (index, load, unload) off: 403",
    )
    serve.add_argument(
        "--protect-inference",
        action="store_true",
        help="also require the token for inference, metadata, statistics and metrics "
        "(health endpoints stay open)",
    )
    serve.add_argument(
        "--model-load-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="a version whose backend has not loaded (and warmed up) after S seconds is "
        "marked FAILED with that reason",
    )
    serve.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="on SIGTERM/Ctrl-C, wait at most S seconds for in-flight requests to finish",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="how much to log",
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="json: one JSON object per line (time, level, logger, message), for log shippers",
    )
    serve.add_argument("--access-log", action="store_true", help="log one line per HTTP request")

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
    return parser


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
            return asyncio.run(_serve(args))
        if args.command == "plugins":
            return _plugins(args)
        if args.command == "config":
            return _config(args)
        if args.command == "validate":
            return _validate(args)
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


def _validate(args: argparse.Namespace) -> int:
    pm, report = make_plugin_manager(plugins_dir=plugins_dir_for(args.plugins_dir, args.repository))
    registry = build_backend_registry(pm, report)
    found = validate_repository(
        args.repository,
        registry,
        default_platform=args.default_platform,
        auto_complete=not args.disable_auto_complete_config,
    )
    for issue in found.issues:
        print(issue)
    print(found.summary())
    return 1 if found.errors else 0


def _config(args: argparse.Namespace) -> int:
    pm, report = make_plugin_manager(plugins_dir=args.plugins_dir)
    registry = build_backend_registry(pm, report)
    model_dir: Path = args.model_dir
    if not model_dir.is_dir():
        raise RepomanError(f"{model_dir} is not a model folder")
    config = load_model_config(model_dir, complete=ConfigCompleter(registry).for_model(model_dir))
    render = config_to_yaml if args.format == "yaml" else config_to_pbtxt
    print(render(config.as_dict()), end="")
    for warning in config.warnings:
        print(f"repoman: warning: {warning}", file=sys.stderr)
    return 0


def _plugins(args: argparse.Namespace) -> int:
    pm, report = make_plugin_manager(plugins_dir=args.plugins_dir, blocked=args.block_plugin)
    registry = build_backend_registry(pm, report)
    print("plugins:")
    for name in report.loaded:
        print(f"  {name}")
    for name in report.blocked:
        print(f"  {name} (blocked)")
    for name, reason in report.failed.items():
        print(f"  {name} (FAILED: {reason})")
    print("backends:")
    for spec in registry.specs():
        platforms = ", ".join(spec.platforms) or "-"
        print(f"  {spec.name:<16} platforms: {platforms:<28} plugin: {spec.plugin}")
    return 1 if report.failed else 0


async def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    repository: Path = args.model_repository
    if not repository.is_dir():
        raise RepomanError(f"model repository {repository} is not a folder")
    if args.switch_interval_us < 1:
        raise RepomanError(f"--switch-interval-us {args.switch_interval_us}: must be at least 1")
    # NOTE: backends release the GIL while computing but need it back to return their
    # outputs; with Python's 5 ms default a worker can wait that long behind the event loop
    # (a 3.5 ms onnxruntime batch measured 8.7 ms next to a busy Python thread, 4.0 at 1 ms).
    sys.setswitchinterval(args.switch_interval_us / 1e6)
    pm, report = make_plugin_manager(
        plugins_dir=plugins_dir_for(args.plugins_dir, repository), blocked=args.block_plugin
    )
    registry = build_backend_registry(pm, report)
    scheduler = SharedScheduler(args.num_batch_threads)

    def on_state(model: str, version: int, state: str, reason: str) -> None:
        pm.hook.repoman_version_state_changed(
            model=model, version=version, state=state, reason=reason
        )

    manager = ModelManager(
        registry, scheduler, on_state=on_state, load_timeout=args.model_load_timeout
    )
    controller = RepositoryController(
        repository,
        manager,
        mode=args.model_control_mode,
        options=ScanOptions(
            quiet=args.quiet_period,
            ready_marker=args.version_ready_file,
            completer=None if args.disable_auto_complete_config else ConfigCompleter(registry),
        ),
        rescan_every=args.repository_poll_secs,
        initial=tuple(args.load_model),
    )
    explicit = args.model_control_mode == "explicit"
    service = InferenceService(manager, scheduler, controller if explicit else None)

    async def models(app: web.Application) -> AsyncIterator[None]:
        async def first_load() -> None:
            try:
                await controller.start()
            except Exception:
                log.exception("the first pass over the repository failed")
                raise
            service.ready = True
            _log_table(manager)

        task = asyncio.create_task(first_load())
        yield
        service.ready = False
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await controller.stop()
        await manager.shutdown()
        await scheduler.close()

    if args.protect_inference and not args.control_token:
        raise RepomanError("--protect-inference needs --control-token (or REPOMAN_CONTROL_TOKEN)")
    access = AccessPolicy(
        control_token=args.control_token or None,
        repository_api=not args.disable_repository_api,
        protect_inference=args.protect_inference,
    )
    app = make_app(
        service, background=[models], max_request_bytes=args.max_request_size, access=access
    )
    runner = web.AppRunner(
        app,
        access_log=log if args.access_log else None,
        handle_signals=False,
        shutdown_timeout=args.shutdown_timeout,
    )
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.http_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise RepomanError(
            f"cannot listen on {args.host}:{args.http_port}: {exc.strerror}"
        ) from None
    for address in runner.addresses:
        host, port = address[0], address[1]
        shown = f"[{host}]" if ":" in host else host
        log.info("listening on http://%s:%d (repository %s)", shown, port, repository)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: finishing in-flight requests, then unloading models")
    await runner.cleanup()
    log.info("stopped")
    return 0


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


def _log_table(manager: ModelManager) -> None:
    rows = []
    for name in manager.model_names():
        versions = manager.versions(name)
        if not versions:
            rows.append((name, "-", "UNAVAILABLE", manager.model_error(name).splitlines()[0]))
        for mv in versions:
            rows.append((name, str(mv.version), mv.state.value, mv.reason))
    if not rows:
        log.warning("the repository holds no model")
        return
    width = max(len(r[0]) for r in rows)
    lines = [f"{'model':<{width}}  version  state        reason"]
    lines += [f"{m:<{width}}  {v:<7}  {s:<11}  {r}" for m, v, s, r in rows]
    log.info("models:\n  %s", "\n  ".join(lines))


if __name__ == "__main__":
    sys.exit(main())
