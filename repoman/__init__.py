"""repoman: a model repository manager and KServe v2 inference server.

This module is the public API for plugin authors: the backend contract, the registry
their hook fills, the hook marker, data types and errors.
"""

__version__ = "0.1.0"

from repoman.backends import (
    Backend,
    BackendContext,
    BackendRegistry,
    Batch,
    Result,
)
from repoman.config.model import ModelConfig, TensorConfig
from repoman.errors import BackendError, ConfigError, RepomanError
from repoman.hookspecs import hookimpl
from repoman.parameters import bool_parameter, int_parameter
from repoman.signature import ModelSignature
from repoman.types import DataType

__all__ = [
    "Backend",
    "BackendContext",
    "BackendError",
    "BackendRegistry",
    "Batch",
    "ConfigError",
    "DataType",
    "ModelConfig",
    "ModelSignature",
    "RepomanError",
    "Result",
    "TensorConfig",
    "__version__",
    "bool_parameter",
    "hookimpl",
    "int_parameter",
]
