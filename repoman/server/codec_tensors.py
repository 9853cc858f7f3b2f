"""One tensor in KServe v2 wire form: JSON ``data`` arrays, the binary-data extension, JSON I/O."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from itertools import chain
from typing import Any

import numpy as np

from repoman.errors import InvalidRequest
from repoman.ipc.tensors import element_bytes, serialize_bytes
from repoman.types import DataType

_LENGTH = struct.Struct("<I")  # the 4-byte little-endian length before each BYTES element


# --- JSON ------------------------------------------------------------------------------------


def _stdlib_loads(text: bytes) -> Any:
    return json.loads(text)


def _stdlib_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _pick_json() -> tuple[Callable[[bytes], Any], Callable[[Any], bytes] | None]:
    """(loads, dumps): orjson's when it is installed, an optional speed-up; else stdlib's, None."""
    try:
        import orjson
    except ImportError:
        return _stdlib_loads, None

    def loads(text: bytes) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            # NOTE: the stdlib also reads NaN/Infinity (which tritonclient may send) and its
            # messages say where the text went wrong; only bad bodies pay for the second parse.
            return json.loads(text)

    return loads, orjson.dumps


_loads, _orjson_dumps = _pick_json()
json_dumps: Callable[[Any], bytes] = _orjson_dumps or _stdlib_dumps


def json_loads(text: bytes) -> Any:
    """Parse JSON text; anything unparsable raises InvalidRequest, never another exception."""
    try:
        return _loads(text)
    except RecursionError:
        raise InvalidRequest("request JSON is nested too deeply") from None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidRequest(f"request body is not valid JSON: {error}") from None


# --- decoding --------------------------------------------------------------------------------

_ALLOWED_JSON_TYPES: dict[DataType, tuple[frozenset[type], str]] = {
    DataType.BOOL: (frozenset({bool}), "JSON true/false"),
    DataType.BYTES: (frozenset({str}), "JSON strings"),
    DataType.FP16: (frozenset({int, float}), "JSON numbers"),
    DataType.FP32: (frozenset({int, float}), "JSON numbers"),
    DataType.FP64: (frozenset({int, float}), "JSON numbers"),
}
_INTEGERS = (frozenset({int}), "JSON integers")


def json_preview(value: Any) -> str:
    """``value`` as JSON text, cut short enough for an error message."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def describe_json(value: Any) -> str:
    """A parsed JSON value as an error message shows it: its JSON type and a preview."""
    kind = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
        type(None): "null",
    }.get(type(value), type(value).__name__)
    return f"{kind} {json_preview(value)}"


def decode_json_tensor(
    name: str, datatype: DataType, shape: list[int], count: int, data: Any
) -> np.ndarray:
    """Build the array for one input from its JSON ``data`` (flat, or nested in row-major order).

    Only the total element count is checked against ``shape``, as Triton does, not the nesting.
    Integer types take JSON integers only, float types take any JSON number, BOOL takes
    true/false, BYTES takes strings (encoded as UTF-8). Raises InvalidRequest naming the input.
    """
    if type(data) is not list:
        raise InvalidRequest(
            f"input '{name}': 'data' must be a JSON array, found {describe_json(data)}"
        )
    flat: list[Any] = data
    kinds = set(map(type, flat))  # one C-speed pass; the checks below then look at the set only
    while list in kinds:
        if len(kinds) > 1:
            raise InvalidRequest(f"input '{name}': 'data' mixes nested arrays and scalars")
        flat = list(chain.from_iterable(flat))
        kinds = set(map(type, flat))
    if len(flat) != count:
        raise InvalidRequest(
            f"input '{name}': shape {json_preview(shape)} needs {count} elements, "
            f"'data' has {len(flat)}"
        )
    allowed, described = _ALLOWED_JSON_TYPES.get(datatype, _INTEGERS)
    if not kinds <= allowed:
        bad = next(value for value in flat if type(value) not in allowed)
        raise InvalidRequest(
            f"input '{name}': {datatype.value} data must be {described}, found {describe_json(bad)}"
        )
    if datatype is DataType.BYTES:
        try:
            encoded = [text.encode() for text in flat]
        except UnicodeEncodeError as error:
            raise InvalidRequest(
                f"input '{name}': a string is not valid Unicode: {error}"
            ) from None
        return object_array(encoded).reshape(shape)
    dtype = datatype.numpy_dtype
    try:
        # NOTE: errstate: FP16/FP32 overflow to inf is reported below as an error, not a warning.
        with np.errstate(over="ignore"):
            array = np.array(flat, dtype=dtype)
    except OverflowError:
        raise _out_of_range(name, datatype, flat) from None
    if dtype.kind == "f" and not np.isfinite(array).all():
        source = np.array(flat, dtype=np.float64)
        if (np.isfinite(source) & ~np.isfinite(array)).any():
            raise _out_of_range(name, datatype, flat)
    return array.reshape(shape)


