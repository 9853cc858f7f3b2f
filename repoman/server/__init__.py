"""The HTTP edge: KServe v2 over aiohttp. The only server-side package that imports aiohttp."""

from repoman.server.app import make_app
from repoman.server.auth import AccessPolicy
from repoman.server.body import BodyLimits
from repoman.server.run import serve_until_stopped

__all__ = ["AccessPolicy", "BodyLimits", "make_app", "serve_until_stopped"]
