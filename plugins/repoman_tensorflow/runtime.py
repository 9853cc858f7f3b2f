"""TensorFlow's process-wide settings (thread pools, GPU memory), read from config parameters."""

from __future__ import annotations

import ctypes
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import tensorflow as tf

from repoman import BackendError, bool_parameter, int_parameter

log = logging.getLogger(__name__)

DEFAULT_THREADS = 1
"""Threads per pool when no config says: the shared scheduler already runs one batch per core."""

_LOCK = threading.Lock()
_DECIMAL = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", re.ASCII)


@dataclass(frozen=True)
class RuntimeSettings:
    """What one config asks of TensorFlow's runtime; None where it says nothing.

    ``intra_op_thread_count`` / ``inter_op_thread_count`` (integers >= 0, 0 lets TensorFlow
    pick; default 1) size its thread pools; ``allow_growth`` (true | false) and
    ``per_process_gpu_memory_fraction`` (a number in (0, 1]) shape its GPU memory. In
    TensorFlow 2 all four are process-wide and fixed once its runtime starts, so the first
    TensorFlow model loaded decides them for every model after it: a later config asking for
    other values gets a warning in the log. On a machine without GPUs the GPU knobs are
    accepted and do nothing.
    """

    intra_op: int | None = None
    inter_op: int | None = None
    allow_growth: bool | None = None
    memory_fraction: float | None = None

    @classmethod
    def from_parameters(cls, params: Mapping[str, str]) -> RuntimeSettings:
        """Raises ValueError naming the parameter, what was expected and what was found."""
        return cls(
            intra_op=int_parameter(params, "intra_op_thread_count"),
            inter_op=int_parameter(params, "inter_op_thread_count"),
            allow_growth=bool_parameter(params, "allow_growth"),
            memory_fraction=_fraction_param(params, "per_process_gpu_memory_fraction"),
        )


def configure_runtime(settings: RuntimeSettings) -> None:
    """Apply ``settings`` if TensorFlow's runtime has not started yet, then start it.

    Thread-safe: loads run on several worker threads.
    """
    threading_api = tf.config.threading
    with _LOCK:
        _set_threads(
            "intra_op_thread_count",
            settings.intra_op,
            threading_api.get_intra_op_parallelism_threads,
            threading_api.set_intra_op_parallelism_threads,
        )
        _set_threads(
            "inter_op_thread_count",
            settings.inter_op,
            threading_api.get_inter_op_parallelism_threads,
            threading_api.set_inter_op_parallelism_threads,
        )
        _configure_gpus(settings)
        # NOTE: start the runtime while holding the lock, so that no concurrent load can
        # change the settings between this one applying them and the runtime using them.
        tf.config.list_logical_devices()


def _set_threads(
    name: str, wanted: int | None, get: Callable[[], int], put: Callable[[int], None]
) -> None:
    value = DEFAULT_THREADS if wanted is None else wanted
    if get() == value:
        return
    try:
        put(value)
    except RuntimeError:
        if wanted is not None:
            log.warning(
                "parameter %s=%d has no effect: TensorFlow's thread pools are process-wide and "
                "already started with %d (0: TensorFlow's default) by an earlier model",
                name,
                wanted,
                get(),
            )


def _configure_gpus(settings: RuntimeSettings) -> None:
    if settings.allow_growth is None and settings.memory_fraction is None:
        return
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        log.debug(
            "allow_growth and per_process_gpu_memory_fraction have no effect: "
            "TensorFlow sees no GPU"
        )
        return
    if settings.memory_fraction is not None and settings.allow_growth:
        log.warning(
            "allow_growth is ignored: per_process_gpu_memory_fraction sets a fixed memory "
            "limit, which TensorFlow 2 cannot combine with memory growth"
        )
    try:
        for index, gpu in enumerate(gpus):
            if settings.memory_fraction is not None:
                limit = int(_gpu_memory_mib(index) * settings.memory_fraction)
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)]
                )
            else:
                tf.config.experimental.set_memory_growth(gpu, bool(settings.allow_growth))
    except (RuntimeError, ValueError) as exc:
        # NOTE: TensorFlow raises these when the GPUs were set up differently before.
        log.warning(
            "allow_growth / per_process_gpu_memory_fraction have no effect: TensorFlow's GPU "
            "memory setup is process-wide and was fixed by an earlier model (%s)",
            exc,
        )


def _gpu_memory_mib(index: int) -> int:
    """Total memory of CUDA device ``index`` (numbered as TensorFlow numbers its GPUs)."""
    # NOTE: TensorFlow's API tells no GPU's total memory; the CUDA driver does, and it is
    # present wherever TensorFlow sees a GPU.
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise BackendError(f"per_process_gpu_memory_fraction: no CUDA driver ({exc})") from None
    device, total = ctypes.c_int(), ctypes.c_size_t()
    if (
        cuda.cuInit(0)
        or cuda.cuDeviceGet(ctypes.byref(device), index)
        or cuda.cuDeviceTotalMem_v2(ctypes.byref(total), device)
    ):
        raise BackendError(
            f"per_process_gpu_memory_fraction: the CUDA driver did not tell GPU {index}'s memory"
        )
    return total.value // (1 << 20)


def _fraction_param(params: Mapping[str, str], name: str) -> float | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    # NOTE: not float(raw) alone: it also takes " 0.5\n", "1_0e-1" and Unicode digits.
    value = float(raw) if _DECIMAL.fullmatch(raw) else float("nan")
    if not 0 < value <= 1:  # NOTE: also refuses NaN
        raise ValueError(f"parameter {name}: expected a number in (0, 1], found '{raw}'")
    return value
