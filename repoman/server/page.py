"""The status page: its three static files, and ``/status.json``, the document it polls."""

from __future__ import annotations

import json
from importlib import resources

from aiohttp import web

from repoman.server.keys import ACCESS, SERVICE
from repoman.server.policy import Scope

_FILES = {
    "/": ("index.html", "text/html"),
    "/status.js": ("status.js", "text/javascript"),
    "/status.css": ("status.css", "text/css"),
}
_HEADERS = {
    # NOTE: the page loads nothing from elsewhere and runs only its own script.
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("repoman.server").joinpath("page", name).read_bytes()


async def page_file(request: web.Request) -> web.Response:
    """``/``, ``/status.js``, ``/status.css``: no data in them (anyone may fetch them)."""
    name, content_type = _FILES[request.path]
    return web.Response(
        body=_read(name), content_type=content_type, charset="utf-8", headers=_HEADERS
    )


async def status_json(request: web.Request) -> web.Response:
    """What the page shows: a DATA request (the token when inference is protected); what the
    watcher saw and the load/unload actions only for a caller the repository API answers
    (``control``: and who gave a token, as the page's buttons need)."""
    authorization = request.headers.get("Authorization", "")
    repository = request.app[ACCESS].check(Scope.REPOSITORY, authorization) is None
    document = await request.app[SERVICE].status(repository)
    document["control"] = bool(document.get("control")) and repository and bool(authorization)
    return web.Response(
        body=json.dumps(document).encode(),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


ROUTES = [
    web.get("/", page_file),
    web.get("/status.js", page_file),
    web.get("/status.css", page_file),
    web.get("/status.json", status_json),
]
