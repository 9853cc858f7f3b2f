"""Bare grpcio baselines for bench/grpc_vs_http.py: how fast grpcio's asyncio server itself is here.

No repository, validation, statistics or repoman code: a grpcio asyncio server (the options
repoman's gRPC edge uses) with just enough of Triton's GRPCInferenceService for
perf_analyzer (metadata, config, ModelInfer). ``ModelInfer`` is, by ``--mode``:

- ``fixed``: answers a fixed ModelInferResponse at once (grpcio's own ceiling);
- ``thread``: awaits an asyncio future that a worker thread resolves with
  ``call_soon_threadsafe``, one wake-up per batch of waiting requests, as repoman's scheduler
  does (what handing work to a thread costs beside grpcio), with no compute;
- ``batch``: the same, with the model run by onnxruntime on the batch (bench/
  bare_batching_server.py's batcher over gRPC: the ceiling of "grpcio + a batching thread").

Usage: python bench/bare_grpc_server.py MODEL_DIR PORT [--mode fixed|thread|batch]
       [--switch-interval-us N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2_grpc
from tritonclient.grpc import service_pb2 as pb

MAX_BATCH = 32
WIDTH = 784
"""bench/make_models.py's input width, for --mode fixed and thread (no onnxruntime)."""

Pending = tuple[np.ndarray, asyncio.Future[np.ndarray]]


def model_shape(model_dir: Path, mode: str) -> tuple[str, str, int, Callable[[np.ndarray], Any]]:
    """The model's input name, output name, input width and a batch function."""
    if mode != "batch":
        return "input", "output", WIDTH, lambda rows: np.zeros((len(rows), 10), np.float32)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), options)
    in_name = session.get_inputs()[0].name
    out_name = session.get_outputs()[0].name
    width = int(session.get_inputs()[0].shape[1])
    return in_name, out_name, width, lambda rows: session.run([out_name], {in_name: rows})[0]


class Batcher:
    """One worker thread: takes up to MAX_BATCH waiting rows, computes, resolves the futures
    with one ``call_soon_threadsafe`` per batch."""

    def __init__(self, compute: Callable[[np.ndarray], np.ndarray]) -> None:
        self._compute = compute
        self._lock = threading.Condition()
        self._queue: list[Pending] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.counts = [0, 0]
        """Rows and batches run (ModelStatistics' inference and execution counts)."""
        threading.Thread(target=self._work, daemon=True).start()

    def submit(self, rows: np.ndarray) -> asyncio.Future[np.ndarray]:
        loop = self._loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._queue.append((rows, future))
            self._lock.notify()
        return future

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._lock.wait()
                taken, count = [], 0
                while self._queue and count + len(self._queue[0][0]) <= MAX_BATCH:
                    item = self._queue.pop(0)
                    taken.append(item)
                    count += len(item[0])
            merged = np.concatenate([rows for rows, _ in taken]) if len(taken) > 1 else taken[0][0]
            result = self._compute(merged)
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._answer, taken, result)

    def _answer(self, taken: list[Pending], result: np.ndarray) -> None:
        self.counts[0] += len(result)
        self.counts[1] += 1
        start = 0
        for rows, future in taken:
            if not future.done():
                future.set_result(result[start : start + len(rows)])
            start += len(rows)


def servicer(
    name: str, mode: str, model_dir: Path
) -> service_pb2_grpc.GRPCInferenceServiceServicer:
    in_name, out_name, width, compute = model_shape(model_dir, mode)
    metadata = pb.ModelMetadataResponse(
        name=name,
        versions=["1"],
        platform="onnxruntime_onnx",
        inputs=[
            pb.ModelMetadataResponse.TensorMetadata(
                name=in_name, datatype="FP32", shape=[-1, width]
            )
        ],
        outputs=[
            pb.ModelMetadataResponse.TensorMetadata(name=out_name, datatype="FP32", shape=[-1, 10])
        ],
    )
    config = pb.ModelConfigResponse(
        config=json_format.ParseDict(
            {
                "name": name,
                "platform": "onnxruntime_onnx",
                "max_batch_size": MAX_BATCH,
                "input": [{"name": in_name, "data_type": "TYPE_FP32", "dims": [width]}],
                "output": [{"name": out_name, "data_type": "TYPE_FP32", "dims": [10]}],
            },
            model_config_pb2.ModelConfig(),
        )
    )
    fixed = np.zeros((1, 10), np.float32)
    fixed_counts = [0, 0]
    batcher = Batcher(compute) if mode != "fixed" else None

    class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
        async def ServerLive(self, request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=True)

        async def ModelReady(self, request: Any, context: Any) -> Any:
            return pb.ModelReadyResponse(ready=True)

        async def ServerMetadata(self, request: Any, context: Any) -> Any:
            return pb.ServerMetadataResponse(name="bare", version="0")

        async def ModelMetadata(self, request: Any, context: Any) -> Any:
            return metadata

        async def ModelConfig(self, request: Any, context: Any) -> Any:
            return config

        async def ModelStatistics(self, request: Any, context: Any) -> Any:
            rows, batches = batcher.counts if batcher is not None else fixed_counts
            stats = pb.ModelStatistics(
                name=name, version="1", inference_count=rows, execution_count=batches
            )
            return pb.ModelStatisticsResponse(model_stats=[stats])

        async def ModelInfer(self, request: Any, context: Any) -> Any:
            if batcher is None:
                result = fixed
                fixed_counts[0] += 1
                fixed_counts[1] += 1
            else:
                shape = list(request.inputs[0].shape)
                rows = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(shape)
                result = await batcher.submit(rows)
            message = pb.ModelInferResponse(model_name=name, model_version="1")
            message.outputs.add(name=out_name, datatype="FP32", shape=result.shape)
            message.raw_output_contents.append(result.tobytes())
            return message

    return Servicer()


async def serve(args: argparse.Namespace) -> None:
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 0), ("grpc.max_send_message_length", -1)]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        servicer(args.model_dir.name, args.mode, args.model_dir), server
    )
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    print(f"listening on grpc://127.0.0.1:{args.port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("port", type=int)
    ap.add_argument("--mode", choices=["fixed", "thread", "batch"], default="fixed")
    ap.add_argument("--switch-interval-us", type=int, default=0)
    args = ap.parse_args()
    if args.switch_interval_us:
        sys.setswitchinterval(args.switch_interval_us / 1e6)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
