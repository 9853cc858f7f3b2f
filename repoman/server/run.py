"""Running the HTTP app: listen, say where, serve until SIGINT/SIGTERM, then stop in order."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket

from aiohttp import web

from repoman.errors import RepomanError

log = logging.getLogger("repoman")

DEFAULT_KEEPALIVE_TIMEOUT_S = 75.0
"""aiohttp's run_app default (and nginx's); AppRunner alone would keep an idle connection 3630 s."""


def _runner(
    app: web.Application, *, access_log: bool, shutdown_timeout: float, keepalive_timeout: float
) -> web.AppRunner:
    return web.AppRunner(
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


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: any free port), to share with front-end
    processes; RepomanError when it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        raise RepomanError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def log_listening(addresses: list[tuple[str, int]], serving_what: str) -> None:
    for bound_host, bound_port in addresses:
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        log.info("listening on http://%s:%d (%s)", shown, bound_port, serving_what)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


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
    runner = _runner(
        app,
        access_log=access_log,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=keepalive_timeout,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise RepomanError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    log_listening([(a[0], a[1]) for a in runner.addresses], serving_what)
    await stop_on_signals().wait()
    log.info("stopping: finishing in-flight requests, then unloading models")
    await runner.cleanup()
    log.info("stopped")


async def serve_on_socket(
    app: web.Application,
    sock: socket.socket,
    stop: asyncio.Event,
    *,
    access_log: bool,
    shutdown_timeout: float,
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT_S,
) -> None:
    """Serve on a listening socket shared with other processes until ``stop`` is set, then
    finish in-flight requests (at most ``shutdown_timeout`` s) and run the app's cleanup."""
    runner = _runner(
        app,
        access_log=access_log,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=keepalive_timeout,
    )
    await runner.setup()
    await web.SockSite(runner, sock).start()
    await stop.wait()
    await runner.cleanup()
