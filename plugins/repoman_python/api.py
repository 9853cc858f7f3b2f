"""What a model.py works with: the requests its ``execute`` receives, the responses it returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np

Tensor = np.ndarray
"""A tensor is a plain numpy array; BYTES tensors are object arrays (of ``bytes`` on input)."""


class Request:
    """One inference request: its inputs by name, and the outputs to compute for it.

    Input arrays carry the batch dimension when the model batches (``max_batch_size > 0``)
    and may be read-only views of the request body: copy one before changing it in place.
    An optional input the client did not send is absent.
    """

    __slots__ = ("_inputs", "_output_names")

    def __init__(self, inputs: Mapping[str, Tensor], output_names: Sequence[str]) -> None:
        self._inputs = MappingProxyType(dict(inputs))
        self._output_names = tuple(output_names)

    def inputs(self) -> Mapping[str, Tensor]:
        """Every input of this request, by name (a read-only mapping)."""
        return self._inputs

    def input(self, name: str) -> Tensor:
        """The input called ``name``; KeyError, listing the inputs present, if there is none."""
        try:
            return self._inputs[name]
        except KeyError:
            present = ", ".join(self._inputs) or "none"
            raise KeyError(f"the request has no input '{name}' (it has: {present})") from None

    def requested_output_names(self) -> tuple[str, ...]:
        """The outputs the response must hold (those asked for in this batch)."""
        return self._output_names

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}{list(array.shape)}" for name, array in self._inputs.items())
        return f"Request({shapes})"


class Response:
    """The answer to one request: its outputs, or an error that fails this request alone.

    ``outputs`` maps output names to arrays (anything ``numpy.asarray`` takes is accepted;
    a value is converted to the configured data type when numpy can do so without changing
    its kind, e.g. float64 to float32). ``error`` is a message or an exception; when it is
    set the outputs are ignored.
    """

    __slots__ = ("error", "outputs")

    def __init__(
        self,
        outputs: Mapping[str, Tensor] | None = None,
        error: str | Exception | None = None,
    ) -> None:
        if outputs is not None and not isinstance(outputs, Mapping):
            raise TypeError(
                f"Response outputs must be a dict of name -> array, got {type(outputs).__name__}"
            )
        if error is not None and not isinstance(error, str | Exception):
            raise TypeError(
                f"Response error must be a message or an exception, got {type(error).__name__}"
            )
        self.outputs: Mapping[str, Tensor] = outputs if outputs is not None else {}
        self.error = error

    def __repr__(self) -> str:
        if self.error is not None:
            return f"Response(error={self.error!r})"
        return f"Response(outputs={sorted(self.outputs)})"
