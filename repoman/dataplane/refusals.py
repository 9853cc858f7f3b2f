"""Why a request was refused before it reached a queue, as a FAILURE_REASONS entry."""

from __future__ import annotations

from http import HTTPStatus

from repoman.errors import BodyTimeout, PayloadTooLarge, RepomanError, UnknownOutput


def refusal_reason(error: RepomanError) -> str:
    """The ``reason`` label of a request refused before the queue with ``error``.

    Access refusals (401/403) are ``unauthorized``; a body over a limit ``too_large``; a body
    that did not arrive in time ``body_timeout``; an output the model lacks
    ``unknown_output``; every other malformed or misfitting request ``bad_input``.
    """
    if error.status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
        return "unauthorized"
    if isinstance(error, PayloadTooLarge):
        return "too_large"
    if isinstance(error, BodyTimeout):
        return "body_timeout"
    if isinstance(error, UnknownOutput):
        return "unknown_output"
    return "bad_input"
