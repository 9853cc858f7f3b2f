"""Which version serves a request: the rule, written once for every process that routes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, TypeVar

from repoman.errors import ModelNotFound, ModelNotReady
from repoman.manager.version import State


class Routable(Protocol):
    @property
    def version(self) -> int: ...

    @property
    def state(self) -> State: ...

    @property
    def reason(self) -> str: ...


V = TypeVar("V", bound=Routable)


def choose(
    model: str, versions: Mapping[int, V], model_error: str | None, version: int | None
) -> V:
    """The version named, else the newest that serves (READY, or AVAILABLE: it loads for the
    request); ModelNotFound / ModelNotReady (with every reason) when there is none."""
    if not versions:
        if model_error is not None:
            raise ModelNotReady(model, version, model_error)
        raise ModelNotFound(model, version)
    if version is not None:
        found = versions.get(version)
        if found is None:
            raise ModelNotFound(model, version)
        if found.state is not State.READY and found.state is not State.AVAILABLE:
            raise ModelNotReady(model, version, found.reason or found.state.value.lower())
        return found
    newest = versions[max(versions)]  # NOTE: the usual answer, without a sort
    if newest.state is State.READY or newest.state is State.AVAILABLE:
        return newest
    for number in sorted(versions, reverse=True):
        state = versions[number].state
        if state is State.READY or state is State.AVAILABLE:
            return versions[number]
    reasons = "; ".join(
        f"version {v.version} {v.state.value.lower()}" + (f": {v.reason}" if v.reason else "")
        for v in versions.values()
    )
    raise ModelNotReady(model, None, reasons or model_error or "")
