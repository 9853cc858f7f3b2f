"""What a transport needs from the data plane: in one process, or reached across processes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from repoman.dataplane.request_checks import ExpectedInputs
from repoman.inference import InferRequest, InferResponse

ReadRequest = Callable[[ExpectedInputs], Awaitable[InferRequest]]
"""Reads and decodes a request's body, refusing early what the routed config rules out."""


class DataPlane(Protocol):
    """The service every transport handler calls (InferenceService in the process that owns
    the models; a remote stand-in in a front-end process)."""

    @property
    def redact(self) -> Callable[[str], str]:
        """Names files relative to the repository in a message meant for a client."""

    @property
    def ready(self) -> bool: ...

    async def infer(
        self, name: str, version: int | None, read: ReadRequest
    ) -> tuple[InferRequest, InferResponse]: ...

    def refused(self, name: str, version: int | None, reason: str) -> None:
        """Count an inference request the edge refused before the data plane saw it (a
        FAILURE_REASONS entry: ``unauthorized``, ``too_large``)."""

    def encoded(self, name: str, version: int, seconds: float) -> None:
        """Record the time the edge took to encode one response."""

    def server_metadata(self) -> dict[str, Any]: ...

    async def model_ready(self, name: str, version: int | None = None) -> bool: ...

    async def model_metadata(self, name: str, version: int | None = None) -> dict[str, Any]: ...

    async def model_config(self, name: str, version: int | None = None) -> dict[str, Any]: ...

    async def repository_index(self) -> list[dict[str, Any]]: ...

    async def statistics(
        self, name: str | None = None, version: int | None = None
    ) -> dict[str, Any]: ...

    async def status(self, repository: bool = False) -> dict[str, Any]: ...

    async def load_model(self, name: str, config_text: str | None = None) -> None: ...

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None: ...


class MetricsSource(Protocol):
    """The text the ``/metrics`` endpoint answers with."""

    async def exposition(self) -> bytes: ...
