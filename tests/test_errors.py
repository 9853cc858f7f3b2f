"""Error kinds: one mapping to HTTP statuses (Triton's), and what each error class is."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from repoman.errors import (
    BackendError,
    ConfigError,
    ConfigIssue,
    ErrorKind,
    ExecutionTimeout,
    InvalidRequest,
    LoadFailed,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    RepomanError,
    RequestTimeout,
    ServerBusy,
)


# NOTE: as Triton's HTTP endpoint answers (http_server.cc, HttpCodeFromError).
@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (ErrorKind.UNKNOWN, 400),
        (ErrorKind.INTERNAL, 500),
        (ErrorKind.NOT_FOUND, 404),
        (ErrorKind.INVALID_ARG, 400),
        (ErrorKind.UNAVAILABLE, 503),
        (ErrorKind.UNSUPPORTED, 501),
        (ErrorKind.ALREADY_EXISTS, 400),
        (ErrorKind.CANCELLED, 400),
    ],
)
def test_each_kind_has_triton_s_http_status(kind, status):
    assert kind.http_status == status
    error = RepomanError("it broke", kind)
    assert (error.kind, error.status, str(error)) == (kind, status, "it broke")


def test_the_kinds_are_triton_s_error_codes_by_number():
    names = ["UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE", "UNSUPPORTED"]
    assert [k.name for k in ErrorKind] == [*names, "ALREADY_EXISTS", "CANCELLED"]
    assert [int(k) for k in ErrorKind] == list(range(8))


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        (RepomanError("x"), ErrorKind.INTERNAL, 500),
        (InvalidRequest("x"), ErrorKind.INVALID_ARG, 400),
        (PayloadTooLarge("x"), ErrorKind.INVALID_ARG, 413),
        (ModelNotFound("m"), ErrorKind.NOT_FOUND, 404),
        (ModelNotReady("m"), ErrorKind.UNAVAILABLE, 503),
        (LoadFailed("m", ["why"]), ErrorKind.INVALID_ARG, 400),
        (ServerBusy("x"), ErrorKind.UNAVAILABLE, 503),
        (RequestTimeout("x"), ErrorKind.UNAVAILABLE, 504),
        (BackendError("x"), ErrorKind.INTERNAL, 500),
        (ExecutionTimeout("x"), ErrorKind.INTERNAL, 504),
        (ConfigError([ConfigIssue("f", 1, 1, "x", "bad")]), ErrorKind.INVALID_ARG, 400),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_each_error_class_has_a_kind_and_a_status(error, kind, status):
    assert (error.kind, error.status) == (kind, HTTPStatus(status))


def test_a_kind_given_to_an_error_sets_its_status_and_leaves_its_class_alone():
    error = BackendError("not here", ErrorKind.NOT_FOUND)
    assert (error.kind, error.status) == (ErrorKind.NOT_FOUND, 404)
    assert (BackendError.kind, BackendError.status) == (ErrorKind.INTERNAL, 500)


def test_a_subclass_keeps_its_parent_s_precise_status_unless_it_names_a_kind():
    class SlowerTimeout(RequestTimeout):
        pass

    class Missing(BackendError):
        kind = ErrorKind.NOT_FOUND

    assert SlowerTimeout.status == 504
    assert (Missing.kind, Missing.status) == (ErrorKind.NOT_FOUND, 404)
