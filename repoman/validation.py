"""Checking a decoded request against its model's config, and reshaping to what the model wants."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from repoman.config.model import ModelConfig, TensorConfig
from repoman.errors import InvalidRequest
from repoman.inference import InferRequest
from repoman.types import DataType


def check_request(config: ModelConfig, request: InferRequest) -> dict[str, np.ndarray]:
    """Validate ``request`` against ``config``; return its inputs reshaped for the model.

    Checks names (unknown, missing, duplicate), datatypes, ranks and fixed dimensions, the
    batch dimension (≥ 1, ≤ max_batch_size, the same for every input) and the requested
    output names. Raises InvalidRequest naming the tensor and expected vs found.
    """
    where = f"model '{config.name}'"
    declared = {tensor.name: tensor for tensor in config.inputs}
    for name in request.inputs:
        if name not in declared:
            known = ", ".join(sorted(declared))
            raise InvalidRequest(f"unexpected input '{name}' for {where} (its inputs: {known})")
    for tensor in config.inputs:
        if tensor.name not in request.inputs and not tensor.optional:
            raise InvalidRequest(f"missing input '{tensor.name}' for {where}")
    if request.outputs is not None:
        outputs = {tensor.name for tensor in config.outputs}
        for wanted in request.outputs:
            if wanted.name not in outputs:
                known = ", ".join(sorted(outputs))
                raise InvalidRequest(
                    f"unknown output '{wanted.name}' requested from {where} (its outputs: {known})"
                )

    batching = config.max_batch_size > 0
    batch_size: int | None = None
    prepared: dict[str, np.ndarray] = {}
    for name, array in request.inputs.items():
        tensor = declared[name]
        _check_dtype(tensor, array, where)
        shape = array.shape
        if batching:
            if len(shape) != len(tensor.dims) + 1:
                raise InvalidRequest(
                    f"input '{name}' of {where}: expected shape [-1] + {list(tensor.dims)} "
                    f"(batch dimension first), found {list(shape)}"
                )
            rows = shape[0]
            if rows < 1:
                raise InvalidRequest(f"input '{name}' of {where}: the batch dimension is 0")
            if rows > config.max_batch_size:
                raise InvalidRequest(
                    f"input '{name}' of {where}: batch size {rows} exceeds the model's "
                    f"max_batch_size {config.max_batch_size}"
                )
            if batch_size is None:
                batch_size = rows
            elif rows != batch_size:
                raise InvalidRequest(
                    f"inputs of {where} disagree on the batch size: '{name}' has {rows}, "
                    f"another input has {batch_size}"
                )
            _check_dims(tensor, shape[1:], list(shape), where)
        else:
            _check_dims(tensor, shape, list(shape), where)
        prepared[name] = _reshape_in(tensor, array, batching)
    return prepared


def reshape_outputs(
    config: ModelConfig, outputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Give outputs the shape the config declares (``dims``) where the model used ``reshape``."""
    batching = config.max_batch_size > 0
    shaped: dict[str, np.ndarray] = {}
    for name, array in outputs.items():
        tensor = config.output(name)
        if (
            tensor is not None
            and tensor.reshape is not None
            and sum(d < 0 for d in tensor.dims) <= 1
        ):
            target = ((array.shape[0],) if batching else ()) + tensor.dims
            array = array.reshape(target)
        shaped[name] = array
    return shaped


def _check_dtype(tensor: TensorConfig, array: np.ndarray, where: str) -> None:
    if array.dtype != tensor.data_type.numpy_dtype:
        try:
            found = DataType.from_numpy(array.dtype).value
        except KeyError:
            found = str(array.dtype)
        raise InvalidRequest(
            f"input '{tensor.name}' of {where}: expected datatype "
            f"{tensor.data_type.value}, found {found}"
        )


def _check_dims(tensor: TensorConfig, dims: tuple[int, ...], full: list[int], where: str) -> None:
    if len(dims) != len(tensor.dims) or any(
        want >= 0 and want != got for want, got in zip(tensor.dims, dims, strict=True)
    ):
        expected = ([-1] if len(full) != len(dims) else []) + list(tensor.dims)
        raise InvalidRequest(
            f"input '{tensor.name}' of {where}: expected shape {expected}, found {full}"
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
