"""The HTTP edge: KServe v2 over aiohttp. The only package that imports aiohttp."""

from repoman.server.app import make_app
from repoman.server.auth import AccessPolicy

__all__ = ["AccessPolicy", "make_app"]
