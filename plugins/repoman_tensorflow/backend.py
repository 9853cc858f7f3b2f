"""A TensorFlow SavedModel signature per model instance; knobs from the config's ``parameters``."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# NOTE: before the import: TensorFlow's C++ logging reads this once, and its INFO lines
# (CPU feature notes) would otherwise open every server log. An explicit setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from repoman import (
    Backend,
    BackendContext,
    BackendError,
    Batch,
    DataType,
    ModelSignature,
    Result,
    TensorConfig,
)
from repoman_tensorflow.runtime import RuntimeSettings, configure_runtime

DEFAULT_SIGNATURE = "serving_default"

_TF_TYPES: dict[tf.DType, DataType] = {
    tf.bool: DataType.BOOL,
    tf.uint8: DataType.UINT8,
    tf.uint16: DataType.UINT16,
    tf.uint32: DataType.UINT32,
    tf.uint64: DataType.UINT64,
    tf.int8: DataType.INT8,
    tf.int16: DataType.INT16,
    tf.int32: DataType.INT32,
    tf.int64: DataType.INT64,
    tf.float16: DataType.FP16,
    tf.float32: DataType.FP32,
    tf.float64: DataType.FP64,
    tf.string: DataType.BYTES,
}
TF_DTYPES: dict[DataType, tf.DType] = {member: dtype for dtype, member in _TF_TYPES.items()}
"""Each repoman data type's TensorFlow dtype (BYTES is tf.string)."""


@dataclass(frozen=True)
class _Tensor:
    """A signature tensor as TensorFlow declares it; -1 marks an unknown dimension."""

    name: str
    dtype: tf.DType
    shape: tuple[int, ...] | None  # None: unknown rank

    @property
    def servable(self) -> bool:
        return self.dtype in _TF_TYPES

    def as_config(self) -> TensorConfig:
        if not self.servable:
            raise BackendError(
                f"tensor '{self.name}' has TensorFlow type {self.dtype.name}, "
                "which repoman cannot serve"
            )
        return TensorConfig(self.name, _TF_TYPES[self.dtype], self.shape or ())


class TensorFlowBackend(Backend):
    """Runs one signature of ``model.savedmodel`` (a SavedModel directory) with TensorFlow 2.

    The config's input and output names are the signature's own (its keyword arguments and
    the keys of the dict it returns). Parameters (config ``parameters``): ``signature_name``
    (default ``serving_default``), and the process-wide knobs of ``runtime.RuntimeSettings``
    (``intra_op_thread_count``, ``inter_op_thread_count``, ``allow_growth``,
    ``per_process_gpu_memory_fraction``). ``KIND_CPU`` instances run on the CPU even where a
    GPU exists; ``KIND_GPU`` ones on their GPU, which needs a TensorFlow build with CUDA.
    """

    def __init__(self, context: BackendContext) -> None:
        super().__init__(context)
        self._model: Any = None  # NOTE: keeps the signature's variables alive
        self._signature: Any = None
        self._inputs: dict[str, _Tensor] = {}
        self._outputs: dict[str, _Tensor] = {}
        self._device: str | None = None

    def load(self) -> None:
        config = self.context.config
        settings = RuntimeSettings.from_parameters(config.parameters)
        name = config.parameters.get("signature_name") or DEFAULT_SIGNATURE
        configure_runtime(settings)
        self._device = self._pick_device()
        model = tf.saved_model.load(str(self.context.model_path))
        if name not in model.signatures:
            known = ", ".join(sorted(model.signatures)) or "none"
            raise BackendError(
                f"the SavedModel has no signature '{name}' (its signatures: {known}); "
                "parameter signature_name picks one"
            )
        signature = model.signatures[name]
        _, keyword_specs = signature.structured_input_signature
        inputs = {key: _from_spec(key, spec) for key, spec in keyword_specs.items()}
        outputs = {key: _from_spec(key, spec) for key, spec in signature.structured_outputs.items()}
        self._model, self._signature = model, signature
        self._inputs, self._outputs = inputs, outputs

    def _pick_device(self) -> str | None:
        if self.context.instance_kind == "KIND_CPU":
            return "/CPU:0"
        if self.context.instance_kind != "KIND_GPU":
            return None
        index = self.context.device_id or 0
        gpus = tf.config.list_logical_devices("GPU")
        if index >= len(gpus):
            raise BackendError(
                f"instance kind KIND_GPU needs GPU {index}, but TensorFlow sees {len(gpus)} "
                "GPU(s) (a CUDA build of TensorFlow is needed: tensorflow[and-cuda])"
            )
        return f"/GPU:{index}"

    def execute(self, batch: Batch) -> Sequence[Result]:
        assert self._signature is not None, "execute before load"
        merged = batch.merged()
        missing = [name for name in self._inputs if name not in merged]
        if missing:
            raise BackendError(f"the signature needs input(s) {', '.join(missing)}; none was sent")
        placement = tf.device(self._device) if self._device else contextlib.nullcontext()
        with placement:
            feeds = {
                name: tf.constant(merged[name], dtype=tensor.dtype)
                for name, tensor in self._inputs.items()
            }
            produced = self._signature(**feeds)
        # NOTE: .numpy() of a tf.string tensor is already an object array of bytes.
        return batch.split({name: produced[name].numpy() for name in batch.output_names})

    def unload(self) -> None:
        # NOTE: TensorFlow frees a loaded graph and its variables once nothing references
        # them; the collection breaks the reference cycles trackable objects hold.
        self._model = self._signature = None
        self._inputs, self._outputs = {}, {}
        gc.collect()


