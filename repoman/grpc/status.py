"""The one table from repoman's errors to gRPC status codes (the codes Triton answers with)."""

from __future__ import annotations

from http import HTTPStatus

import grpc

from repoman import errors
from repoman.errors import ErrorKind

BY_KIND: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.UNKNOWN: grpc.StatusCode.UNKNOWN,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.INVALID_ARG: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.UNSUPPORTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.CANCELLED: grpc.StatusCode.CANCELLED,
}
"""Each kind's code, as Triton's gRPC endpoint maps its error codes."""

BY_ERROR: dict[type[errors.RepomanError], grpc.StatusCode] = {
    errors.ServerBusy: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.RequestTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.BodyTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.ExecutionTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
}
"""The errors with a more precise code than their kind's (as they have a more precise HTTP
status); a subclass takes its nearest listed base's."""

_BY_NAME = {kind.__name__: code for kind, code in BY_ERROR.items()}

BY_HTTP_STATUS: dict[int, grpc.StatusCode] = {
    HTTPStatus.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    HTTPStatus.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
}
"""The access policy's answers, known by their HTTP status alone."""


def status_of(error: errors.RepomanError) -> grpc.StatusCode:
    """The gRPC code for ``error``: the access policy's by HTTP status; then by its type (its
    nearest listed base) or the type name a front-end was told (``error_type``); else by its
    kind.
    """
    by_status = BY_HTTP_STATUS.get(int(error.status))
    if by_status is not None:
        return by_status
    for kind in type(error).__mro__:
        code = BY_ERROR.get(kind)
        if code is not None:
            return code
    named = _BY_NAME.get(getattr(error, "error_type", ""))
    if named is not None:
        return named
    return BY_KIND[error.kind]
