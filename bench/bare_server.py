"""The baseline: a bare aiohttp handler that calls onnxruntime directly on the event loop.

It speaks just enough KServe v2 (JSON and binary tensors, one FP32 input and output) for
perf_analyzer, with no repository, plugins, scheduler or validation: what repoman's layers
are measured against. Usage: python bench/bare_server.py MODEL_DIR PORT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from aiohttp import web

HEADER = "Inference-Header-Content-Length"


def main() -> None:
    model_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), options)
    in_name = session.get_inputs()[0].name
    out_name = session.get_outputs()[0].name
    name = model_dir.name
    width = int(session.get_inputs()[0].shape[1])
    config = {
        "name": name,
        "platform": "onnxruntime_onnx",
        "max_batch_size": 32,
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

    async def infer(request: web.Request) -> web.Response:
        body = await request.read()
        length = request.headers.get(HEADER)
        header = json.loads(body[: int(length)] if length else body)
        tensor = header["inputs"][0]
        if length:
            data = np.frombuffer(body[int(length) :], dtype=np.float32)
        else:
            data = np.asarray(tensor["data"], dtype=np.float32)
        result = session.run([out_name], {in_name: data.reshape(tensor["shape"])})[0]
        binary = header.get("parameters", {}).get("binary_data_output", False) or any(
            o.get("parameters", {}).get("binary_data") for o in header.get("outputs", [])
        )
        out = {"name": out_name, "datatype": "FP32", "shape": list(result.shape)}
        answer = {"model_name": name, "model_version": "1", "outputs": [out]}
        if binary:
            raw = result.tobytes()
            out["parameters"] = {"binary_data_size": len(raw)}
            head = json.dumps(answer).encode()
            return web.Response(
                body=head + raw,
                headers={HEADER: str(len(head))},
                content_type="application/octet-stream",
            )
        out["data"] = result.reshape(-1).tolist()
        return web.Response(body=json.dumps(answer).encode(), content_type="application/json")

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/v2/health/ready", ok)
    app.router.add_get("/v2", lambda r: web.json_response({"name": "bare", "version": "0"}))
    app.router.add_get(f"/v2/models/{name}", lambda r: web.json_response(metadata))
    app.router.add_get(f"/v2/models/{name}/config", lambda r: web.json_response(config))
    app.router.add_post(f"/v2/models/{name}/infer", infer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
