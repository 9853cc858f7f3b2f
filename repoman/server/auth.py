"""Access control: the repository (control) API behind a bearer token, optionally inference too."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from repoman.server.middleware import Handler, count_refusal, error_response
from repoman.server.policy import AccessPolicy, Denial, Scope

__all__ = ["AccessPolicy", "Denial", "Scope", "access_middleware"]

REPOSITORY_PREFIX = "/v2/repository"
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready", "/", "/status.js", "/status.css")
"""Paths anyone may fetch: the health endpoints, and the status page's files (which hold no
data: the page fetches /status.json, a DATA path, with the token the user types in)."""


def access_middleware(policy: AccessPolicy) -> Middleware:
    @web.middleware
    async def check_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith(REPOSITORY_PREFIX):
            scope = Scope.REPOSITORY
        elif path in OPEN_PATHS:
            scope = Scope.HEALTH
        else:
            scope = Scope.DATA
        denied = policy.check(scope, request.headers.get("Authorization", ""))
        if denied is None:
            return await handler(request)
        if scope is Scope.DATA:
            count_refusal(request, "unauthorized")
        response = error_response(denied.status, denied.message)
        if denied.needs_credentials:
            response.headers["WWW-Authenticate"] = 'Bearer realm="repoman"'
        return response

    return check_access
