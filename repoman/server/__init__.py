"""The HTTP edge: KServe v2 over aiohttp. The only server-side package that imports aiohttp."""

from repoman.server.app import make_app
from repoman.server.auth import AccessPolicy
from repoman.server.body import BodyLimits
from repoman.server.run import (
    listen,
    log_listening,
    serve_on_socket,
    serve_until_stopped,
    stop_on_signals,
)

__all__ = [
    "AccessPolicy",
    "BodyLimits",
    "listen",
    "log_listening",
    "make_app",
    "serve_on_socket",
    "serve_until_stopped",
    "stop_on_signals",
]
