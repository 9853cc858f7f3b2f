"""The built-in Python-model backend (`backend: "python"`) and the classes a model.py uses."""

from __future__ import annotations

from repoman import BackendRegistry, hookimpl
from repoman_python import custom_metrics
from repoman_python.api import Request, Response, Tensor

__all__ = [
    "Request",
    "Response",
    "Tensor",
    "repoman_metrics_text",
    "repoman_register_backends",
]


@hookimpl
def repoman_register_backends(registry: BackendRegistry) -> None:
    # NOTE: named by reference, so the backend module is imported only when a python model
    # is described or loaded, as the other built-in backends do; model.py files import only
    # the small api module. Each instance runs in a process of its own (isolated.py).
    registry.register(
        "python",
        "repoman_python.isolated:IsolatedPythonBackend",
        default_model_filename="model.py",
        describe="repoman_python.describe:describe_model",
        # NOTE: describing runs the model's code in a process of its own: only for a config
        # that leaves things out (auto-complete), not to check every complete one at start
        check_complete=False,
    )


@hookimpl
def repoman_metrics_text() -> str:
    # NOTE: the models' pb_utils.MetricFamily metrics, summed over each version's instances.
    return custom_metrics.text()