def describe_model(model_path: Path, parameters: Mapping[str, str]) -> ModelSignature:
    """The inputs and outputs of the signature the config picks (parameter ``signature_name``,
    default ``serving_default``); it batches when every tensor's first dimension is variable.

    Reads ``saved_model.pb`` as a protobuf without loading the model: that would start
    TensorFlow's runtime and fix its process-wide settings before any config could set them.
    """
    name = parameters.get("signature_name") or DEFAULT_SIGNATURE
    signature = _read_signature_def(model_path, name)
    inputs = tuple(_from_info(k, v).as_config() for k, v in sorted(signature.inputs.items()))
    outputs = tuple(_from_info(k, v).as_config() for k, v in sorted(signature.outputs.items()))
    batching = all(t.dims and t.dims[0] == -1 for t in inputs + outputs)
    return ModelSignature(inputs, outputs, batching)


def _read_signature_def(model_path: Path, name: str) -> meta_graph_pb2.SignatureDef:
    saved = saved_model_pb2.SavedModel()
    if (model_path / "saved_model.pb").is_file():
        saved.ParseFromString((model_path / "saved_model.pb").read_bytes())
    elif (model_path / "saved_model.pbtxt").is_file():
        text_format.Parse((model_path / "saved_model.pbtxt").read_text(), saved)
    else:
        raise BackendError(f"{model_path} is not a SavedModel directory (no saved_model.pb)")
    # NOTE: a TF1 export may hold several meta graphs; serving uses the one tagged "serve".
    graphs = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags] or saved.meta_graphs
    if not graphs or name not in graphs[0].signature_def:
        known = ", ".join(sorted(graphs[0].signature_def)) if graphs else ""
        raise BackendError(
            f"the SavedModel has no signature '{name}' (its signatures: {known or 'none'})"
        )
    return graphs[0].signature_def[name]


def _from_spec(name: str, spec: Any) -> _Tensor:
    """A tensor of a loaded signature (a tf.TensorSpec, or a tensor in older exports)."""
    shape = None if spec.shape.rank is None else tuple(-1 if d is None else d for d in spec.shape)
    return _Tensor(name, spec.dtype, shape)


def _from_info(name: str, info: meta_graph_pb2.TensorInfo) -> _Tensor:
    """A tensor of a signature read from the protobuf."""
    if info.WhichOneof("encoding") != "name":
        raise BackendError(f"tensor '{name}' is sparse or composite, which repoman cannot serve")
    dims = info.tensor_shape
    shape = None if dims.unknown_rank else tuple(max(d.size, -1) for d in dims.dim)
    return _Tensor(name, tf.dtypes.as_dtype(info.dtype), shape)
