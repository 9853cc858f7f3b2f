"""The one place errors become HTTP responses: ``{"error": "..."}`` with the error's status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from repoman.errors import RepomanError
from repoman.server.encode import encode_error

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=encode_error(message), content_type="application/json")


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """RepomanError -> its status; aiohttp's HTTP errors -> JSON; anything else -> 500, logged."""
    try:
        return await handler(request)
    except RepomanError as exc:
        return error_response(exc.status, exc.message)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(exc.status, f"request body too large: {exc.text}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason)
    except Exception as exc:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")
