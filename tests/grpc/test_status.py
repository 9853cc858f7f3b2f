"""The error -> gRPC status table: by kind, by the few precise types (also as a front-end is
told them), and the access policy by HTTP status."""

from __future__ import annotations

from http import HTTPStatus

import grpc
import pytest

from repoman import errors
from repoman.errors import ErrorKind
from repoman.grpc.status import BY_KIND, status_of
from repoman.multiproc.remote import RemoteError

Code = grpc.StatusCode


@pytest.mark.parametrize(("error", "code"), [
    (errors.InvalidRequest("x"), Code.INVALID_ARGUMENT),
    (errors.ModelNotFound("m"), Code.NOT_FOUND),
    (errors.ModelNotReady("m"), Code.UNAVAILABLE),
    (errors.ServerBusy("queue is full"), Code.RESOURCE_EXHAUSTED),
    (errors.RequestTimeout("timeout"), Code.DEADLINE_EXCEEDED),
    (errors.ExecutionTimeout("timeout"), Code.DEADLINE_EXCEEDED),
    (errors.BackendError("boom"), Code.INTERNAL),
    (errors.LoadFailed("m", ["bad"]), Code.INVALID_ARGUMENT),
    (errors.PayloadTooLarge("big"), Code.RESOURCE_EXHAUSTED),
    (errors.RepomanError("plain"), Code.INTERNAL),
])
def test_each_error_type_has_tritons_code(error, code):
    assert status_of(error) is code


def test_every_kind_has_a_code():
    assert set(BY_KIND) == set(ErrorKind)


@pytest.mark.parametrize(("kind", "code"), [
    (ErrorKind.UNSUPPORTED, Code.UNIMPLEMENTED),
    (ErrorKind.ALREADY_EXISTS, Code.ALREADY_EXISTS),
    (ErrorKind.CANCELLED, Code.CANCELLED),
    (ErrorKind.UNKNOWN, Code.UNKNOWN),
    (ErrorKind.NOT_FOUND, Code.NOT_FOUND),
])
def test_an_error_given_a_kind_takes_that_kinds_code(kind, code):
    # e.g. a Python model's TritonError(msg, TritonError.UNSUPPORTED)
    assert status_of(errors.BackendError("model said so", kind)) is code


def test_the_access_policy_answers_by_status():
    denied = errors.RepomanError("no token")
    denied.status = HTTPStatus.UNAUTHORIZED
    assert status_of(denied) is Code.UNAUTHENTICATED
    denied.status = HTTPStatus.FORBIDDEN
    assert status_of(denied) is Code.PERMISSION_DENIED


def test_an_unlisted_subclass_takes_its_nearest_listed_base():
    class Oddly(errors.ServerBusy):
        pass

    assert status_of(Oddly("x")) is Code.RESOURCE_EXHAUSTED


def test_a_front_end_maps_the_cores_error_by_its_type_name_then_its_kind():
    busy = RemoteError(503, "queue is full", "ServerBusy", ErrorKind.UNAVAILABLE)
    assert status_of(busy) is Code.RESOURCE_EXHAUSTED
    assert status_of(RemoteError(503, "not ready", "ModelNotReady", 4)) is Code.UNAVAILABLE
    assert status_of(RemoteError(503, "went away")) is Code.UNAVAILABLE
    assert status_of(RemoteError(404, "unknown model: 'm'", "Unheard", 2)) is Code.NOT_FOUND
    assert status_of(RemoteError(501, "model said so", "BackendError", 5)) is Code.UNIMPLEMENTED
