"""Tensor data types: Triton config names (TYPE_FP32), KServe v2 names (FP32) and numpy dtypes."""

from __future__ import annotations

import enum

import numpy as np


class DataType(enum.Enum):
    """A tensor element type. The value is the KServe v2 protocol name."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"

    @property
    def config_name(self) -> str:
        """The name in a model configuration (``TYPE_FP32``; BYTES is ``TYPE_STRING``)."""
        return "TYPE_STRING" if self is DataType.BYTES else f"TYPE_{self.value}"

    # NOTE: keyed by the plain string value: an Enum member hashes through Python code, and
    # these two sit on every request's path.
    @property
    def numpy_dtype(self) -> np.dtype:
        return _NUMPY_BY_VALUE[self._value_]

    @property
    def little_endian(self) -> np.dtype:
        """The numpy dtype of the binary tensor encoding (little-endian; BYTES: object)."""
        return _LITTLE_ENDIAN_BY_VALUE[self._value_]

    @property
    def itemsize(self) -> int:
        """Bytes per element in the binary tensor encoding (0 for variable-size BYTES)."""
        return _ITEMSIZE_BY_VALUE[self._value_]

    @classmethod
    def from_config_name(cls, name: str) -> DataType:
        """``TYPE_FP32`` -> FP32. Raises KeyError for unknown names."""
        if name == "TYPE_STRING":
            return cls.BYTES
        if not name.startswith("TYPE_"):
            raise KeyError(name)
        return cls(name[5:])

    @classmethod
    def from_protocol_name(cls, name: str) -> DataType:
        """``FP32`` -> FP32. Raises KeyError for unknown names (TypeError for unhashable ones)."""
        return _BY_PROTOCOL_NAME[name]

    @classmethod
    def from_numpy(cls, dtype: np.dtype) -> DataType:
        """The data type of a numpy dtype (strings and objects are BYTES). KeyError if none."""
        found = _FROM_NUMPY.get(dtype)
        if found is not None:
            return found
        dtype = np.dtype(dtype)
        if dtype.kind in ("O", "S", "U"):
            return cls.BYTES
        return _FROM_NUMPY[dtype]


_NUMPY: dict[DataType, np.dtype] = {
    DataType.BOOL: np.dtype(np.bool_),
    DataType.UINT8: np.dtype(np.uint8),
    DataType.UINT16: np.dtype(np.uint16),
    DataType.UINT32: np.dtype(np.uint32),
    DataType.UINT64: np.dtype(np.uint64),
    DataType.INT8: np.dtype(np.int8),
    DataType.INT16: np.dtype(np.int16),
    DataType.INT32: np.dtype(np.int32),
    DataType.INT64: np.dtype(np.int64),
    DataType.FP16: np.dtype(np.float16),
    DataType.FP32: np.dtype(np.float32),
    DataType.FP64: np.dtype(np.float64),
    DataType.BYTES: np.dtype(object),
}

_NUMPY_BY_VALUE: dict[str, np.dtype] = {member.value: dtype for member, dtype in _NUMPY.items()}
_LITTLE_ENDIAN_BY_VALUE: dict[str, np.dtype] = {
    value: dtype.newbyteorder("<") for value, dtype in _NUMPY_BY_VALUE.items()
}
_ITEMSIZE_BY_VALUE: dict[str, int] = {
    member.value: 0 if member is DataType.BYTES else dtype.itemsize
    for member, dtype in _NUMPY.items()
}

# NOTE: hashing a dtype is cheap, and this lookup sits on every response's path.
_FROM_NUMPY: dict[np.dtype, DataType] = {
    dtype: member for member, dtype in _NUMPY.items() if member is not DataType.BYTES
}

_BY_PROTOCOL_NAME: dict[str, DataType] = {member.value: member for member in DataType}

CONFIG_TYPE_NAMES: tuple[str, ...] = tuple(t.config_name for t in DataType)
"""Every ``data_type`` value a model configuration may use (TYPE_INVALID is not one)."""
