"""Who may call what: the access policy every transport asks (no web framework here)."""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from http import HTTPStatus


class Scope(enum.Enum):
    """What a request reaches, as the policy sees it (every transport names its own)."""

    HEALTH = "health"
    """Liveness and readiness: orchestrators probe them without credentials."""
    DATA = "data"
    """Inference, metadata, statistics, metrics."""
    REPOSITORY = "repository"
    """The repository API: index, load, unload."""


@dataclass(frozen=True)
class Denial:
    """Why a request is refused: 401 (no usable credentials) or 403, and the message."""

    status: HTTPStatus
    message: str

    @property
    def needs_credentials(self) -> bool:
        return self.status is HTTPStatus.UNAUTHORIZED


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

    def check(self, scope: Scope, authorization: str) -> Denial | None:
        """Why a request for ``scope`` with this ``Authorization`` value is refused; None
        when it may go ahead. The one decision HTTP and gRPC both ask for."""
        if scope is Scope.REPOSITORY:
            if not self.repository_api:
                return Denial(HTTPStatus.FORBIDDEN, "the repository API is disabled on this server")
            return _check_token(authorization, self.control_token)
        if scope is Scope.DATA and self.protect_inference:
            return _check_token(authorization, self.control_token)
        return None


def _check_token(authorization: str, token: str | None) -> Denial | None:
    if token is None:
        return None
    scheme, _, presented = authorization.partition(" ")
    presented = presented.strip()
    # NOTE: a token is ASCII (RFC 6750); aiohttp hands other header bytes over as lone
    # surrogates, which cannot even be encoded for the comparison below.
    if scheme.lower() != "bearer" or not presented or not presented.isascii():
        return Denial(
            HTTPStatus.UNAUTHORIZED, "this endpoint needs 'Authorization: Bearer <token>'"
        )
    # NOTE: constant-time comparison, so response timing does not leak the token.
    if not hmac.compare_digest(presented.encode(), token.encode()):
        return Denial(HTTPStatus.FORBIDDEN, "the bearer token is not valid for this endpoint")
    return None
