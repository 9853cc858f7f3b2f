"""The built-in TensorFlow SavedModel backend, registered the way a third-party plugin is."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from repoman import Backend, BackendContext, BackendRegistry, ModelSignature, hookimpl

PLATFORMS = ("tensorflow_savedmodel",)


@hookimpl
def repoman_register_backends(registry: BackendRegistry) -> None:
    # NOTE: the backend module (and tensorflow with it, several seconds and hundreds of MB)
    # is imported only when a model using it is described or loaded, so a server without
    # TensorFlow models does not pay for the import.
    def factory(context: BackendContext) -> Backend:
        from repoman_tensorflow.backend import TensorFlowBackend

        return TensorFlowBackend(context)

    def describe(model_path: Path, parameters: Mapping[str, str]) -> ModelSignature:
        from repoman_tensorflow.backend import describe_model

        return describe_model(model_path, parameters)

    registry.register(
        "tensorflow",
        factory,
        platforms=PLATFORMS,
        default_model_filename="model.savedmodel",
        describe=describe,
    )
