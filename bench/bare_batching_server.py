"""A second baseline: the bare aiohttp handler plus the smallest dynamic batcher that works.

Requests append (rows, future) to one list; when the single worker is free it takes up to
``max_batch`` rows, concatenates them, runs onnxruntime (one intra-op thread, as repoman runs
it) and hands each request its slice -- no repository, plugins, validation, priorities, stats
or fairness. It is the ceiling of "aiohttp + a batching thread" on this machine, so the
benchmark can tell repoman's layers apart from the cost of the stack itself.

Modes: ``executor`` dispatches each batch from the event loop with ``run_in_executor`` (as
repoman does); ``pull`` has the worker thread take its next batch itself under a lock and post
results back with ``call_soon_threadsafe`` (one loop round trip per batch saved).

Usage: python bench/bare_batching_server.py MODEL_DIR PORT [--mode executor|pull]
       [--switch-interval-us N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
from aiohttp import web

HEADER = "Inference-Header-Content-Length"
MAX_BATCH = 32

Pending = tuple[np.ndarray, asyncio.Future[np.ndarray]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("port", type=int)
    ap.add_argument("--mode", choices=["executor", "pull"], default="executor")
    ap.add_argument("--switch-interval-us", type=int, default=0)
    args = ap.parse_args()
    if args.switch_interval_us:
        sys.setswitchinterval(args.switch_interval_us / 1e6)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(args.model_dir / "1" / "model.onnx"), options)
    in_name = session.get_inputs()[0].name
    out_name = session.get_outputs()[0].name
    name = args.model_dir.name
    width = int(session.get_inputs()[0].shape[1])
    config = {
        "name": name,
        "platform": "onnxruntime_onnx",
        "max_batch_size": MAX_BATCH,
        "input": [{"name": in_name, "data_type": "TYPE_FP32", "dims": [width]}],
        "output": [{"name": out_name, "data_type": "TYPE_FP32", "dims": [10]}],
    }
    metadata = {
        "name": name,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": in_name, "datatype": "FP32", "shape": [-1, width]}],
        "outputs": [{"name": out_name, "datatype": "FP32", "shape": [-1, 10]}],
    }

    def compute(taken: list[Pending]) -> np.ndarray:
        merged = np.concatenate([rows for rows, _ in taken]) if len(taken) > 1 else taken[0][0]
        return session.run([out_name], {in_name: merged})[0]

    counts = [0, 0]  # rows, executions: for the mean batch size

    def answer(taken: list[Pending], result: np.ndarray) -> None:
        counts[0] += len(result)
        counts[1] += 1
        start = 0
        for rows, future in taken:
            if not future.done():
                future.set_result(result[start : start + len(rows)])
            start += len(rows)

    def take(pending: list[Pending]) -> list[Pending]:
        taken, count = [], 0
        while pending and count + len(pending[0][0]) <= MAX_BATCH:
            item = pending.pop(0)
            taken.append(item)
            count += len(item[0])
        return taken

    submit: Callable[[np.ndarray], asyncio.Future[np.ndarray]]
    if args.mode == "executor":
        pool = ThreadPoolExecutor(1)
        pending: list[Pending] = []
        busy = False

        def dispatch() -> None:
            nonlocal busy
            if busy or not pending:
                return
            busy = True
            taken = take(pending)
            done = asyncio.get_running_loop().run_in_executor(pool, compute, taken)
            done.add_done_callback(lambda f: finished(taken, f))

        def finished(taken: list[Pending], f: asyncio.Future[np.ndarray]) -> None:
            nonlocal busy
            busy = False
            answer(taken, f.result())
            dispatch()

        def submit(rows: np.ndarray) -> asyncio.Future[np.ndarray]:
            future = asyncio.get_running_loop().create_future()
            pending.append((rows, future))
            asyncio.get_running_loop().call_soon(dispatch)
            return future
    else:
        lock = threading.Condition()
        queue: list[Pending] = []
        loop_box: list[asyncio.AbstractEventLoop] = []

        def worker() -> None:
            while True:
                with lock:
                    while not queue:
                        lock.wait()
                    taken = take(queue)
                result = compute(taken)
                loop_box[0].call_soon_threadsafe(answer, taken, result)

        threading.Thread(target=worker, daemon=True).start()

        def submit(rows: np.ndarray) -> asyncio.Future[np.ndarray]:
            if not loop_box:
                loop_box.append(asyncio.get_running_loop())
            future = asyncio.get_running_loop().create_future()
            with lock:
                queue.append((rows, future))
                lock.notify()
            return future

    async def infer(request: web.Request) -> web.Response:
        body = await request.read()
        length = request.headers.get(HEADER)
        header = json.loads(body[: int(length)] if length else body)
        tensor = header["inputs"][0]
        if length:
            data = np.frombuffer(body[int(length) :], dtype=np.float32)
        else:
            data = np.asarray(tensor["data"], dtype=np.float32)
        result = await submit(data.reshape(tensor["shape"]))
        binary = header.get("parameters", {}).get("binary_data_output", False) or any(
            o.get("parameters", {}).get("binary_data") for o in header.get("outputs", [])
        )
        out = {"name": out_name, "datatype": "FP32", "shape": list(result.shape)}
        reply = {"model_name": name, "model_version": "1", "outputs": [out]}
        if binary:
            raw = result.tobytes()
            out["parameters"] = {"binary_data_size": len(raw)}
            head = json.dumps(reply).encode()
            return web.Response(
                body=head + raw,
                headers={HEADER: str(len(head))},
                content_type="application/octet-stream",
            )
        out["data"] = result.reshape(-1).tolist()
        return web.Response(body=json.dumps(reply).encode(), content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        rows, executions = counts
        return web.json_response(
            {"model_stats": [{"inference_count": rows, "execution_count": executions}]}
        )

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/v2/health/ready", lambda r: web.json_response({"ready": True}))
    app.router.add_get("/v2", lambda r: web.json_response({"name": "bare", "version": "0"}))
    app.router.add_get(f"/v2/models/{name}", lambda r: web.json_response(metadata))
    app.router.add_get(f"/v2/models/{name}/config", lambda r: web.json_response(config))
    app.router.add_get(f"/v2/models/{name}/versions/1/stats", stats)
    app.router.add_post(f"/v2/models/{name}/infer", infer)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
