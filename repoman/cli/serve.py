"""``repoman serve``: the composition root, the one place that builds every concrete part."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import math
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from repoman import collector
from repoman.dataplane.calls import ModelCalls
from repoman.dataplane.service import InferenceService
from repoman.errors import RepomanError
from repoman.grpc import OFF, GrpcEdge, GrpcOptions
from repoman.manager import MemoryBooks, ModelManager, ModelVersion
from repoman.memory import fix_mmap_threshold, format_size, machine_memory, parse_size
from repoman.metrics import Metrics
from repoman.multiproc.core import serve_with_frontends
from repoman.multiproc.frontend import FrontendOptions
from repoman.multiproc.hub import FrontendHub
from repoman.names import valid_model_name
from repoman.pipeline.dispatch import Dispatcher
from repoman.plugins import build_backend_registry, make_plugin_manager, plugins_dir_for
from repoman.scheduler import SharedScheduler
from repoman.server import AccessPolicy, BodyLimits, make_app, serve_until_stopped
from repoman.source.resolve import Resolver
from repoman.source.scan import ScanOptions, looks_like_a_model
from repoman.source.source import RepositorySource

log = logging.getLogger("repoman")

TOKEN_VARIABLE = "REPOMAN_CONTROL_TOKEN"
"""The environment variable holding the control token (read after parsing, never shown)."""


async def serve(args: argparse.Namespace) -> int:
    repository: Path = args.model_repository
    if not repository.is_dir():
        raise RepomanError(f"model repository {repository} is not a folder")
    if args.max_config_size < 1:
        raise RepomanError(f"--max-config-size {args.max_config_size}: must be at least 1")
    if args.http_workers < 1:
        raise RepomanError(f"--http-workers {args.http_workers}: must be at least 1")
    if args.switch_interval_us < 1:
        raise RepomanError(f"--switch-interval-us {args.switch_interval_us}: must be at least 1")
    limits = _body_limits(args)
    grpc_options = _grpc_options(args, limits)
    budget = _memory_budget(args.memory_budget)
    # NOTE: backends release the GIL while computing but need it back to return their
    # outputs; with Python's 5 ms default a worker can wait that long behind the event loop
    # (a 3.5 ms onnxruntime batch measured 8.7 ms next to a busy Python thread, 4.0 at 1 ms).
    sys.setswitchinterval(args.switch_interval_us / 1e6)
    pm, report = make_plugin_manager(
        plugins_dir=plugins_dir_for(args.plugins_dir, repository), blocked=args.block_plugin
    )
    registry = build_backend_registry(pm, report)
    manager: ModelManager | None = None

    def on_hung(version: ModelVersion, reason: str) -> None:
        if manager is not None:
            manager.mark_unhealthy(version, reason)

    scheduler = SharedScheduler(
        args.num_batch_threads, execution_timeout=args.execution_timeout, on_hung=on_hung
    )
    dispatcher = Dispatcher(scheduler)

    hubs: list[FrontendHub] = []  # NOTE: the front-ends' hub, when there are front-ends

    def on_state(model: str, version: int, state: str, reason: str) -> None:
        pm.hook.repoman_version_state_changed(
            model=model, version=version, state=state, reason=reason
        )
        if manager is not None:
            dispatcher.recheck(manager)
        for hub in hubs:
            hub.routes_changed()

    def usage(version: ModelVersion) -> tuple[float, int, bool, bool]:
        stats = dispatcher.stats(version)
        return (
            stats.last_inference_ms / 1000,
            stats.success.count + stats.fail.count,
            dispatcher.queued(version) > 0,
            dispatcher.executing(version) > 0,
        )

    manager = ModelManager(
        registry,
        dispatcher,
        on_state=on_state,
        load_timeout=args.model_load_timeout,
        blocked=dispatcher.blocked,
        books=MemoryBooks(budget),
        lazy_default=args.lazy_load,
        usage=usage,
    )
    dispatcher.bind(manager.route, manager.loaded)
    scheduler.bind_calls(ModelCalls(manager, dispatcher))  # NOTE: models calling models (BLS)
    single = _single_model(repository, args.model_name)
    source = RepositorySource(
        repository,
        manager,
        Resolver(registry, auto_complete=not args.disable_auto_complete_config),
        mode=args.model_control_mode,
        options=ScanOptions(
            quiet=args.quiet_period,
            ready_marker=args.version_ready_file,
            max_config_bytes=args.max_config_size,
        ),
        rescan_every=args.repository_poll_secs,
        initial=tuple(args.load_model),
        resolve_timeout=args.model_load_timeout,
        single=single,
    )
    explicit = args.model_control_mode == "explicit"
    service = InferenceService(
        manager, dispatcher, source if explicit else None, repository=repository, report=source
    )

    def metrics_sources() -> list[tuple[str, Callable[[], object]]]:
        # NOTE: each plugin's hook on its own, so one that fails leaves the others' text.
        return [
            (impl.plugin_name, impl.function)
            for impl in pm.hook.repoman_metrics_text.get_hookimpls()
        ]

    metrics = Metrics(manager, dispatcher, metrics_sources)

    async def models(app: object) -> AsyncIterator[None]:
        async def first_load() -> None:
            try:
                await source.start()
            except Exception:
                log.exception("the first pass over the repository failed")
                raise
            # NOTE: started: young-generation passes rare from now on (after the one
            # collection settle makes, so no request waits for it)
            collector.settle()
            service.set_ready(True)
            for hub in hubs:
                hub.routes_changed()
            _log_table(manager)

        task = asyncio.create_task(first_load())
        idle = asyncio.create_task(manager.run_idle_unloads())
        yield
        service.set_ready(False)
        task.cancel()
        idle.cancel()
        await asyncio.gather(task, idle, return_exceptions=True)
        await source.stop()
        # NOTE: bounded whatever a backend does: a version whose batch never returns would
        # otherwise never finish draining, and the process would never exit.
        try:
            await asyncio.wait_for(manager.shutdown(), args.shutdown_timeout)
        except TimeoutError:
            log.error(
                "stopping: versions still busy after %g s (--shutdown-timeout); exiting anyway",
                args.shutdown_timeout,
            )
        await scheduler.close(args.shutdown_timeout)

    token = args.control_token or os.environ.get(TOKEN_VARIABLE) or None
    if args.protect_inference and not token:
        raise RepomanError(f"--protect-inference needs --control-token (or {TOKEN_VARIABLE})")
    if token and not _valid_token(token):
        raise RepomanError(
            "the control token must be printable ASCII without spaces (RFC 6750), "
            "or clients could never present it"
        )
    if explicit and not token and not args.disable_repository_api:
        log.warning(
            "--model-control-mode explicit without a control token: anyone who can reach this "
            "server's port (on %s) can load any model config through the repository API; set "
            "--control-token (or %s), or --disable-repository-api",
            args.host,
            TOKEN_VARIABLE,
        )
    access = AccessPolicy(
        control_token=token,
        repository_api=not args.disable_repository_api,
        protect_inference=args.protect_inference,
    )
    if args.http_workers > 1:
        await serve_with_frontends(
            args.http_workers,
            args.host,
            args.http_port,
            service=service,
            manager=manager,
            dispatcher=dispatcher,
            metrics=metrics,
            models=models,
            options=FrontendOptions(
                limits=dataclasses.asdict(limits),
                access=dataclasses.asdict(access),
                keepalive_timeout=args.keepalive_timeout,
                shutdown_timeout=args.shutdown_timeout,
                access_log=args.access_log,
                log_level=args.log_level,
                log_format=args.log_format,
            ),
            serving_what=f"repository {repository}",
            hub_ready=hubs.append,
            grpc=grpc_options,
        )
        return 0
    background = [models]
    if grpc_options is not None:
        # NOTE: bound now, so a taken port is one clear error before any model loads; it
        # starts after the models' context and stops before it (cleanup runs in reverse).
        edge = GrpcEdge(service, access, grpc_options)
        edge.bind()
        background.append(edge.lifecycle)
    app = make_app(
        service,
        metrics,
        background=background,
        limits=limits,
        access=access,
    )
    await serve_until_stopped(
        app,
        args.host,
        args.http_port,
        access_log=args.access_log,
        shutdown_timeout=args.shutdown_timeout,
        serving_what=f"repository {repository}",
        keepalive_timeout=args.keepalive_timeout,
    )
    return 0


def _memory_budget(text: str | None) -> int | None:
    """``--memory-budget`` in bytes (None: no budget)."""
    if text is None:
        return None
    total = machine_memory()
    try:
        budget = parse_size(text, total)
    except ValueError as exc:
        raise RepomanError(f"--memory-budget {text}: {exc}") from None
    # NOTE: freed model buffers go back to the system, so what each load adds to the
    # resident set is its own and an eviction frees what it says.
    fix_mmap_threshold()
    log.info(
        "memory budget: %s for loaded models (this machine or container has %s)",
        format_size(budget),
        format_size(total),
    )
    return budget


def _single_model(repository: Path, name: str | None) -> str | None:
    """The name to serve ``repository`` under when it is itself one model folder, else None."""
    if not looks_like_a_model(repository):
        return None
    single = name or repository.resolve().name
    if not valid_model_name(single):
        raise RepomanError(
            f"{repository} is one model folder, and '{single}' is not a valid model name: "
            "give one with --model-name"
        )
    log.info(
        "%s is one model folder (not a repository of them): serving it as '%s'", repository, single
    )
    return single


def _grpc_options(args: argparse.Namespace, limits: BodyLimits) -> GrpcOptions | None:
    """Where to serve gRPC (None: --grpc-port -1, off)."""
    port = args.grpc_port
    if port == OFF:
        return None
    if not 0 <= port <= 65535:
        raise RepomanError(f"--grpc-port {port}: must be a port number (0 picks one; -1: off)")
    if port != 0 and port == args.http_port:
        raise RepomanError(f"--grpc-port {port}: it is the HTTP port too; give each its own")
    return GrpcOptions(
        host=args.host,
        port=port,
        max_message_bytes=limits.max_bytes,
        grace=args.shutdown_timeout,
    )


def _valid_token(token: str) -> bool:
    return token.isascii() and token.isprintable() and " " not in token


def _body_limits(args: argparse.Namespace) -> BodyLimits:
    for option, value in (
        ("--max-request-size", args.max_request_size),
        ("--max-json-size", args.max_json_size),
        ("--request-read-timeout", args.request_read_timeout),
        ("--keepalive-timeout", args.keepalive_timeout),
    ):
        if not 0 < value < math.inf:  # NOTE: also refuses NaN, which float() reads
            raise RepomanError(f"{option} {value}: must be a number more than 0")
    return BodyLimits(
        max_bytes=args.max_request_size,
        max_json_bytes=min(args.max_json_size, args.max_request_size),
        read_timeout=args.request_read_timeout,
    )


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
