"""Checking a decoded request against its model's config, and reshaping to what the model wants."""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from repoman.config.model import ModelConfig, TensorConfig
from repoman.errors import InvalidRequest, UnknownOutput
from repoman.inference import InferRequest
from repoman.signature import compatible_dims
from repoman.types import DataType


def check_request(
    config: ModelConfig, request: InferRequest, expected: ExpectedInputs | None = None
) -> dict[str, np.ndarray]:
    """Validate ``request`` against ``config``; return its inputs reshaped for the model.

    Checks names (unknown, missing, duplicate), datatypes, ranks and fixed dimensions, the
    batch dimension (≥ 1, ≤ max_batch_size, the same for every input) and the requested
    output names. Raises InvalidRequest naming the tensor and expected vs found.

    ``expected``: what the request was decoded against. When it checked every input against
    this very ``config`` (``ExpectedInputs.covers``), datatypes and shapes are not checked again.
    """
    declared = config.inputs_by_name
    inputs = request.inputs
    # NOTE: the common case (exactly the declared inputs) costs one comparison of key views.
    if inputs.keys() != declared.keys():
        _check_names(config, inputs)
    if request.outputs is not None:
        outputs = config.outputs_by_name
        for wanted in request.outputs:
            if wanted.name not in outputs:
                known = ", ".join(sorted(outputs))
                raise UnknownOutput(
                    f"unknown output {_quoted(wanted.name)} requested from {_where(config)} "
                    f"(its outputs: {known})"
                )

    batch_size: int | None = None
    prepared: dict[str, np.ndarray] = {}
    checked = expected is not None and expected.covers(config, len(inputs))
    batching = config.max_batch_size > 0
    for name, array in inputs.items():
        tensor = declared[name]
        if checked:
            # NOTE: decoded as the datatype and shape check_input accepted: only the batch
            # sizes of different inputs remain to compare.
            rows = array.shape[0] if batching else None
        else:
            if array.dtype != tensor.data_type.numpy_dtype:
                _refuse_dtype(config, tensor, _datatype_name(array))
            rows = _check_shape(config, tensor, array.shape)
        if rows is not None:
            if batch_size is None:
                batch_size = rows
            elif rows != batch_size:
                raise InvalidRequest(
                    f"inputs of {_where(config)} disagree on the batch size: '{name}' has {rows}, "
                    f"another input has {batch_size}"
                )
        if tensor.reshape is not None:
            array = _reshape_in(tensor, array, batching)
        prepared[name] = array
    return prepared


class ExpectedInputs:
    """What a routed version's config accepts, checked per input before its tensor is built.

    A transport decoding a body calls ``check_count`` with the number of inputs, then
    ``check_input`` for each one as soon as its name, datatype and shape are known, so a body
    the config rules out costs no tensor decoding. ``check_request`` still checks the whole
    decoded request (missing inputs, batch sizes that disagree, outputs).
    """

    __slots__ = ("_checked", "_config")

    def __init__(self, config: ModelConfig) -> None:
        self._config = config
        self._checked = 0

    def covers(self, config: ModelConfig, count: int) -> bool:
        """Whether ``count`` inputs, all of them, passed ``check_input`` against ``config``."""
        return config is self._config and count == self._checked

    def check_count(self, count: int) -> None:
        config = self._config
        if count > len(config.inputs):
            names = ", ".join(tensor.name for tensor in config.inputs)
            raise InvalidRequest(
                f"the request has {count} inputs; {_where(config)} takes {len(config.inputs)} "
                f"({names})"
            )

    def check_input(self, name: str, datatype: DataType, shape: Sequence[int]) -> None:
        config = self._config
        tensor = config.inputs_by_name.get(name)
        if tensor is None:
            _refuse_name(config, name)
        if datatype is not tensor.data_type:
            _refuse_dtype(config, tensor, datatype.value)
        _check_shape(config, tensor, tuple(shape))
        self._checked += 1


def _check_shape(config: ModelConfig, tensor: TensorConfig, shape: tuple[int, ...]) -> int | None:
    """Refuse ``shape`` unless ``tensor`` takes it; return its batch size (None: no batching)."""
    max_batch_size = config.max_batch_size
    if max_batch_size <= 0:
        _check_dims(config, tensor, shape, shape)
        return None
    name = tensor.name
    if len(shape) != len(tensor.dims) + 1:
        raise InvalidRequest(
            f"input '{name}' of {_where(config)}: expected shape [-1] + "
            f"{list(tensor.dims)} (batch dimension first), found {list(shape)}"
        )
    rows = shape[0]
    if rows < 1:
        raise InvalidRequest(f"input '{name}' of {_where(config)}: the batch dimension is 0")
    if rows > max_batch_size:
        raise InvalidRequest(
            f"input '{name}' of {_where(config)}: batch size {rows} exceeds the model's "
            f"max_batch_size {max_batch_size}"
        )
    _check_dims(config, tensor, shape[1:], shape)
    return rows


