"""Exceptions across the stub boundary: as plain data in the stub, rebuilt in the server."""

from __future__ import annotations

import builtins
from http import HTTPStatus

from repoman import BackendError, ErrorKind, RepomanError

ErrorInfo = tuple[bool, str, int, int, str]
"""An exception as plain data: (is a RepomanError, type name, kind, HTTP status, message)."""


def error_info(exc: BaseException) -> ErrorInfo:
    if isinstance(exc, RepomanError):
        return True, type(exc).__name__, int(exc.kind), int(exc.status), str(exc)
    return False, type(exc).__name__, int(ErrorKind.INTERNAL), 500, str(exc)


class _Reported(RepomanError):
    """A RepomanError raised in the stub, with its message, kind and HTTP status."""


def rebuilt_error(info: ErrorInfo, label: str) -> Exception:
    """The exception the stub reported, rebuilt: a RepomanError keeps its message, kind and
    status; a built-in exception is rebuilt as itself; another reads as the core would
    report it. (The stub is not trusted: a kind or status out of range reads as 500.)"""
    is_repoman, type_name, kind, status, message = info
    if is_repoman:
        known = (
            type(kind) is int
            and kind in set(ErrorKind)
            and type(status) is int
            and 400 <= status <= 599
        )
        error_kind = ErrorKind(kind) if known else ErrorKind.INTERNAL
        if error_kind is ErrorKind.INTERNAL:
            error: RepomanError = BackendError(message)
        else:
            error = _Reported(message, error_kind)
        error.status = HTTPStatus(status) if known else HTTPStatus.INTERNAL_SERVER_ERROR
        return error
    builtin = getattr(builtins, type_name, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        try:
            return builtin(message)
        except Exception:
            pass
    return BackendError(f"{label}: {type_name}: {message}")
