"""Serves a model.py (a Python class with initialize / execute / finalize) as a model version."""

from __future__ import annotations

import asyncio
import copy
import functools
import importlib.util
import inspect
import itertools
import logging
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from repoman import (
    Backend,
    BackendContext,
    BackendError,
    Batch,
    Caller,
    DataType,
    ModelSignature,
    RepomanError,
    Result,
    TensorConfig,
    model_caller,
)
from repoman_python import pb_utils, triton_compat
from repoman_python.api import Request, Response

log = logging.getLogger(__name__)

MODEL_CLASS_NAMES = ("Model", "TritonPythonModel")  # the second eases porting from Triton

# NOTE: sys.path is process-wide; the lock keeps one import's temporary entry (and its
# sys.modules bookkeeping) from interleaving with another model loading on another thread.
_import_lock = threading.Lock()
_module_numbers = itertools.count(1)
_NOT_IDENTIFIER = re.compile(r"\W")


class PythonBackend(Backend):
    """One ``Model`` object per instance, from its own import of the version's ``model.py``.

    ``execute`` hands the model one ``Request`` per request and expects one ``Response`` per
    request back, in order. A response's error fails only its request; an exception from the
    model's ``execute``, or a reply of the wrong length or kind, fails the whole batch.
    """

    def __init__(self, context: BackendContext) -> None:
        super().__init__(context)
        self._model: Any = None
        self._module_name = ""
        self._triton = False  # the model speaks Triton's pb_utils API
        self._log_name = triton_compat.logger_name(context)
        # NOTE: messages clients see name the file within the repository, not its server path.
        self._where = f"{context.config.name}/{context.version}/{context.model_path.name}"
        self._label = f"model '{context.config.name}' version {context.version}"
        self.caller: Caller | None = None
        """Where the model's calls to models go (BLS): the stub's channel to the server;
        None: the door the server opens for the batch running (``repoman.model_caller``)."""
        self._loop: asyncio.AbstractEventLoop | None = None  # runs an ``async def execute``

    def load(self) -> None:
        path = self.context.model_path
        for key, why in triton_compat.NOT_APPLICABLE.items():
            if key in self.context.config.parameters:
                log.warning("%s: config parameter %s is ignored: %s", self._label, key, why)
        tag = f"{self.context.config.name}_{self.context.version}_{self.context.instance_name}"
        with pb_utils._logging_as(self._log_name, self):
            module = import_model_file(path, tag)
        self._module_name = module.__name__
        step = "Model()"
        try:
            model_type = model_class(module, path)
            self._triton = triton_compat.is_triton_model(path, model_type)
            step = f"{model_type.__name__}()"
            with pb_utils._logging_as(self._log_name, self):
                model = model_type()
                initialize = getattr(model, "initialize", None)
                if initialize is not None:
                    step = "initialize"
                    args = (
                        triton_compat.initialize_args(self.context)
                        if self._triton
                        else self._initialize_args()
                    )
                    initialize(args)
        except RepomanError:
            _forget(self._module_name)
            pb_utils._forget_metrics(self)
            raise
        except Exception as exc:
            _forget(self._module_name)
            pb_utils._forget_metrics(self)
            raise _failed(path, step, exc) from exc
        self._model = model

    def metrics_snapshot(self) -> pb_utils.MetricsSnapshot:
        """The current values of the custom metrics (pb_utils.MetricFamily) this model made."""
        return pb_utils._metrics_snapshot(self)

    def _initialize_args(self) -> dict[str, Any]:
        context = self.context
        return {
            # NOTE: a copy: the server reports this dict as the config; the model may edit it.
            "model_config": copy.deepcopy(context.config.as_dict()),
            "model_name": context.config.name,
            "model_version": str(context.version),
            "model_repository": str(context.version_path.parent),
            "model_instance_name": context.instance_name,
            "model_instance_kind": context.instance_kind,
            "model_instance_device_id": context.device_id or 0,
        }

    def execute(self, batch: Batch) -> Sequence[Result]:
        assert self._model is not None, "execute before load"
        if self._triton:
            return self._execute_triton(batch)
        requests = [Request(inputs, batch.output_names) for inputs in batch.requests]
        responses = self._call_execute(requests)
        is_list = isinstance(responses, list | tuple)
        if not is_list or len(responses) != len(requests):
            got = f"{len(responses)} responses" if is_list else f"a {type(responses).__name__}"
            raise BackendError(
                f"{self._where}: execute returned {got} for {len(requests)} requests "
                "(expected a list of one Response per request, in order)"
            )
        wrong = [type(item).__name__ for item in responses if not isinstance(item, Response)]
        if wrong:
            raise BackendError(f"{self._where}: execute returned a {wrong[0]} for a Response")
        return [self._result(response, batch.output_names) for response in responses]

    def _call_execute(self, requests: list[Any]) -> Any:
        """The model's own execute, its logging routed to it; any exception a BackendError
        naming the file (a RepomanError as it is)."""
        send = triton_compat.transport(self.caller or model_caller())
        try:
            with pb_utils._logging_as(self._log_name, self), pb_utils._calling_through(send):
                responses = self._model.execute(requests)
                if inspect.isawaitable(responses):
                    # NOTE: an ``async def execute`` (to await async_exec calls) runs to the
                    # end on this instance's own loop, here, before the batch is answered.
                    if self._loop is None:
                        self._loop = asyncio.new_event_loop()
                    responses = self._loop.run_until_complete(responses)
                return responses
        except RepomanError:
            raise
        except Exception as exc:
            raise _failed(self._where, "execute", exc) from exc

    def _execute_triton(self, batch: Batch) -> Sequence[Result]:
        """Triton's contract: pb_utils requests in, one InferenceResponse per request out."""
        requests = triton_compat.requests_of(batch)
        responses = self._call_execute(requests)
        checked = triton_compat.check_responses(responses, len(requests), self._where)
        declared = self.context.config.output_names
        results: list[Result] = []
        for response in checked:
            outputs = triton_compat.outputs_of(response, declared, self._where, self._label)
            if isinstance(outputs, Exception):
                results.append(outputs)
            else:
                results.append(self._outputs(outputs, batch.output_names))
        return results

    def _result(self, response: Response, output_names: Sequence[str]) -> Result:
        """A request's outputs, converted to the configured data types, or its error."""
        if isinstance(response.error, Exception):
            return response.error
        if response.error is not None:
            return BackendError(f"{self._label}: {response.error}")
        return self._outputs(response.outputs, output_names)

    def _outputs(self, produced: Mapping[str, Any], output_names: Sequence[str]) -> Result:
        """The asked-for outputs, checked and converted to the config, or the request's error."""
        outputs: dict[str, np.ndarray] = {}
        batching = self.context.config.max_batch_size > 0
        for name in output_names:
            if name not in produced:
                present = ", ".join(produced) or "none"
                return BackendError(
                    f"{self._where}: the response has no output '{name}' (it has: {present})"
                )
            tensor = self.context.config.output(name)
            assert tensor is not None, "the core only asks for configured outputs"
            try:
                outputs[name] = as_output(tensor, produced[name], batching)
            except (TypeError, ValueError) as exc:
                return BackendError(f"{self._where}: {exc}")
        return outputs

    def unload(self) -> None:
        model, self._model = self._model, None
        try:
            finalize = getattr(model, "finalize", None)
            if finalize is not None:
                with pb_utils._logging_as(self._log_name, self):
                    finalize()
        except Exception as exc:
            raise _failed(self.context.model_path, "finalize", exc) from exc
        finally:
            _forget(self._module_name)
            pb_utils._forget_metrics(self)
            if self._loop is not None:
                self._loop.close()
                self._loop = None


