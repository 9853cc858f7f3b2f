"""Request bodies, encoded once before the load: random, zero or perf_analyzer JSON input data."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from repoman.perf.model import InputSpec, Target
from repoman.perf.options import UsageError
from repoman.signature import compatible_dims
from repoman.types import DataType

HEADER_LENGTH = "Inference-Header-Content-Length"
SEED = 0
RANDOM_STRING_LENGTH = 16

Row = dict[str, np.ndarray]  # input name -> one sample (no batch dimension)


@dataclass(frozen=True)
class Body:
    """One ready-to-send request: the bytes and the headers that go with them."""

    data: bytes
    headers: Mapping[str, str]


def sample_dims(spec: InputSpec, shapes: Mapping[str, Sequence[int]]) -> tuple[int, ...]:
    """The input's dims with every -1 filled from ``--shape``; UsageError if one stays open."""
    given = shapes.get(spec.name)
    if given is None:
        if -1 in spec.dims:
            raise UsageError(
                f"input '{spec.name}' has variable dims {list(spec.dims)}: "
                f"give them with --shape {spec.name}:"
                + ",".join("N" if d < 0 else str(d) for d in spec.dims)
            )
        return spec.dims
    if not compatible_dims(given, spec.dims):
        raise UsageError(
            f"--shape {spec.name}:{','.join(map(str, given))} does not fit the model's "
            f"dims {list(spec.dims)} (give the shape without the batch dimension)"
        )
    return tuple(given)


def generated_rows(
    inputs: Sequence[InputSpec], shapes: Mapping[str, Sequence[int]], kind: str, count: int
) -> list[Row]:
    """``count`` rows of random (seeded, so runs repeat) or zero data."""
    rng = np.random.default_rng(SEED)
    rows: list[Row] = [{} for _ in range(count)]
    for spec in inputs:
        dims = (count, *sample_dims(spec, shapes))
        dtype = spec.datatype
        if dtype is DataType.BYTES:
            letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)
            size = math.prod(dims)
            chars = letters[rng.integers(0, len(letters), (size, RANDOM_STRING_LENGTH))]
            strings = [b""] * size if kind == "zero" else [r.tobytes() for r in chars]
            values = np.array(strings, dtype=object).reshape(dims)
        elif kind == "zero":
            values = np.zeros(dims, dtype=dtype.numpy_dtype)
        elif dtype in (DataType.FP16, DataType.FP32, DataType.FP64):
            # NOTE: uniform [0, 1), never NaN or inf, which JSON could not carry.
            values = rng.random(dims).astype(dtype.numpy_dtype)
        elif dtype is DataType.BOOL:
            values = rng.integers(0, 2, dims).astype(np.bool_)
        else:  # small non-negative integers are valid for every integer type
            values = rng.integers(0, 100, dims).astype(dtype.numpy_dtype)
        for row, value in zip(rows, values, strict=True):
            row[spec.name] = value
    return rows


def _tensor(spec: InputSpec, dims: tuple[int, ...], value: Any, where: str) -> np.ndarray:
    shape: Any = None
    if isinstance(value, dict):
        shape = value.get("shape")
        if "b64" in value:
            if spec.datatype is DataType.BYTES:
                raise UsageError(f"{where}: b64 data for BYTES input '{spec.name}' is unsupported")
            raw = base64.b64decode(value["b64"])
            value = np.frombuffer(raw, dtype=spec.datatype.numpy_dtype.newbyteorder("<"))
        elif "content" in value:
            value = value["content"]
        else:
            raise UsageError(f"{where}: '{spec.name}' needs a list, 'content' or 'b64'")
    try:
        if spec.datatype is DataType.BYTES:
            flat = np.asarray(value, dtype=object).reshape(-1)
            array = np.array([str(v).encode() for v in flat], dtype=object)
        else:
            array = np.asarray(value, dtype=spec.datatype.numpy_dtype).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"{where}: '{spec.name}' is not {spec.datatype.value} data: {exc}"
        ) from None
    if shape is None:
        if dims.count(-1) == 1:  # one open dimension: the element count decides it
            known = math.prod(d for d in dims if d >= 0)
            open_size = array.size // known if known else 0
            shape = [open_size if d < 0 else d for d in dims]
        else:
            shape = list(dims)
    if -1 in shape or array.size != math.prod(shape):
        raise UsageError(
            f"{where}: '{spec.name}' has {array.size} elements, which do not make shape "
            f"{list(shape)} (give a 'shape' with the data or --shape {spec.name}:...)"
        )
    return array.reshape(shape)


