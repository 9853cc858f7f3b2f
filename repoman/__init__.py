"""repoman: a model repository manager and KServe v2 inference server.

This module is the public API for plugin authors: the backend contract, the registry
their hook fills, the hook marker, data types and errors; and the shared-memory pieces
(``Arena`` and the tensor descriptors written through it) for a plugin that runs models in
processes of its own.
"""

__version__ = "0.1.0"

from repoman.backends import (
    Backend,
    BackendContext,
    BackendRegistry,
    Batch,
    Result,
)
from repoman.calls import Caller, ModelCall, model_caller
from repoman.config.model import ModelConfig, TensorConfig
from repoman.errors import BackendError, ConfigError, ErrorKind, RepomanError
from repoman.hookspecs import hookimpl
from repoman.ipc import Arena
from repoman.ipc.tensors import Descriptor as TensorDescriptor
from repoman.ipc.tensors import get as get_tensor
from repoman.ipc.tensors import get_all as get_tensors
from repoman.ipc.tensors import put as put_tensor
from repoman.ipc.tensors import put_all as put_tensors
from repoman.parameters import bool_parameter, int_parameter
from repoman.signature import ModelSignature
from repoman.tensors import Rows
from repoman.threads import time_left
from repoman.types import DataType

__all__ = [
    "Arena",
    "Backend",
    "BackendContext",
    "BackendError",
    "BackendRegistry",
    "Batch",
    "Caller",
    "ConfigError",
    "DataType",
    "ErrorKind",
    "ModelCall",
    "ModelConfig",
    "ModelSignature",
    "RepomanError",
    "Result",
    "Rows",
    "TensorConfig",
    "TensorDescriptor",
    "__version__",
    "bool_parameter",
    "get_tensor",
    "get_tensors",
    "hookimpl",
    "int_parameter",
    "model_caller",
    "put_tensor",
    "put_tensors",
    "time_left",
]
