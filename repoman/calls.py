"""Models calling models from inside a batch (Triton's business logic scripting, BLS): the
request a backend makes, and the door the core opens for the batch running on a thread.

The core sets the door while a backend's ``execute`` runs (:func:`calls_through`; for an
``execute_async`` on the event loop, in the context it is started in); the backend (or what
it serves: a Python model's ``InferenceRequest.exec()``) calls :func:`model_caller` to get
it. A call goes through the shared scheduler like any request; a batch on a worker thread
lends its worker's place while it waits, and a batch on the event loop holds none, so a
call never waits for a worker that is waiting for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ModelCall:
    """One request a model makes to another model (or to itself)."""

    model: str
    inputs: Mapping[str, np.ndarray]
    outputs: tuple[str, ...] = ()
    """The outputs wanted; empty: every output of the model."""
    version: int | None = None
    """None: the newest READY version."""
    request_id: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    timeout_us: int = 0
    """Microseconds the caller waits for the answer, queueing included; 0: no limit."""


Caller = Callable[[ModelCall], "Future[Mapping[str, np.ndarray]]"]
"""Starts a call; its future gets the outputs, or the RepomanError that answers it (an
unknown model, a bad input, the member's failure, the timeout). Callable from any thread."""

_caller: ContextVar[Caller | None] = ContextVar("repoman_model_caller", default=None)


def model_caller() -> Caller | None:
    """The door for calls made by the batch running on this thread (None outside a batch).

    A backend that makes calls from another thread (or process) takes it here first, in its
    ``execute``, and uses it until ``execute`` returns.
    """
    return _caller.get()


@contextlib.contextmanager
def calls_through(caller: Caller | None) -> Iterator[None]:
    """Within the block, :func:`model_caller` on this thread returns ``caller``."""
    token = _caller.set(caller)
    try:
        yield
    finally:
        _caller.reset(token)
