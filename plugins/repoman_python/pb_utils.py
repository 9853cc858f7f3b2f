"""``triton_python_backend_utils`` for model.py files written for Triton's Python backend.

Written from Triton's documented API. It needs only the stdlib and numpy (no server
internals), so a future stub process can import it as it is. The backend registers it in
``sys.modules`` under Triton's name before it imports a model file.
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import itertools
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
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
    """An error that fails one request when set on its ``InferenceResponse``; its code says
    the status the client gets (Triton's: INVALID_ARG, UNKNOWN, ALREADY_EXISTS and CANCELLED
    are 400, NOT_FOUND 404, INTERNAL 500, UNSUPPORTED 501, UNAVAILABLE 503)."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 7:
            raise TypeError(
                f"TritonError code must be one of TritonError.UNKNOWN ... CANCELLED (0-7), "
                f"got {code!r}"
            )
        self._message = str(message)
        self._code = int(code)

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


_Transport = Callable[["InferenceRequest"], "Future[InferenceResponse]"]
"""Sends a request a model builds to the server; the future gets the response (an error in
it, never raised). Set only while the model's ``execute`` runs."""

_transport: contextvars.ContextVar[_Transport | None] = contextvars.ContextVar(
    "pb_utils_transport", default=None
)


@contextmanager
def _calling_through(transport: _Transport | None) -> Iterator[None]:
    token = _transport.set(transport)
    try:
        yield
    finally:
        _transport.reset(token)


