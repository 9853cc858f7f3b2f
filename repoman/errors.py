"""The one error hierarchy: every failure a user can see is a RepomanError of a kind, which
says the HTTP status (and, to another transport, its own status)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any


class ErrorKind(enum.IntEnum):
    """What went wrong, in transport-neutral terms: Triton's ``TRITONSERVER_Error`` codes,
    with their numbers (the codes of ``pb_utils.TritonError`` too).

    A transport maps each kind to its own status once: HTTP through ``http_status`` (Triton's
    own mapping), gRPC in its transport.
    """

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    @property
    def http_status(self) -> HTTPStatus:
        return _HTTP_STATUS[self]


# NOTE: as Triton's HTTP endpoint answers (http_server.cc, HttpCodeFromError): the kinds with
# no status of their own (UNKNOWN among them) are a 400 there, not a 500.
_HTTP_STATUS = {
    ErrorKind.UNKNOWN: HTTPStatus.BAD_REQUEST,
    ErrorKind.INTERNAL: HTTPStatus.INTERNAL_SERVER_ERROR,
    ErrorKind.NOT_FOUND: HTTPStatus.NOT_FOUND,
    ErrorKind.INVALID_ARG: HTTPStatus.BAD_REQUEST,
    ErrorKind.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    ErrorKind.UNSUPPORTED: HTTPStatus.NOT_IMPLEMENTED,
    ErrorKind.ALREADY_EXISTS: HTTPStatus.BAD_REQUEST,
    ErrorKind.CANCELLED: HTTPStatus.BAD_REQUEST,
}


class RepomanError(Exception):
    """Base of every error repoman reports to a user.

    ``kind`` says what went wrong; ``status``, the HTTP status the server answers with, is
    the kind's unless a class names a more precise one (413, 415, 504 ...). Domain code never
    imports the web framework: the server's middleware translates once. ``kind`` given to
    the constructor overrides the class's, status included.
    """

    kind: ErrorKind = ErrorKind.INTERNAL
    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # NOTE: a class that names its kind and no status gets the kind's; one that names
        # neither keeps what it inherits (a subclass of a 504 is a 504).
        if "kind" in cls.__dict__ and "status" not in cls.__dict__:
            cls.status = cls.kind.http_status

    def __init__(self, message: str, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
            self.status = kind.http_status

    def __str__(self) -> str:
        return self.message


class InvalidRequest(RepomanError):
    """The request body, a tensor or a parameter is malformed or does not fit the model."""

    kind = ErrorKind.INVALID_ARG


class UnknownOutput(InvalidRequest):
    """A request asked for an output the model does not have."""


class UnsupportedMediaType(RepomanError):
    """The request body is of a kind the endpoint does not read."""

    kind = ErrorKind.INVALID_ARG
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class PayloadTooLarge(RepomanError):
    """The request body (or its JSON part, or what it inflates to) is over a size limit."""

    kind = ErrorKind.INVALID_ARG
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class BodyTimeout(RepomanError):
    """The client did not send the whole request body within the read timeout (408)."""

    kind = ErrorKind.INVALID_ARG
    status = HTTPStatus.REQUEST_TIMEOUT


class ModelNotFound(RepomanError):
    """No such model, or no such version of it, is known to the server."""

    kind = ErrorKind.NOT_FOUND

    def __init__(self, name: str, version: int | str | None = None) -> None:
        self.name = name
        self.version = version
        if version is None or version == "":
            message = f"unknown model: '{name}'"
        else:
            message = f"unknown version {version} of model '{name}'"
        super().__init__(message)


class ModelNotReady(RepomanError):
    """The model (or version) is known but cannot serve right now."""

    kind = ErrorKind.UNAVAILABLE

    def __init__(self, name: str, version: int | None = None, reason: str = "") -> None:
        self.name = name
        self.version = version
        what = f"model '{name}'" if version is None else f"version {version} of model '{name}'"
        message = f"{what} is not ready"
        if reason:
            message += f": {reason}"
        super().__init__(message)


class LoadFailed(RepomanError):
    """A load asked for through the repository API failed (400, as Triton answers)."""

    kind = ErrorKind.INVALID_ARG

    def __init__(self, name: str, failures: list[str]) -> None:
        self.name = name
        self.failures = failures
        super().__init__(f"failed to load '{name}': " + "; ".join(failures))


class OutOfMemoryBudget(LoadFailed):
    """A load asked for through the repository API does not fit in the memory budget (507):
    the version alone is larger than it, or versions that cannot be unloaded now hold it."""

    kind = ErrorKind.UNAVAILABLE
    status = HTTPStatus.INSUFFICIENT_STORAGE


class StepFailed(RepomanError):
    """One step of an ensemble failed, so the ensemble's request did: the status is the step's."""

    def __init__(
        self, ensemble: str, step: int, member: str, version: int | None, cause: BaseException
    ) -> None:
        self.ensemble, self.step, self.member, self.cause = ensemble, step, member, cause
        self.status = cause.status if isinstance(cause, RepomanError) else HTTPStatus(500)
        which = f"model '{member}'" + (f" version {version}" if version is not None else "")
        detail = (
            str(cause) if isinstance(cause, RepomanError) else f"{type(cause).__name__}: {cause}"
        )
        super().__init__(f"ensemble '{ensemble}': step {step} ({which}) failed: {detail}")


class ServerBusy(RepomanError):
    """A queue is full; the caller may retry later (503, as Triton answers)."""

    kind = ErrorKind.UNAVAILABLE


class RequestTimeout(RepomanError):
    """A request's queue deadline passed before a worker could take it (504)."""

    kind = ErrorKind.UNAVAILABLE
    status = HTTPStatus.GATEWAY_TIMEOUT


class BackendError(RepomanError):
    """A backend failed while loading or executing a model."""

    kind = ErrorKind.INTERNAL


class ExecutionTimeout(BackendError):
    """A backend call ran past the execution timeout and was written off."""

    status = HTTPStatus.GATEWAY_TIMEOUT


class PluginError(RepomanError):
    """A plugin could not be loaded or registered something invalid."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a model configuration, located as precisely as the source allows."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str
    hint: str = ""
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.severity}: "
        if self.field:
            text += f"{self.field}: "
        text += self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class ConfigError(RepomanError):
    """A model configuration is invalid. Carries every issue found, each with its location."""

    kind = ErrorKind.INVALID_ARG

    def __init__(self, issues: list[ConfigIssue]) -> None:
        if not issues:
            raise ValueError("ConfigError needs at least one issue")
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))
