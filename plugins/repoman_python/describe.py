"""Describing a model.py (its ``auto_complete_config``) in a short-lived stub process, so a
model whose import or ``auto_complete_config`` exits, crashes, grows or hangs fails only
itself, with the reason, and the server keeps serving.

The stub is bounded in time by the smaller of the model's ``load_timeout_seconds`` and what
is left of the caller's deadline (``repoman.time_left()``: the Source's
``--model-load-timeout``), and is killed when that passes, so nothing outlives a caller that
gave up. ``isolation: none`` describes in the server's process, as it serves there.
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from repoman import BackendError, DataType, ModelSignature, TensorConfig, time_left
from repoman_python import process as stubs
from repoman_python import wire
from repoman_python.backend import read_signature
from repoman_python.errors import rebuilt_error
from repoman_python.isolated import read_settings
from repoman_python.output import Origin

log = logging.getLogger(__name__)

STEPS = {
    "start": "starting its process",
    "import": "importing it",
    "auto_complete_config": "auto_complete_config",
}
"""What a describe stub was doing, as the reasons say it."""


def describe_model(model_path: Path, parameters: Mapping[str, str]) -> ModelSignature:
    """The tensors the model file's ``auto_complete_config`` declares (the backend's
    ``describe``); BackendError naming the file and the step when it cannot be read."""
    try:
        settings = read_settings(parameters)
    except ValueError as exc:
        raise BackendError(f"{model_path}: {exc}") from None
    if not settings.isolated:
        return read_signature(model_path, parameters)
    limit = float(settings.load_timeout)
    within = f"within {limit:g} s (load_timeout_seconds)"
    left = time_left()
    if left is not None and left < limit:
        limit = left
        within = f"within the --model-load-timeout ({left:.1f} s were left)"
    version = model_path.parent.name
    origin = Origin(
        model_path.parent.parent.name, int(version) if version.isdigit() else None, "describe"
    )
    deadline = time.monotonic() + limit
    process, sock = stubs.start(origin)
    step, code = "start", None
    try:
        body = {
            "model_path": str(model_path),
            "parameters": dict(parameters),
            "memory_limit_bytes": settings.memory_limit,
        }
        wire.send(sock, ("describe", body))
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            (kind, detail), _ = wire.receive(sock, trusted=False)
            if kind != "step":
                break
            step = str(detail)
    except TimeoutError:
        code = stubs.stop(process, kill=True)
        raise BackendError(
            f"{model_path}: {STEPS.get(step, step)} did not finish {within}; its process was killed"
        ) from None
    except (wire.Closed, OSError, ValueError, TypeError, pickle.UnpicklingError) as exc:
        code = stubs.stop(process, kill=True)
        raise BackendError(
            f"{model_path}: {STEPS.get(step, step)} failed: {stubs.exited(code, exc)}"
        ) from None
    finally:
        sock.close()
        if code is None:
            _reap(process)
    if kind == "error":
        raise rebuilt_error(detail, str(model_path))
    return from_plain(detail, model_path)


def _reap(process: subprocess.Popen[bytes]) -> None:
    """The stub exits once it has answered; one that does not is killed."""
    code = stubs.stop(process, kill=False, grace=1.0)
    if code:
        log.debug("describe stub %d ended with %d", process.pid, code)


# ---- a signature as plain data (what comes back from the stub is read as nothing else) ----


def as_plain(signature: ModelSignature) -> dict[str, Any]:
    def tensors(items: tuple[TensorConfig, ...]) -> list[list[Any]]:
        return [[t.name, t.data_type.config_name, list(t.dims), t.optional] for t in items]

    return {
        "inputs": tensors(signature.inputs),
        "outputs": tensors(signature.outputs),
        "batching": signature.batching,
        "max_batch_size": signature.max_batch_size,
    }


def from_plain(data: Any, where: Path) -> ModelSignature:
    """The signature :func:`as_plain` made; BackendError for anything else."""

    def tensors(items: Any) -> tuple[TensorConfig, ...]:
        return tuple(
            TensorConfig(
                name=str(name),
                data_type=DataType.from_config_name(str(type_name)),
                dims=tuple(int(d) for d in dims),
                optional=bool(optional),
            )
            for name, type_name, dims, optional in items
        )

    try:
        max_batch_size = data["max_batch_size"]
        return ModelSignature(
            tensors(data["inputs"]),
            tensors(data["outputs"]),
            bool(data["batching"]),
            None if max_batch_size is None else int(max_batch_size),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendError(f"{where}: describing it gave an unreadable answer ({exc})") from None
