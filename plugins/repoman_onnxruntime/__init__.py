"""The built-in ONNX Runtime backend, registered through the same entry point a third party uses."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from repoman import Backend, BackendContext, BackendRegistry, ModelSignature, hookimpl

PLATFORMS = ("onnxruntime_onnx",)


@hookimpl
def repoman_register_backends(registry: BackendRegistry) -> None:
    # NOTE: the backend module (and onnxruntime with it) is imported only when a model
    # using it loads, so a server without ONNX models does not pay for the import.
    def factory(context: BackendContext) -> Backend:
        from repoman_onnxruntime.backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(context)

    def describe(model_path: Path, parameters: Mapping[str, str]) -> ModelSignature:
        from repoman_onnxruntime.backend import describe_model

        return describe_model(model_path, parameters)

    registry.register(
        "onnxruntime",
        factory,
        platforms=PLATFORMS,
        default_model_filename="model.onnx",
        describe=describe,
    )