def _out_of_range(name: str, datatype: DataType, flat: list[Any]) -> InvalidRequest:
    """The error for the first value that does not fit ``datatype`` (slow path, errors only)."""
    dtype = datatype.numpy_dtype
    for value in flat:
        if dtype.kind == "f":
            try:
                with np.errstate(over="ignore"):
                    fits = bool(np.isfinite(dtype.type(value))) or not np.isfinite(float(value))
            except OverflowError:
                fits = False
        else:
            info = np.iinfo(dtype)
            fits = int(info.min) <= value <= int(info.max)
        if not fits:
            return InvalidRequest(
                f"input '{name}': value {describe_json(value)} is out of range for {datatype.value}"
            )
    return InvalidRequest(f"input '{name}': a value is out of range for {datatype.value}")


def decode_binary_tensor(
    name: str, datatype: DataType, shape: list[int], count: int, chunk: memoryview
) -> np.ndarray:
    """Build the array for one input from its raw little-endian bytes.

    Fixed-size types must be exactly count * itemsize bytes and come back as a view of
    ``chunk`` when its alignment allows (a copy otherwise). BYTES elements are each a 4-byte
    little-endian length and that many bytes. Raises InvalidRequest naming the input.
    """
    if datatype is DataType.BYTES:
        return object_array(_split_bytes_elements(name, count, bytes(chunk))).reshape(shape)
    expected = count * datatype.itemsize
    if len(chunk) != expected:
        raise InvalidRequest(
            f"input '{name}': {datatype.value} shape {json_preview(shape)} needs {expected} bytes, "
            f"binary_data_size is {len(chunk)}"
        )
    if datatype is DataType.BOOL:
        raw = np.frombuffer(chunk, dtype=np.uint8)
        if raw.size and raw.max() > 1:
            raise InvalidRequest(f"input '{name}': BOOL binary data must be bytes 0 or 1")
        return raw.view(np.bool_).reshape(shape)
    native = datatype.numpy_dtype
    little = datatype.little_endian
    # NOTE: the header length decides the offset, so chunks are often misaligned; numpy copes,
    # but backends that hand the buffer to C code may not. bytes() is one plain memcpy into
    # an aligned buffer (astype on a misaligned view takes numpy's slow buffered path).
    array = np.frombuffer(chunk, dtype=little)
    if not array.flags.aligned:
        array = np.frombuffer(bytes(chunk), dtype=little)
    if little != native:
        array = array.astype(native)
    return array.reshape(shape)


def _split_bytes_elements(name: str, count: int, raw: bytes) -> list[bytes]:
    elements: list[bytes] = []
    position, end = 0, len(raw)
    # Every element takes at least 4 bytes, so a lying shape ends the loop early.
    for index in range(count):
        if position + 4 > end:
            raise InvalidRequest(
                f"input '{name}': BYTES binary data ends before element {index} of {count}"
            )
        (size,) = _LENGTH.unpack_from(raw, position)
        position += 4
        if position + size > end:
            raise InvalidRequest(
                f"input '{name}': BYTES element {index} declares {size} bytes, "
                f"only {end - position} remain"
            )
        elements.append(raw[position : position + size])
        position += size
    if position != end:
        raise InvalidRequest(
            f"input '{name}': BYTES binary data has {end - position} bytes left over "
            f"after {count} elements"
        )
    return elements


def object_array(items: list[Any]) -> np.ndarray:
    """A 1-D object array holding ``items`` as they are (np.array could nest sequences)."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


# --- encoding --------------------------------------------------------------------------------

# Enough significant digits to read back the same FP16 / FP32 value. Without orjson, "%g"
# formats about 3x faster than json.dumps of the float64 repr (1M FP32 values: 0.21 s vs
# 0.80 s); orjson's dumps is faster still (0.04 s), so it is used when installed.
_SHORT_FLOAT_FORMAT = {DataType.FP16: b"%.5g,", DataType.FP32: b"%.9g,"}


def encode_binary_tensor(array: np.ndarray, datatype: DataType) -> bytes | memoryview:
    """The binary-data form of ``array``: raw little-endian row-major bytes; len() is its size."""
    if datatype is DataType.BYTES:
        return serialize_bytes(array)
    little = np.ascontiguousarray(array, dtype=datatype.little_endian)
    return little.reshape(-1).view(np.uint8).data


def encode_json_tensor(array: np.ndarray, datatype: DataType) -> bytes:
    """The JSON ``data`` array of ``array``, flat, in row-major order.

    BYTES elements become strings; raises UnicodeDecodeError when one is not UTF-8 (the caller
    sends that output as binary instead). Non-finite floats are written NaN/Infinity/-Infinity
    as Python's json and tritonclient (python-rapidjson) read them; strict JSON has no word
    for them.
    """
    if datatype is DataType.BYTES:
        return json_dumps([element_bytes(item).decode() for item in array.flat])
    values = array.reshape(-1).tolist()
    if datatype.numpy_dtype.kind != "f":
        return json_dumps(values)
    if not np.isfinite(array).all():
        return _stdlib_dumps(values)  # orjson would write null
    short = _SHORT_FLOAT_FORMAT.get(datatype)
    # NOTE: "%g" writes -0.0 as "-0", which JSON readers take for the integer 0.
    if short is not None and _orjson_dumps is None and not np.signbit(array[array == 0]).any():
        return b"[" + (short * len(values) % tuple(values))[:-1] + b"]"
    return json_dumps(values)


def is_utf8_text(text: str) -> bool:
    """Whether ``text`` can be sent back as UTF-8 (JSON may spell a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