def _failed(where: object, step: str, exc: Exception) -> BackendError:
    """The error to report when model code raised: no traceback (that goes to the debug log)."""
    log.debug("%s: %s failed", where, step, exc_info=exc)
    return BackendError(f"{where}: {step} failed: {type(exc).__name__}: {exc}")


def as_output(tensor: TensorConfig, value: Any, batching: bool = False) -> np.ndarray:
    """``value`` as an array of the output's configured type and shape; ValueError when
    that would change its kind (float to int, numbers to strings, ...) or its shape is not
    the config's (the batch dimension first when ``batching``)."""
    array = _converted(tensor, value)
    want, fixed = _wanted(tensor.reshape if tensor.reshape is not None else tensor.dims, batching)
    shape = array.shape
    if len(shape) != len(want):
        fits = False
    elif fixed is not None:
        fits = (shape[1:] if batching else shape) == fixed
    else:
        fits = all(w < 0 or h == w for h, w in zip(shape, want, strict=True))
    if not fits:
        raise ValueError(
            f"output '{tensor.name}' has shape {list(array.shape)}; the config expects "
            f"{list(want)} (-1: any size)"
        )
    return array


@functools.lru_cache(maxsize=256)
def _wanted(
    dims: tuple[int, ...], batching: bool
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """The shape an output must have (-1: any size), and the same past the batch dimension
    when every dimension there is fixed (checked with one comparison), else None."""
    want = ((-1,) if batching else ()) + tuple(dims)
    tail = want[1:] if batching else want
    return want, (tail if all(d >= 0 for d in tail) else None)


def _converted(tensor: TensorConfig, value: Any) -> np.ndarray:
    if tensor.data_type is DataType.BYTES:
        array = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object)
        if array.dtype.kind in ("S", "U"):
            array = array.astype(object)
        if array.dtype.kind != "O":
            raise ValueError(
                f"output '{tensor.name}' is {array.dtype}; TYPE_STRING takes bytes or str"
            )
        return array
    array = np.asarray(value)
    want = tensor.data_type.numpy_dtype
    if array.dtype == want:
        return array
    if array.dtype.kind in ("O", "S", "U") or not np.can_cast(array.dtype, want, "same_kind"):
        raise ValueError(
            f"output '{tensor.name}' is {array.dtype}, which does not convert safely to "
            f"{tensor.data_type.config_name}"
        )
    return array.astype(want)


