"""Named fake backends for tests. Also a drop-in plugin: ``--plugins-dir`` a folder holding it."""

from __future__ import annotations

import asyncio
import mmap
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from repoman import Backend, BackendRegistry, Batch, Result, hookimpl


class EchoBackend(Backend):
    """Every output is the first input, cast to the output's type. Records the batch sizes it
    ran, each batch's request ids (one per request of the batch), and each batch's merged
    first input and the outputs it gave (``tensors``)."""

    def load(self) -> None:
        self.batch_sizes: list[int] = []
        self.batch_ids: list[list[str]] = []
        self.tensors: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        self.delay = float(self.context.config.parameters.get("delay_ms", "0")) / 1000
        time.sleep(float(self.context.config.parameters.get("load_delay_ms", "0")) / 1000)

    def execute(self, batch: Batch) -> Sequence[Result]:
        self.batch_sizes.append(batch.size)
        self.batch_ids.append(list(batch.request_ids or [""] * len(batch.requests)))
        if self.delay:
            time.sleep(self.delay)
        merged = batch.merged()
        source = merged[batch.input_names[0]]
        outputs = {}
        for name in batch.output_names:
            tensor = self.context.config.output(name)
            assert tensor is not None
            outputs[name] = source.astype(tensor.data_type.numpy_dtype)
        self.tensors.append((source, outputs))
        return batch.split(outputs)


class FailingLoadBackend(Backend):
    def load(self) -> None:
        raise RuntimeError("this model is broken on purpose")

    def execute(self, batch: Batch) -> Sequence[Result]:
        raise AssertionError("never loaded")


class RaisingBackend(EchoBackend):
    """Fails every batch whose first row starts with a negative number; echoes otherwise."""

    def execute(self, batch: Batch) -> Sequence[Result]:
        merged = batch.merged()[batch.input_names[0]]
        if (merged.reshape(merged.shape[0], -1)[:, 0] < 0).any():
            raise ValueError("negative input poisons the whole batch")
        return super().execute(batch)


class PerRequestErrorBackend(EchoBackend):
    """Echoes, but a request whose first element is negative gets an error in its own slot."""

    def execute(self, batch: Batch) -> Sequence[Result]:
        results = list(super().execute(batch))
        for index, request in enumerate(batch.requests):
            first = request[batch.input_names[0]].reshape(-1)[0]
            if first < 0:
                results[index] = ValueError(f"request {index} has a negative first element")
        return results


class BlockingBackend(EchoBackend):
    """Blocks in execute until released; lets tests hold workers busy deterministically.
    Records the first element of each request it ran, in the order it ran them."""

    gate = threading.Event()

    def load(self) -> None:
        super().load()
        self.firsts: list[float] = []

    def execute(self, batch: Batch) -> Sequence[Result]:
        self.gate.wait(30)
        for request in batch.requests:
            self.firsts.append(float(request[batch.input_names[0]].reshape(-1)[0]))
        return super().execute(batch)


class BallastBackend(EchoBackend):
    """Echoes, holding as many bytes of memory as its model file is long (pages touched, so
    they count in the resident set), or ``ballast_mb`` MiB when its parameters say."""

    def load(self) -> None:
        super().load()
        import numpy as np

        mb = self.context.config.parameters.get("ballast_mb")
        size = int(float(mb) * (1 << 20)) if mb else self.context.model_path.stat().st_size
        # NOTE: pages of its own, mapped here and touched: the resident set grows by exactly
        # this much (memory malloc kept from an earlier free could be reused unseen)
        self.ballast: mmap.mmap | None = mmap.mmap(-1, max(size, 1))
        np.frombuffer(self.ballast, dtype=np.uint8)[:] = 1

    def unload(self) -> None:
        if self.ballast is not None:
            self.ballast.close()
            self.ballast = None


class LoopBackend(EchoBackend):
    """Echoes from ``execute_async``, awaited on the event loop (no worker thread), once
    ``gate`` (an asyncio.Event a test sets on its loop) is set. Counts the batches it has
    in flight at once (``peak``, over every instance)."""

    gate: asyncio.Event | None = None
    running = 0
    peak = 0

    async def execute_async(self, batch: Batch) -> Sequence[Result]:
        LoopBackend.running += 1
        LoopBackend.peak = max(LoopBackend.peak, LoopBackend.running)
        try:
            if LoopBackend.gate is not None:
                await LoopBackend.gate.wait()
            return self.execute(batch)
        finally:
            LoopBackend.running -= 1