class InferenceRequest:
    """A request handed to ``execute``, or one a model builds to call a model (BLS):
    ``InferenceRequest(model_name, requested_output_names, inputs, ...).exec()``."""

    def __init__(
        self,
        model_name: str,
        requested_output_names: Sequence[str],
        inputs: Sequence[Tensor],
        model_version: int = -1,
        request_id: str = "",
        correlation_id: int | str = 0,
        flags: int = 0,
        timeout: int = 0,
        preferred_memory: Any = None,
        parameters: Mapping[str, Any] | str | None = None,
    ) -> None:
        if not isinstance(model_name, str) or not model_name:
            raise TritonModelException(
                f"InferenceRequest: model_name must be a str, got {model_name!r}"
            )
        if isinstance(requested_output_names, str) or not all(
            isinstance(n, str) for n in requested_output_names
        ):
            raise TritonModelException(
                "InferenceRequest: requested_output_names must be a list of str"
            )
        inputs = list(inputs)
        wrong = [type(t).__name__ for t in inputs if not isinstance(t, Tensor)]
        if wrong:
            raise TritonModelException(
                f"InferenceRequest: inputs must be pb_utils.Tensor objects, got {wrong[0]}"
            )
        for name, value in (("model_version", model_version), ("timeout", timeout)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TritonModelException(
                    f"InferenceRequest: {name} must be an int, got {value!r}"
                )
        if timeout < 0:
            raise TritonModelException(f"InferenceRequest: timeout must be >= 0, got {timeout}")
        if isinstance(parameters, str):
            try:
                parameters = json.loads(parameters)
            except ValueError as exc:
                raise TritonModelException(f"InferenceRequest: parameters: {exc}") from None
        if not isinstance(parameters, Mapping | None):
            raise TritonModelException("InferenceRequest: parameters must be a dict")
        self._inputs = inputs
        self._outputs = list(requested_output_names)
        self._id = str(request_id)
        self._parameters = json.dumps(dict(parameters or {}))
        self._flags = flags
        self._correlation_id = correlation_id
        self._model_name = model_name
        self._model_version = model_version
        self._timeout = timeout

    def model_name(self) -> str:
        return self._model_name

    def model_version(self) -> int:
        return self._model_version

    def timeout(self) -> int:
        """Microseconds the caller waits for the response (0: no limit)."""
        return self._timeout

    def _send(self, decoupled: bool) -> Future[InferenceResponse]:
        if decoupled:
            raise TritonModelException(
                "InferenceRequest.exec(decoupled=True): calling decoupled models is not "
                "supported by repoman"
            )
        if not getattr(self, "_model_name", ""):
            raise TritonModelException(
                "InferenceRequest.exec: this is a request the model received; build an "
                "InferenceRequest(model_name=...) to call a model"
            )
        transport = _transport.get()
        if transport is None:
            raise TritonModelException(
                "InferenceRequest.exec: models can be called only from within execute"
            )
        return transport(self)

    def exec(self, decoupled: bool = False) -> InferenceResponse:
        """Run the request on its model and wait for the response; an error (unknown model,
        bad input, the model's failure, the timeout) is in the response, not raised."""
        return self._send(decoupled).result()

    async def async_exec(self, decoupled: bool = False) -> InferenceResponse:
        """``exec`` as an awaitable, for an ``async def execute`` (many at once with
        ``asyncio.gather``)."""
        return await asyncio.wrap_future(self._send(decoupled))

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
        request._parameters = json.dumps(dict(parameters)) if parameters else "{}"
        request._flags = flags
        request._correlation_id = correlation_id
        request._model_name = ""
        request._model_version = -1
        request._timeout = 0
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
def _logging_as(name: str, owner: object = None) -> Iterator[None]:
    """Within the block, ``Logger`` on this thread logs to the logger called ``name``, and
    the ``MetricFamily`` objects created belong to ``owner`` (the model instance)."""
    before = getattr(_scope, "name", None), getattr(_scope, "owner", None)
    _scope.name, _scope.owner = name, owner
    try:
        yield
    finally:
        _scope.name, _scope.owner = before


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


# ---- custom metrics ------------------------------------------------------------------

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RESERVED_LABELS = frozenset({"model", "version", "le"})
_metrics_lock = threading.Lock()
_families: dict[tuple[int, str], _Family] = {}
"""Every family in this process, by (id of its owner, name); owner 0: created outside a model
call (e.g. on a thread the model started)."""


class _Family:
    def __init__(self, name: str, description: str, kind: int, owner: object) -> None:
        self.name, self.description, self.kind = name, description, kind
        self.owner = owner
        self.metrics: dict[tuple[tuple[str, str], ...], Metric] = {}


class MetricFamily:
    """A family of custom metrics (one name, one kind); ``Metric(labels)`` makes its members.

    Created again with the same name in the same model, it is the same family (the kind must
    match). The server exposes each member on ``/metrics`` with the model's labels plus
    ``model`` and ``version``.
    """

    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2
    _KINDS = {COUNTER: "counter", GAUGE: "gauge", HISTOGRAM: "histogram"}

    def __init__(self, name: str, description: str, kind: int) -> None:
        if not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
            raise TritonModelException(
                f"MetricFamily name {name!r}: expected a Prometheus metric name "
                "([a-zA-Z_:][a-zA-Z0-9_:]*)"
            )
        if not isinstance(description, str):
            raise TritonModelException(
                f"MetricFamily {name}: the description must be a string, "
                f"got {type(description).__name__}"
            )
        if kind not in self._KINDS or isinstance(kind, bool):
            raise TritonModelException(
                f"MetricFamily {name}: kind {kind!r} is not MetricFamily.COUNTER, GAUGE "
                "or HISTOGRAM"
            )
        owner = getattr(_scope, "owner", None)
        key = (0 if owner is None else id(owner), name)
        with _metrics_lock:
            family = _families.get(key)
            if family is None:
                family = _families[key] = _Family(name, description.strip(), kind, owner)
            elif family.kind != kind:
                raise TritonModelException(
                    f"MetricFamily {name} already exists as a {self._KINDS[family.kind]}; "
                    f"it cannot be made a {self._KINDS[kind]}"
                )
        self._family = family

    @property
    def name(self) -> str:
        return self._family.name

    @property
    def kind(self) -> int:
        return self._family.kind

    def Metric(  # Triton's name
        self, labels: Mapping[str, str] | None = None, buckets: Sequence[float] | None = None
    ) -> Metric:
        """The member with these labels (the same object for the same labels); ``buckets``
        (upper bounds, increasing) for a histogram, and only for one."""
        family = self._family
        key = _labels_key(family.name, labels)
        bounds: tuple[float, ...] | None = None
        if family.kind == self.HISTOGRAM:
            bounds = _bounds(family.name, buckets)
        elif buckets is not None:
            raise TritonModelException(
                f"metric {family.name}: buckets are only for a histogram; this is a "
                f"{self._KINDS[family.kind]}"
            )
        with _metrics_lock:
            metric = family.metrics.get(key)
            if metric is None:
                metric = family.metrics[key] = Metric(family, key, bounds)
            elif metric._bounds != bounds:
                raise TritonModelException(
                    f"metric {family.name}{dict(key)} already exists with buckets "
                    f"{list(metric._bounds or ())}"
                )
        return metric


def _labels_key(name: str, labels: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    if labels is None:
        return ()
    if not isinstance(labels, Mapping):
        raise TritonModelException(
            f"metric {name}: labels must be a dict of str to str, got {type(labels).__name__}"
        )
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_NAME.fullmatch(key) or key.startswith("__"):
            raise TritonModelException(f"metric {name}: {key!r} is not a valid label name")
        if key in _RESERVED_LABELS:
            raise TritonModelException(
                f"metric {name}: the label '{key}' is reserved (the server adds model and "
                "version itself)"
            )
        if not isinstance(value, str):
            raise TritonModelException(
                f"metric {name}: label {key}'s value must be a string, got {type(value).__name__}"
            )
    return tuple(sorted(labels.items()))


def _bounds(name: str, buckets: Sequence[float] | None) -> tuple[float, ...]:
    if buckets is None:
        raise TritonModelException(f"metric {name}: a histogram needs buckets=[upper bounds]")
    try:
        bounds = tuple(float(b) for b in buckets)
    except (TypeError, ValueError):
        raise TritonModelException(
            f"metric {name}: buckets must be a list of numbers, got {buckets!r}"
        ) from None
    if any(b != b for b in bounds) or any(a >= b for a, b in itertools.pairwise(bounds)):
        raise TritonModelException(
            f"metric {name}: buckets must be increasing numbers, got {list(bounds)}"
        )
    if bounds and bounds[-1] == math.inf:
        bounds = bounds[:-1]  # +Inf is always there
    return bounds


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TritonModelException(f"metric {name}: expected a number, got {type(value).__name__}")
    return float(value)


class Metric:
    """One member of a MetricFamily (made by ``family.Metric(labels, buckets)``)."""

    def __init__(
        self,
        family: _Family,
        labels: tuple[tuple[str, str], ...],
        bounds: tuple[float, ...] | None,
    ) -> None:
        self._family = family
        self._labels = labels
        self._bounds = bounds
        self._value = 0.0  # counter, gauge; a histogram's sum
        self._counts = [0] * (len(bounds) + 1) if bounds is not None else []

    def _kind(self) -> str:
        return MetricFamily._KINDS[self._family.kind]

    def _refuse(self, what: str) -> TritonModelException:
        return TritonModelException(
            f"metric {self._family.name}: {what} is not for a {self._kind()}"
        )

    def increment(self, value: float) -> None:
        """Add ``value`` (a counter's must be >= 0; a gauge's may be negative)."""
        number = _number(self._family.name, value)
        kind = self._family.kind
        if kind == MetricFamily.HISTOGRAM:
            raise self._refuse("increment (use observe)")
        if kind == MetricFamily.COUNTER and not number >= 0:
            raise TritonModelException(
                f"metric {self._family.name}: a counter only goes up; increment({value!r}) refused"
            )
        with _metrics_lock:
            self._value += number

    def set(self, value: float) -> None:
        """Set a gauge to ``value``."""
        number = _number(self._family.name, value)
        if self._family.kind != MetricFamily.GAUGE:
            raise self._refuse("set (only a gauge can be set)")
        with _metrics_lock:
            self._value = number

    def value(self) -> float:
        """A counter's or gauge's current value."""
        if self._family.kind == MetricFamily.HISTOGRAM:
            raise self._refuse("value()")
        return self._value

    def observe(self, value: float) -> None:
        """Record one observation in a histogram."""
        number = _number(self._family.name, value)
        if self._family.kind != MetricFamily.HISTOGRAM or self._bounds is None:
            raise self._refuse("observe (only a histogram observes)")
        index = bisect.bisect_left(self._bounds, number)
        with _metrics_lock:
            self._counts[index] += 1
            self._value += number

    def _payload(self) -> Any:
        if self._bounds is None:
            return self._value
        return self._bounds, tuple(self._counts), self._value


MetricsSnapshot = list[tuple[str, str, str, list[tuple[tuple[tuple[str, str], ...], Any]]]]
"""Plain data: (name, description, kind, [(labels, value)]); a histogram's value is
(upper bounds, counts per bucket with +Inf last, sum)."""


def _metrics_snapshot(owner: object = None) -> MetricsSnapshot:
    """The current values of ``owner``'s families (every family when ``owner`` is None)."""
    with _metrics_lock:
        return [
            (
                family.name,
                family.description,
                MetricFamily._KINDS[family.kind],
                [(labels, metric._payload()) for labels, metric in family.metrics.items()],
            )
            for family in _families.values()
            if family.metrics and (owner is None or family.owner is owner)
        ]


def _forget_metrics(owner: object) -> None:
    """Drop ``owner``'s families (its model was unloaded)."""
    with _metrics_lock:
        for key in [k for k, family in _families.items() if family.owner is owner]:
            del _families[key]