def import_model_file(path: Path, tag: str) -> ModuleType:
    """Import ``path`` as a new module with a name of its own (two versions' code coexist).

    It is a package rooted at its folder (``from . import helpers`` works at any time) and
    the folder is first on sys.path during the import (so does ``import helpers``; such
    modules then leave sys.modules, or another model's ``helpers.py`` would be taken for
    this one's). Raises BackendError naming the file.
    """
    if not path.is_file():
        raise BackendError(f"{path}: no such file (a python model needs <version>/model.py)")
    name = f"_repoman_model_{next(_module_numbers)}_{_NOT_IDENTIFIER.sub('_', tag)}"
    folder = str(path.parent)
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=[folder])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    triton_compat.install()
    with _import_lock:
        before = set(sys.modules)
        sys.path.insert(0, folder)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            _forget(name)
            raise _failed(path, "import", exc) from exc
        finally:
            if folder in sys.path:  # unless the model's own code took it out already
                sys.path.remove(folder)
            _forget_siblings(set(sys.modules) - before, name, Path(folder))
    return module


def _forget_siblings(added: set[str], own: str, folder: Path) -> None:
    for module_name in added:
        if module_name == own or module_name.startswith(own + "."):
            continue
        file = getattr(sys.modules.get(module_name), "__file__", None)
        if file and Path(file).is_relative_to(folder):
            del sys.modules[module_name]


def _forget(module_name: str) -> None:
    """Drop a model module and what it imported relatively from sys.modules."""
    for name in [n for n in sys.modules if n == module_name or n.startswith(module_name + ".")]:
        del sys.modules[name]


