"""An ONNX Runtime session per model instance; knobs from the config's ``parameters``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import onnxruntime as ort

from repoman import (
    Backend,
    BackendContext,
    Batch,
    DataType,
    ModelSignature,
    Result,
    TensorConfig,
    int_parameter,
)

# ONNX tensor element types as onnxruntime names them -> repoman data types.
_ONNX_TYPES = {
    "tensor(bool)": DataType.BOOL,
    "tensor(uint8)": DataType.UINT8,
    "tensor(uint16)": DataType.UINT16,
    "tensor(uint32)": DataType.UINT32,
    "tensor(uint64)": DataType.UINT64,
    "tensor(int8)": DataType.INT8,
    "tensor(int16)": DataType.INT16,
    "tensor(int32)": DataType.INT32,
    "tensor(int64)": DataType.INT64,
    "tensor(float16)": DataType.FP16,
    "tensor(float)": DataType.FP32,
    "tensor(double)": DataType.FP64,
    "tensor(string)": DataType.BYTES,
}

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class OnnxRuntimeBackend(Backend):
    """Runs ``model.onnx`` with onnxruntime.

    Parameters (config ``parameters``): ``intra_op_thread_count`` (default 1: the shared
    scheduler already runs one batch per core), ``inter_op_thread_count`` (default 1),
    ``graph_optimization_level`` (disable | basic | extended | all, default all).
    ``KIND_GPU`` instances use the CUDA execution provider when onnxruntime-gpu offers it.
    """

    # NOTE: a session run only computes; a small model's run costs less than a hand-off. So
    # far as the scheduler can tell from the calling thread's CPU time, that is: only on the
    # CPU, one thread each way (load() decides).
    may_run_inline = False

    def __init__(self, context: BackendContext) -> None:
        super().__init__(context)
        self._session: ort.InferenceSession | None = None

    def load(self) -> None:
        params = self.context.config.parameters
        options = ort.SessionOptions()
        options.intra_op_num_threads = int_parameter(params, "intra_op_thread_count", 1) or 0
        options.inter_op_num_threads = int_parameter(params, "inter_op_thread_count", 1) or 0
        level = params.get("graph_optimization_level", "all").lower()
        if level not in _OPT_LEVELS:
            raise ValueError(
                f"parameter graph_optimization_level: expected one of "
                f"{', '.join(_OPT_LEVELS)}, found '{level}'"
            )
        options.graph_optimization_level = _OPT_LEVELS[level]
        # NOTE: spinning intra-op threads burn a core each while idle, starving the
        # other workers and the event loop on a small machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = self._providers()
        self._session = ort.InferenceSession(
            str(self.context.model_path), options, providers=providers
        )
        self.may_run_inline = (
            providers == ["CPUExecutionProvider"]
            and options.intra_op_num_threads == 1
            and options.inter_op_num_threads == 1
        )

    def _providers(self) -> list[str | tuple[str, dict[str, str]]]:
        if self.context.instance_kind == "KIND_GPU":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError(
                    "instance kind KIND_GPU needs onnxruntime-gpu with the CUDA execution "
                    "provider; this onnxruntime offers: " + ", ".join(ort.get_available_providers())
                )
            device = str(self.context.device_id or 0)
            return [("CUDAExecutionProvider", {"device_id": device}), "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def execute(self, batch: Batch) -> Sequence[Result]:
        assert self._session is not None, "execute before load"
        names = list(batch.output_names)
        values = self._session.run(names, batch.merged())
        return batch.split(dict(zip(names, values, strict=True)))

    def unload(self) -> None:
        self._session = None


def describe_model(model_path: Path, parameters: Mapping[str, str]) -> ModelSignature:
    """The model's own inputs and outputs; it batches when every tensor's first dimension
    is variable (symbolic or -1)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    inputs = tuple(_describe(arg) for arg in session.get_inputs())
    outputs = tuple(_describe(arg) for arg in session.get_outputs())
    batching = all(t.dims and t.dims[0] == -1 for t in inputs + outputs)
    return ModelSignature(inputs, outputs, batching)


def _describe(arg: ort.NodeArg) -> TensorConfig:
    """The model's own view of a tensor; symbolic or unknown dimensions become -1."""
    dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
    data_type = _ONNX_TYPES.get(arg.type)
    if data_type is None:
        raise TypeError(f"tensor '{arg.name}' has ONNX type {arg.type}, which repoman cannot serve")
    return TensorConfig(name=arg.name, data_type=data_type, dims=dims)
