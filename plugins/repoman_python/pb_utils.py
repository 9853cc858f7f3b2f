"""``triton_python_backend_utils`` for model.py files written for Triton's Python backend.

Written from Triton's documented API. It needs only the stdlib and numpy (no server
internals), so a future stub process can import it as it is. The backend registers it in
``sys.modules`` under Triton's name before it imports a model file.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

MODULE_NAME = "triton_python_backend_utils"

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2

_TYPES: dict[str, Any] = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}
_NAMES = {np.dtype(kind): name for name, kind in _TYPES.items()}


class TritonModelException(Exception):
    """What this module raises when a model uses it wrongly (Triton's name)."""


class TritonError:
    """An error that fails one request when set on its ``InferenceResponse``."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message = str(message)
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, code={self._code})"


# ---- types ---------------------------------------------------------------------------


def triton_string_to_numpy(triton_type: str) -> Any:
    """``"TYPE_FP32"`` -> ``numpy.float32`` (``TYPE_STRING`` -> ``numpy.object_``)."""
    try:
        return _TYPES[triton_type]
    except KeyError:
        raise TritonModelException(f"unknown Triton data type {triton_type!r}") from None


def numpy_to_triton_string(numpy_type: Any) -> str:
    """``numpy.float32`` -> ``"TYPE_FP32"``; strings, bytes and objects are ``TYPE_STRING``."""
    dtype = np.dtype(numpy_type)
    if dtype.kind in ("O", "S", "U"):
        return "TYPE_STRING"
    try:
        return _NAMES[dtype]
    except KeyError:
        raise TritonModelException(f"no Triton data type for numpy {dtype}") from None


# ---- tensors, requests, responses ----------------------------------------------------


class _Capsule:
    """Lets ``numpy.from_dlpack`` take a bare DLPack capsule of CPU memory."""

    def __init__(self, capsule: Any) -> None:
        self._capsule = capsule

    def __dlpack__(self, **_: Any) -> Any:
        return self._capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU, device 0


class Tensor:
    """A named numpy array. Everything lives in CPU memory here."""

    def __init__(self, name: str, array: Any) -> None:
        if not isinstance(name, str):
            raise TritonModelException(f"a Tensor's name must be a str, got {type(name).__name__}")
        if not isinstance(array, np.ndarray):
            raise TritonModelException(
                f"Tensor '{name}' takes a numpy array, got {type(array).__name__}"
            )
        self._name = name
        self._array = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array

    def shape(self) -> list[int]:
        return list(self._array.shape)

    def triton_dtype(self) -> str:
        return numpy_to_triton_string(self._array.dtype)

    def is_cpu(self) -> bool:
        return True

    def to_dlpack(self) -> Any:
        """A DLPack capsule of the array (numeric tensors only: numpy cannot share objects)."""
        try:
            return self._array.__dlpack__()
        except (BufferError, TypeError) as exc:
            raise TritonModelException(f"Tensor '{self._name}' has no DLPack form: {exc}") from exc

    @staticmethod
    def from_dlpack(name: str, dlpack: Any) -> Tensor:
        """A Tensor over a DLPack capsule or an object with ``__dlpack__`` (CPU memory)."""
        source = dlpack if hasattr(dlpack, "__dlpack__") else _Capsule(dlpack)
        try:
            array = np.from_dlpack(source)
        except (BufferError, TypeError, RuntimeError) as exc:
            raise TritonModelException(f"Tensor '{name}': cannot read DLPack: {exc}") from exc
        return Tensor(name, array)

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, shape={self.shape()}, dtype={self._array.dtype})"


class InferenceRequest:
    """One request handed to ``execute``. Models cannot build their own yet (no BLS)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TritonModelException(
            "InferenceRequest(model_name=...): calling another model from a Python model "
            "(BLS) is not supported by repoman yet"
        )

    @classmethod
    def _received(
        cls,
        inputs: Sequence[Tensor],
        requested_output_names: Sequence[str],
        request_id: str = "",
        parameters: Mapping[str, Any] | None = None,
        flags: int = 0,
        correlation_id: int | str = 0,
    ) -> InferenceRequest:
        request = cls.__new__(cls)
        request._inputs = list(inputs)
        request._outputs = list(requested_output_names)
        request._id = request_id
        request._parameters = json.dumps(dict(parameters or {}))
        request._flags = flags
        request._correlation_id = correlation_id
        return request

    def inputs(self) -> list[Tensor]:
        return list(self._inputs)

    def requested_output_names(self) -> list[str]:
        return list(self._outputs)

    def request_id(self) -> str:
        return self._id

    def correlation_id(self) -> int | str:
        return self._correlation_id

    def parameters(self) -> str:
        """The request's parameters as a JSON object string."""
        return self._parameters

    def flags(self) -> int:
        return self._flags

    def is_cancelled(self) -> bool:
        return False

    def exec(self, *args: Any, **kwargs: Any) -> Any:
        raise TritonModelException("InferenceRequest.exec (BLS) is not supported by repoman yet")

    async_exec = exec

    def __repr__(self) -> str:
        return f"InferenceRequest(inputs={[t.name() for t in self._inputs]})"


class InferenceResponse:
    """The answer to one request: output tensors, or a ``TritonError`` failing it alone."""

    def __init__(
        self,
        output_tensors: Sequence[Tensor] | None = None,
        error: TritonError | None = None,
        parameters: Mapping[str, Any] | str | None = None,
    ) -> None:
        tensors = list(output_tensors or [])
        wrong = [type(t).__name__ for t in tensors if not isinstance(t, Tensor)]
        if wrong:
            raise TritonModelException(
                f"InferenceResponse output_tensors must be pb_utils.Tensor objects, got {wrong[0]}"
            )
        if error is not None and not isinstance(error, TritonError):
            raise TritonModelException(
                "InferenceResponse error must be a pb_utils.TritonError, "
                f"got {type(error).__name__}"
            )
        self._tensors = tensors
        self._error = error
        self._parameters = parameters if isinstance(parameters, str) else dict(parameters or {})

    def output_tensors(self) -> list[Tensor]:
        return list(self._tensors)

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def __repr__(self) -> str:
        if self._error is not None:
            return f"InferenceResponse(error={self._error!r})"
        return f"InferenceResponse({[t.name() for t in self._tensors]})"


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    """The request's input called ``name``, or None."""
    return next((t for t in request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    """The response's output called ``name``, or None."""
    return next((t for t in response.output_tensors() if t.name() == name), None)


def get_input_config_by_name(model_config: Mapping[str, Any], name: str) -> dict | None:
    """The ``input`` entry of a model config dict called ``name``, or None."""
    return next((e for e in model_config.get("input") or () if e.get("name") == name), None)


def get_output_config_by_name(model_config: Mapping[str, Any], name: str) -> dict | None:
    """The ``output`` entry of a model config dict called ``name``, or None."""
    return next((e for e in model_config.get("output") or () if e.get("name") == name), None)


# ---- auto-complete -------------------------------------------------------------------


class ModelConfig:
    """What ``auto_complete_config`` receives: the config so far, to add to and return."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self._config: dict[str, Any] = dict(config or {})

    def as_dict(self) -> dict[str, Any]:
        return self._config

    def max_batch_size(self) -> int:
        return int(self._config.get("max_batch_size", 0))

    def set_max_batch_size(self, max_batch_size: int) -> None:
        if type(max_batch_size) is not int or max_batch_size < 0:
            raise TritonModelException(
                f"set_max_batch_size takes an integer >= 0, got {max_batch_size!r}"
            )
        self._config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self) -> None:
        self._config.setdefault("dynamic_batching", {})

    def set_model_transaction_policy(self, policy: Mapping[str, Any]) -> None:
        if not isinstance(policy, Mapping):
            raise TritonModelException("set_model_transaction_policy takes a dict")
        self._config["model_transaction_policy"] = dict(policy)

    def add_input(self, entry: Mapping[str, Any]) -> None:
        self._add("input", entry)

    def add_output(self, entry: Mapping[str, Any]) -> None:
        self._add("output", entry)

    def _add(self, kind: str, entry: Mapping[str, Any]) -> None:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise TritonModelException(f"add_{kind} takes a dict with a 'name', got {entry!r}")
        entries = self._config.setdefault(kind, [])
        for existing in entries:
            if existing.get("name") != entry["name"]:
                continue
            if any(existing.get(key, value) != value for key, value in entry.items()):
                raise TritonModelException(
                    f"add_{kind}: '{entry['name']}' is already in the config as {existing}"
                )
            existing.update(entry)
            return
        entries.append(dict(entry))


# ---- logging -------------------------------------------------------------------------

_scope = threading.local()


@contextmanager
def _logging_as(name: str) -> Iterator[None]:
    """Within the block, ``Logger`` on this thread logs to the logger called ``name``."""
    before = getattr(_scope, "name", None)
    _scope.name = name
    try:
        yield
    finally:
        _scope.name = before


def _logger() -> logging.Logger:
    return logging.getLogger(getattr(_scope, "name", None) or f"repoman.{MODULE_NAME}")


class Logger:
    """Triton's model logger, writing into the server's log (under the model's name)."""

    @staticmethod
    def log_info(message: str) -> None:
        _logger().info("%s", message)

    @staticmethod
    def log_warn(message: str) -> None:
        _logger().warning("%s", message)

    @staticmethod
    def log_error(message: str) -> None:
        _logger().error("%s", message)

    @staticmethod
    def log_verbose(message: str) -> None:
        _logger().debug("%s", message)