def model_class(module: ModuleType, path: Path) -> type:
    """The model class ``path`` defines; BackendError when there is none or it cannot run."""
    for name in MODEL_CLASS_NAMES:
        found = getattr(module, name, None)
        if isinstance(found, type):
            if not callable(getattr(found, "execute", None)):
                raise BackendError(f"{path}: class {name} has no execute(self, requests) method")
            return found
    raise BackendError(f"{path}: expected a class named {' or '.join(MODEL_CLASS_NAMES)}")


def read_signature(
    model_path: Path,
    parameters: Mapping[str, str],
    on_step: Callable[[str], None] = lambda step: None,
) -> ModelSignature:
    """The tensors a model file's ``auto_complete_config`` declares, given an empty config,
    read in this process (the stub's; ``describe.py`` runs it there). ``on_step`` hears each
    step of the model's code before it runs: ``import``, then ``auto_complete_config``."""
    on_step("import")
    module = import_model_file(model_path, "describe")
    try:
        model_type = model_class(module, model_path)
        hook = inspect.getattr_static(model_type, "auto_complete_config", None)
        if hook is None:
            raise BackendError(
                f"{model_path}: a python model must declare its inputs and outputs in its "
                f"config, or return them from {model_type.__name__}.auto_complete_config(config)"
            )
        if not isinstance(hook, staticmethod | classmethod):
            raise BackendError(
                f"{model_path}: auto_complete_config must be a @staticmethod or @classmethod "
                "(it runs before any model object exists)"
            )
        # NOTE: bound through the descriptor: a staticmethod and a classmethod both work.
        auto_complete = hook.__get__(None, model_type)
        on_step("auto_complete_config")
        try:
            if triton_compat.is_triton_model(model_path, model_type):
                completed = triton_compat.auto_complete(auto_complete, parameters, model_path)
            else:
                completed = auto_complete({})
        except RepomanError:
            raise
        except Exception as exc:
            raise _failed(model_path, "auto_complete_config", exc) from exc
        return signature_of(completed, model_path)
    finally:
        _forget(module.__name__)


def signature_of(config: Any, where: Path) -> ModelSignature:
    """The ModelSignature of a config dict's ``input``, ``output`` and ``max_batch_size``."""
    if not isinstance(config, Mapping):
        raise BackendError(
            f"{where}: auto_complete_config must return the config dict, "
            f"got {type(config).__name__}"
        )
    max_batch_size = config.get("max_batch_size", 0)
    if type(max_batch_size) is not int:  # NOTE: not isinstance: True is no batch size
        raise BackendError(f"{where}: max_batch_size must be an integer, got {max_batch_size!r}")
    batching = max_batch_size > 0
    inputs = tuple(_tensor(e, batching, where, "input") for e in config.get("input") or ())
    outputs = tuple(_tensor(e, batching, where, "output") for e in config.get("output") or ())
    if not inputs and not outputs:
        raise BackendError(f"{where}: auto_complete_config returned no 'input' or 'output'")
    return ModelSignature(inputs, outputs, batching, max_batch_size or None)


def _tensor(entry: Any, batching: bool, where: Path, kind: str) -> TensorConfig:
    """One ``input``/``output`` entry; the batch dimension (-1) is prepended when batching."""
    try:
        name = entry["name"]
        type_name = entry["data_type"]
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        # NOTE: the config's names (TYPE_FP32, TYPE_STRING) or the protocol's (FP32, BYTES).
        prefix = "" if type_name.startswith("TYPE_") else "TYPE_"
        data_type = DataType.from_config_name(prefix + type_name)
        dims = tuple(int(d) for d in entry.get("dims", ()))
        optional = bool(entry.get("optional", False))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BackendError(
            f"{where}: auto_complete_config returned an invalid {kind} {entry!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    full = ((-1,) if batching else ()) + dims
    return TensorConfig(name=name, data_type=data_type, dims=full, optional=optional)