def file_rows(
    inputs: Sequence[InputSpec], shapes: Mapping[str, Sequence[int]], path: Path
) -> list[Row]:
    """The rows of a perf_analyzer input-data file, ``{"data": [{NAME: ...}, ...]}``."""
    try:
        entries = json.loads(path.read_text())["data"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--input-data {path}: not a perf_analyzer data file ({exc})") from None
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"--input-data {path}: 'data' must be a non-empty list")
    rows: list[Row] = []
    for index, entry in enumerate(entries):
        where = f"{path} data[{index}]"
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: expected an object (sequence data is unsupported)")
        row: Row = {}
        for spec in inputs:
            if spec.name not in entry:
                raise UsageError(f"{where}: no data for input '{spec.name}'")
            dims = sample_dims(spec, shapes) if spec.name in shapes else spec.dims
            row[spec.name] = _tensor(spec, dims, entry[spec.name], where)
        rows.append(row)
    return rows


def _raw(array: np.ndarray, datatype: DataType) -> bytes:
    if datatype is DataType.BYTES:
        return b"".join(struct.pack("<I", len(v)) + v for v in array.reshape(-1))
    return np.ascontiguousarray(array, dtype=datatype.numpy_dtype.newbyteorder("<")).tobytes()


def _json_data(array: np.ndarray, datatype: DataType) -> list[Any]:
    if datatype is DataType.BYTES:
        try:
            return [v.decode() for v in array.reshape(-1)]
        except UnicodeDecodeError:
            raise UsageError("BYTES data that is not UTF-8 needs --tensor-format binary") from None
    return list(array.reshape(-1).tolist())


def encode(tensors: Mapping[str, np.ndarray], inputs: Sequence[InputSpec], binary: bool) -> Body:
    """One v2 infer request: the binary tensor extension (outputs binary too) or plain JSON."""
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for spec in inputs:
        array = tensors[spec.name]
        tensor: dict[str, Any] = {
            "name": spec.name,
            "shape": list(array.shape),
            "datatype": spec.datatype.value,
        }
        if binary:
            chunks.append(_raw(array, spec.datatype))
            tensor["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            tensor["data"] = _json_data(array, spec.datatype)
        described.append(tensor)
    request: dict[str, Any] = {"inputs": described}
    if not binary:
        return Body(orjson.dumps(request), {"Content-Type": "application/json"})
    request["parameters"] = {"binary_data_output": True}
    header = orjson.dumps(request)
    headers = {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}
    return Body(header + b"".join(chunks), headers)


def build_bodies(
    target: Target,
    source: str,
    batch_size: int,
    shapes: Mapping[str, Sequence[int]],
    binary: bool,
) -> list[Body]:
    """Every distinct request body of the run, encoded now so the loop only sends bytes.

    A data file's entries are rows: request k carries rows ``k*b .. k*b+b-1`` (wrapping), so the
    bodies cycle through every entry; random and zero data make one body.
    """
    if target.max_batch_size == 0 and batch_size > 1:
        raise UsageError(f"model '{target.model}' does not batch (max_batch_size 0): drop -b")
    unknown = sorted(set(shapes) - {spec.name for spec in target.inputs})
    if unknown:
        names = ", ".join(spec.name for spec in target.inputs)
        raise UsageError(f"--shape {unknown[0]}: no such input (inputs: {names})")
    if source in ("random", "zero"):
        rows = generated_rows(target.inputs, shapes, source, batch_size)
    else:
        rows = file_rows(target.inputs, shapes, Path(source))
    count = len(rows) // math.gcd(len(rows), batch_size)
    bodies = []
    for k in range(count):
        picked = [rows[(k * batch_size + j) % len(rows)] for j in range(batch_size)]
        tensors = {}
        for spec in target.inputs:
            parts = [row[spec.name] for row in picked]
            if len({part.shape for part in parts}) > 1:
                raise UsageError(
                    f"-b {batch_size}: rows of '{spec.name}' differ in shape and cannot batch"
                )
            batched = target.max_batch_size > 0
            tensors[spec.name] = np.stack(parts) if batched else parts[0]
        bodies.append(encode(tensors, target.inputs, binary))
    return bodies