def _check_names(config: ModelConfig, inputs: Mapping[str, np.ndarray]) -> None:
    declared = config.inputs_by_name
    for name in inputs:
        if name not in declared:
            _refuse_name(config, name)
    for tensor in config.inputs:
        if tensor.name not in inputs and not tensor.optional:
            raise InvalidRequest(f"missing input '{tensor.name}' for {_where(config)}")


def _refuse_name(config: ModelConfig, name: str) -> NoReturn:
    known = ", ".join(sorted(config.inputs_by_name))
    raise InvalidRequest(
        f"unexpected input {_quoted(name)} for {_where(config)} (its inputs: {known})"
    )


def _quoted(name: str) -> str:
    """A client's name for an error message, cut short (it may be megabytes long)."""
    return f"'{name}'" if len(name) <= 100 else f"'{name[:97]}...'"


def _where(config: ModelConfig) -> str:
    return f"model '{config.name}'"


def reshape_outputs(
    config: ModelConfig, outputs: dict[str, np.ndarray], *, copy: bool = True
) -> dict[str, np.ndarray]:
    """Give outputs the shape the config declares (``dims``) where the model used ``reshape``.
    Without ``copy``, ``outputs`` itself comes back when nothing needs reshaping."""
    reshaped = config.reshaped_outputs
    if not reshaped:
        return dict(outputs) if copy else outputs
    batching = config.max_batch_size > 0
    shaped: dict[str, np.ndarray] = {}
    for name, array in outputs.items():
        if name in reshaped:
            tensor = config.outputs_by_name[name]
            target = ((array.shape[0],) if batching else ()) + tensor.dims
            array = array.reshape(target)
        shaped[name] = array
    return shaped


def _datatype_name(array: np.ndarray) -> str:
    try:
        return DataType.from_numpy(array.dtype).value
    except KeyError:
        return str(array.dtype)


def _refuse_dtype(config: ModelConfig, tensor: TensorConfig, found: str) -> NoReturn:
    raise InvalidRequest(
        f"input '{tensor.name}' of {_where(config)}: expected datatype "
        f"{tensor.data_type.value}, found {found}"
    )


def _check_dims(
    config: ModelConfig, tensor: TensorConfig, dims: tuple[int, ...], full: tuple[int, ...]
) -> None:
    want = tensor.dims
    if not compatible_dims(dims, want):
        expected = ([-1] if len(full) != len(dims) else []) + list(want)
        raise InvalidRequest(
            f"input '{tensor.name}' of {_where(config)}: expected shape {expected}, "
            f"found {list(full)}"
        )


def _reshape_in(tensor: TensorConfig, array: np.ndarray, batching: bool) -> np.ndarray:
    if tensor.reshape is None:
        return array
    target = ((array.shape[0],) if batching else ()) + tensor.reshape
    try:
        return array.reshape(target)
    except ValueError:
        raise InvalidRequest(
            f"input '{tensor.name}': shape {list(array.shape)} cannot be reshaped to "
            f"{list(target)} as the config's reshape asks"
        ) from None


@dataclass(frozen=True)
class Prepared:
    """A request made ready for the scheduler: inputs as the model wants them, the outputs
    to compute, and its priority and queue timeout."""

    inputs: dict[str, np.ndarray]
    wanted: tuple[str, ...]
    priority: int = 0
    timeout_us: int | None = None


def prepare(
    config: ModelConfig, request: InferRequest, expected: ExpectedInputs | None = None
) -> Prepared:
    """Check ``request`` against ``config`` (see check_request for ``expected``) and gather
    what the scheduler needs."""
    inputs = check_request(config, request, expected)
    if request.outputs is None:
        wanted = config.output_names
    else:
        wanted = tuple(output.name for output in request.outputs)
    priority = timeout_us = None
    if request.parameters:
        priority = _int_parameter(request, "priority")
        timeout_us = _int_parameter(request, "timeout")
    return Prepared(inputs, wanted, priority or 0, timeout_us)


def _int_parameter(request: InferRequest, name: str) -> int | None:
    """A request-level integer parameter (``priority``, ``timeout`` in microseconds)."""
    value = request.parameters.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(
            f"request parameter '{name}' must be an integer >= 0, found {reprlib.repr(value)}"
        )
    return value
