"""The built-in ONNX Runtime backend, registered through the same entry point a third party uses."""

from __future__ import annotations

from repoman import BackendRegistry, hookimpl

PLATFORMS = ("onnxruntime_onnx",)

INSTALL_HINT = "pip install onnxruntime (or onnxruntime-gpu)"
"""What a user runs when onnxruntime is missing (the error naming it says so)."""


@hookimpl
def repoman_register_backends(registry: BackendRegistry) -> None:
    # NOTE: named by reference, so the backend module (and onnxruntime with it) is imported
    # only when an ONNX model is described or loaded: a server without one skips the import.
    registry.register(
        "onnxruntime",
        "repoman_onnxruntime.backend:OnnxRuntimeBackend",
        platforms=PLATFORMS,
        default_model_filename="model.onnx",
        describe="repoman_onnxruntime.backend:describe_model",
        install_hint=INSTALL_HINT,
    )
