"""The one place errors become HTTP responses: ``{"error": "..."}`` with the error's status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import HttpVersion11, hdrs, web

from repoman.errors import RepomanError
from repoman.names import parse_version
from repoman.server.encode import encode_error
from repoman.server.keys import LIMITS, SERVICE

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CLOSING = frozenset({HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.REQUEST_ENTITY_TOO_LARGE})
"""Statuses answered before the body was read in full: the connection cannot carry on."""

LINGER_S = 1.0
"""How long a 408 or 413 waits for the rest of the body before closing (aiohttp waits 10 s)."""


def error_response(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=encode_error(message), content_type="application/json")


async def _answer_and_close(request: web.Request, response: web.Response) -> web.Response:
    """Send ``response`` now, drop what the client still sends for at most LINGER_S, close.

    NOTE: aiohttp would read and drop the rest of the body for up to 10 s to keep the
    connection. Closing with unread bytes makes the kernel reset the connection, and a client
    still sending would lose the answer; the short linger lets one that is nearly done read it.
    """
    response.force_close()  # says "Connection: close"
    await response.prepare(request)
    await response.write_eof()
    with contextlib.suppress(TimeoutError, ConnectionError, web.RequestPayloadError):
        async with asyncio.timeout(LINGER_S):
            while await request.content.readany():
                pass
    request.protocol.force_close()
    return response


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """RepomanError -> its status; aiohttp's HTTP errors -> JSON; anything else -> 500, logged.

    Messages name files relative to the model repository (the service redacts its root):
    clients, who may be anyone, learn nothing of the server's directory layout. A declared
    body over the limit is refused first (:func:`refuse_oversized_body`).

    NOTE: one middleware for both: each layer costs every request a coroutine and aiohttp's
    wrapper around it (~3 µs), a few percent of a small inference.
    """
    try:
        refuse_oversized_body(request)
        return await handler(request)
    except RepomanError as exc:
        response = error_response(exc.status, request.app[SERVICE].redact(exc.message))
        return await _answer_and_close(request, response) if exc.status in CLOSING else response
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(exc.status, f"request body too large: {exc.text}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason)
    except Exception as exc:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        # NOTE: the exception's text stays in the log: it may name files or show internals.
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")


def refuse_oversized_body(request: web.Request) -> None:
    """413 at once for a declared Content-Length over the limit, before the body arrives."""
    declared = request.content_length
    if declared is not None and declared > (limits := request.app[LIMITS]).max_bytes:
        count_refusal(request, "too_large")
        raise limits.too_large(declared)


def inference_target(request: web.Request) -> tuple[str, int | None] | None:
    """The model and version an ``/infer`` request names (None for any other route, or a
    version that is not a number): where the edge counts a request it refuses early."""
    model = request.match_info.get("model")
    if model is None or request.method != "POST" or not request.path.endswith("/infer"):
        return None
    raw = request.match_info.get("version")
    try:
        return model, (parse_version(raw) if raw else None)
    except RepomanError:
        return None


def count_refusal(request: web.Request, reason: str) -> None:
    """Count an inference request refused here, before its handler (and the data plane)."""
    target = inference_target(request)
    if target is not None:
        request.app[SERVICE].refused(*target, reason)


async def continue_within_limits(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: "100 Continue", or the 413 at once for a body over the limit.

    NOTE: aiohttp calls a route's expect handler before any middleware, and its default one
    says "100 Continue" whatever the length: the client would then send a body refused anyway.
    """
    limits = request.app[LIMITS]
    declared = request.content_length
    if declared is not None and declared > limits.max_bytes:
        count_refusal(request, "too_large")
        refusal = limits.too_large(declared)
        return await _answer_and_close(request, error_response(refusal.status, refusal.message))
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version != HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
    # As aiohttp's own handler: the interim answer does not count as the response's output.
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0
    return None
