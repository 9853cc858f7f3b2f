"""The HTTP edge: KServe v2 over aiohttp. The only package that imports aiohttp."""

from repoman.server.app import make_app

__all__ = ["make_app"]
