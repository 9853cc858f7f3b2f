"""Transport-agnostic inference requests and responses, as the service and scheduler see them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class RequestedOutput:
    """An output the client asked for; ``binary`` is its binary-data choice (None: default)."""

    name: str
    binary: bool | None = None


@dataclass
class InferRequest:
    """One inference request after decoding, before validation against the model's config.

    ``inputs`` maps input names to numpy arrays already shaped as the client declared
    (batch dimension included for batching models). BYTES tensors are object arrays of ``bytes``.
    ``outputs`` is None when the client asked for every output.
    """

    model_name: str
    model_version: int | None = None
    id: str | None = None
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferResponse:
    """The result for one request: which version computed it and the outputs asked for."""

    model_name: str
    model_version: int
    id: str | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
