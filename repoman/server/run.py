"""Running the HTTP app: listen, say where, serve until SIGINT/SIGTERM, then stop in order."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from repoman.errors import RepomanError

log = logging.getLogger("repoman")


async def serve_until_stopped(
    app: web.Application,
    host: str,
    port: int,
    *,
    access_log: bool,
    shutdown_timeout: float,
    serving_what: str,
) -> None:
    """Listen on ``host:port`` (0: any free port, logged), serve until a stop signal, then
    finish in-flight requests (at most ``shutdown_timeout`` s) and run the app's cleanup."""
    runner = web.AppRunner(
        app,
        access_log=log if access_log else None,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        # NOTE: a client that goes away cancels its handler, so its queued request (and
        # its body) is dropped at once instead of waiting for a worker.
        handler_cancellation=True,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise RepomanError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    for address in runner.addresses:
        bound_host, bound_port = address[0], address[1]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        log.info("listening on http://%s:%d (%s)", shown, bound_port, serving_what)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: finishing in-flight requests, then unloading models")
    await runner.cleanup()
    log.info("stopped")