class _Unreadable(Sequence):
    """A sequence that raises when read."""

    def __len__(self) -> int:
        raise RuntimeError("no length today")

    def __getitem__(self, index):
        raise RuntimeError("no items today")


class ContractBreakingBackend(EchoBackend):
    """Runs the batch, then returns what its config's ``returns`` parameter names instead of
    one result per request: ``none``, ``int``, ``dict`` (the outputs, unsplit), ``generator``
    (the right results, but a generator), ``strings`` (a string per request), ``one_short``
    (a result too few), ``unreadable`` (a sequence that raises when read), or ``fine`` (the
    results as they should be)."""

    def execute(self, batch: Batch) -> Sequence[Result]:
        results = list(super().execute(batch))
        returns = self.context.config.parameters.get("returns", "fine")
        wrong: dict[str, Callable[[], Any]] = {
            "none": lambda: None,
            "int": lambda: len(results),
            "dict": lambda: self.tensors[-1][1],
            "generator": lambda: (result for result in results),
            "strings": lambda: ["not a result"] * len(results),
            "one_short": lambda: results[:-1],
            "unreadable": lambda: _Unreadable(),
            "fine": lambda: results,
        }
        return wrong[returns]()


FAKES = {
    "echo": EchoBackend,
    "failing_load": FailingLoadBackend,
    "raising": RaisingBackend,
    "per_request_error": PerRequestErrorBackend,
    "blocking": BlockingBackend,
    "ballast": BallastBackend,
    "loop": LoopBackend,
    "contract_breaking": ContractBreakingBackend,
}


@hookimpl
def repoman_register_backends(registry: BackendRegistry) -> None:
    for name, cls in FAKES.items():
        registry.register(name, cls, default_model_filename="model.txt")


def write_model(
    root,
    name: str,
    *,
    backend: str = "echo",
    versions: Sequence[int] = (1,),
    max_batch_size: int = 8,
    dims: Sequence[int] = (4,),
    extra: str = "",
    data_type: str = "TYPE_FP32",
    file_bytes: int = 0,
) -> None:
    """Write a model folder for a fake backend: config.pbtxt plus version folders with a file
    (``file_bytes`` long when given: a sparse file, which costs no disk)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    dims_text = ", ".join(str(d) for d in dims)
    (folder / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "{backend}"\nmax_batch_size: {max_batch_size}\n'
        f'input [{{ name: "INPUT" data_type: {data_type} dims: [ {dims_text} ] }}]\n'
        f'output [{{ name: "OUTPUT" data_type: {data_type} dims: [ {dims_text} ] }}]\n' + extra
    )
    for version in versions:
        (folder / str(version)).mkdir(exist_ok=True)
        (folder / str(version) / "model.txt").write_text("fake")
        if file_bytes:
            os.truncate(folder / str(version) / "model.txt", file_bytes)


class _Timer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when a test says so; timers fire in ``advance``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, _Timer, object, tuple]] = []
        self._seq = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback, *args) -> _Timer:
        import heapq

        timer = _Timer()
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, timer, callback, args))
        return timer

    def advance(self, seconds: float) -> None:
        import heapq

        target = self.now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer, callback, args = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not timer.cancelled:
                callback(*args)
        self.now = target


def make_version(
    backend: type[Backend] = EchoBackend,
    *,
    name: str = "m",
    version: int = 1,
    max_batch_size: int = 8,
    dims: tuple[int, ...] = (2,),
    instances: int = 1,
    dynamic: object | None = None,
    parameters: dict[str, str] | None = None,
):
    """A READY ModelVersion with loaded fake instances, for in-process scheduler tests."""
    from pathlib import Path

    from repoman.backends import BackendContext
    from repoman.config.model import InstanceGroup, ModelConfig, TensorConfig
    from repoman.manager import ModelVersion, State
    from repoman.types import DataType

    config = ModelConfig(
        name=name,
        platform="",
        backend="fake",
        max_batch_size=max_batch_size,
        inputs=(TensorConfig("INPUT", DataType.FP32, dims),),
        outputs=(TensorConfig("OUTPUT", DataType.FP32, dims),),
        instance_groups=(InstanceGroup(f"{name}_0", count=instances),),
        dynamic_batching=dynamic,  # type: ignore[arg-type]
        parameters=parameters or {},
    )
    mv = ModelVersion(name, version, config, Path("."), state=State.READY)
    for index in range(instances):
        context = BackendContext(config, version, Path("."), Path("."), f"{name}_{index}")
        instance = backend(context)
        instance.load()
        mv.instances.append(instance)
    return mv
