"""The built-in Python-model backend (`backend: "python"`) and the classes a model.py uses."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from repoman import Backend, BackendContext, BackendRegistry, ModelSignature, hookimpl
from repoman_python.api import Request, Response, Tensor

__all__ = ["Request", "Response", "Tensor", "repoman_register_backends"]


@hookimpl
def repoman_register_backends(registry: BackendRegistry) -> None:
    # NOTE: the backend module is imported only when a python model loads or is described,
    # as the other built-in backends do; model.py files import only the small api module.
    def factory(context: BackendContext) -> Backend:
        from repoman_python.backend import PythonBackend

        return PythonBackend(context)

    def describe(model_path: Path, parameters: Mapping[str, str]) -> ModelSignature:
        from repoman_python.backend import describe_model

        return describe_model(model_path, parameters)

    registry.register("python", factory, default_model_filename="model.py", describe=describe)
