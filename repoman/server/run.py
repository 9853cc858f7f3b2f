"""Running the HTTP app: listen, say where, serve until SIGINT/SIGTERM, then stop in order."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from repoman.errors import RepomanError

log = logging.getLogger("repoman")

DEFAULT_KEEPALIVE_TIMEOUT_S = 75.0
"""aiohttp's run_app default (and nginx's); AppRunner alone would keep an idle connection 3630 s."""


async def serve_until_stopped(
    app: web.Application,
    host: str,
    port: int,
    *,
    access_log: bool,
    shutdown_timeout: float,
    serving_what: str,
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT_S,
) -> None:
    """Listen on ``host:port`` (0: any free port, logged), serve until a stop signal, then
    finish in-flight requests (at most ``shutdown_timeout`` s) and run the app's cleanup.

    ``keepalive_timeout``: a connection is closed once it has been idle that long, counting
    from when it opened or its last response; a request whose headers have not all arrived
    by then counts as idle, which is aiohttp's only bound on slow headers.
    """
    runner = web.AppRunner(
        app,
        access_log=log if access_log else None,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        # NOTE: a client that goes away cancels its handler, so its queued request (and
        # its body) is dropped at once instead of waiting for a worker.
        handler_cancellation=True,
        keepalive_timeout=keepalive_timeout,
        # NOTE: bodies reach the handlers as sent; server/body.py inflates gzip and deflate
        # itself, within the size limit and off the event loop, and refuses other codings
        # with a JSON 415 (aiohttp would answer an unknown one with a text/plain 400).
        auto_decompress=False,
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
