"""The one table from repoman's errors to gRPC status codes (the codes Triton answers with)."""

from __future__ import annotations

from http import HTTPStatus

import grpc

from repoman import errors

BY_ERROR: dict[type[errors.RepomanError], grpc.StatusCode] = {
    errors.InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    errors.UnsupportedMediaType: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.LoadFailed: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    errors.ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    errors.ServerBusy: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.RequestTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.BodyTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.ExecutionTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.BackendError: grpc.StatusCode.INTERNAL,
    errors.PluginError: grpc.StatusCode.INTERNAL,
    errors.RepomanError: grpc.StatusCode.INTERNAL,
}
"""Each error type's code; a subclass not listed takes its nearest listed base's."""

_BY_NAME = {
    kind.__name__: code for kind, code in BY_ERROR.items() if kind is not errors.RepomanError
}

BY_HTTP_STATUS: dict[int, grpc.StatusCode] = {
    HTTPStatus.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    HTTPStatus.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    HTTPStatus.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    HTTPStatus.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    HTTPStatus.REQUEST_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    HTTPStatus.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: grpc.StatusCode.INVALID_ARGUMENT,
    HTTPStatus.TOO_MANY_REQUESTS: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.NOT_IMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    HTTPStatus.SERVICE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    HTTPStatus.GATEWAY_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
}
"""For an error known only by its HTTP status (and for the access policy's 401/403)."""


def status_of(error: errors.RepomanError) -> grpc.StatusCode:
    """The gRPC code for ``error``: by its type (its nearest listed base), by the type name a
    front-end was told (``kind``: the core's error type), else by its HTTP status.

    NOTE: the base RepomanError is the last resort only, as its status may be set per error.
    """
    for kind in type(error).__mro__:
        if kind is errors.RepomanError:
            break
        code = BY_ERROR.get(kind)
        if code is not None:
            return code
    named = _BY_NAME.get(getattr(error, "kind", ""))
    if named is not None:
        return named
    return BY_HTTP_STATUS.get(int(error.status), BY_ERROR[errors.RepomanError])
