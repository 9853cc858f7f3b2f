"""Access control: the repository (control) API behind a bearer token, optionally inference too."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from repoman.server.middleware import Handler, error_response

REPOSITORY_PREFIX = "/v2/repository"
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")


@dataclass(frozen=True)
class AccessPolicy:
    """Who may call what.

    ``control_token``: when set, the repository API (index, load, unload) needs
    ``Authorization: Bearer <token>``. ``repository_api``: False turns that API off
    entirely (403). ``protect_inference``: the token is needed for everything else too
    (inference, metadata, statistics, metrics), except the health endpoints, which
    orchestrators probe without credentials.
    """

    control_token: str | None = None
    repository_api: bool = True
    protect_inference: bool = False

    @property
    def restricts(self) -> bool:
        """Whether any request could be refused (else the check need not run at all)."""
        return self.control_token is not None or not self.repository_api or self.protect_inference


def access_middleware(policy: AccessPolicy) -> Middleware:
    @web.middleware
    async def check_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith(REPOSITORY_PREFIX):
            if not policy.repository_api:
                return error_response(403, "the repository API is disabled on this server")
            denied = _check_token(request, policy.control_token)
        elif policy.protect_inference and path not in OPEN_PATHS:
            denied = _check_token(request, policy.control_token)
        else:
            denied = None
        return denied if denied is not None else await handler(request)

    return check_access


def _check_token(request: web.Request, token: str | None) -> web.Response | None:
    if token is None:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    # NOTE: a token is ASCII (RFC 6750); aiohttp hands other header bytes over as lone
    # surrogates, which cannot even be encoded for the comparison below.
    if scheme.lower() != "bearer" or not presented or not presented.isascii():
        response = error_response(401, "this endpoint needs 'Authorization: Bearer <token>'")
        response.headers["WWW-Authenticate"] = 'Bearer realm="repoman"'
        return response
    # NOTE: constant-time comparison, so response timing does not leak the token.
    if not hmac.compare_digest(presented.encode(), token.encode()):
        return error_response(403, "the bearer token is not valid for this endpoint")
    return None
