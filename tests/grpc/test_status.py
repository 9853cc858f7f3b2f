"""The error -> gRPC status table: by type, by the type a front-end was told, by HTTP status."""

from __future__ import annotations

import grpc
import pytest

from repoman import errors
from repoman.grpc.status import BY_ERROR, status_of
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


def test_every_error_type_is_in_the_table_or_under_a_listed_base():
    def subclasses(kind):
        for sub in kind.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for kind in subclasses(errors.RepomanError):
        if kind.__module__ == "repoman.errors":
            listed = [base for base in kind.__mro__ if base in BY_ERROR]
            assert listed and listed[0] is not errors.RepomanError, kind


def test_an_unlisted_subclass_takes_its_nearest_listed_base():
    class Oddly(errors.ServerBusy):
        pass

    assert status_of(Oddly("x")) is Code.RESOURCE_EXHAUSTED


def test_a_front_end_maps_the_cores_error_by_its_type_name_then_its_status():
    assert status_of(RemoteError(503, "queue is full", "ServerBusy")) is Code.RESOURCE_EXHAUSTED
    assert status_of(RemoteError(503, "not ready", "ModelNotReady")) is Code.UNAVAILABLE
    assert status_of(RemoteError(503, "went away")) is Code.UNAVAILABLE
    assert status_of(RemoteError(404, "unknown model: 'm'", "Unheard")) is Code.NOT_FOUND
    assert status_of(RemoteError(418, "teapot")) is Code.INTERNAL
