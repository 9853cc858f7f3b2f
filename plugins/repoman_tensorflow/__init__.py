"""The built-in TensorFlow SavedModel backend, registered the way a third-party plugin is."""

from __future__ import annotations

from repoman import BackendRegistry, hookimpl

PLATFORMS = ("tensorflow_savedmodel",)

INSTALL_HINT = "pip install 'repoman[tensorflow]'"
"""What a user runs when tensorflow is missing (the error naming it says so)."""


@hookimpl
def repoman_register_backends(registry: BackendRegistry) -> None:
    # NOTE: named by reference, so the backend module (and tensorflow with it, several
    # seconds and hundreds of MB) is imported only when a TensorFlow model is described or
    # loaded: a server without one skips the import.
    registry.register(
        "tensorflow",
        "repoman_tensorflow.backend:TensorFlowBackend",
        platforms=PLATFORMS,
        default_model_filename="model.savedmodel",
        describe="repoman_tensorflow.backend:describe_model",
        install_hint=INSTALL_HINT,
    )
