"""The ONNX Runtime backend: which of its sessions the scheduler may run on the event loop."""

from __future__ import annotations

import pytest

from repoman import BackendContext
from repoman.config import parse_model_config
from repoman.plugins import build_backend_registry, make_plugin_manager
from tests.conftest import BUNDLED

IRIS = (BUNDLED / "iris" / "config.yaml").read_text()


def loaded_iris(parameters: dict[str, str]):
    """The bundled iris model's backend, loaded with ``parameters`` added to its config."""
    text = IRIS.replace('intra_op_thread_count: "1"', "")
    for key, value in parameters.items():
        text += f'  {key}: "{value}"\n'
    config = parse_model_config(text, filename="config.yaml", fmt="yaml", model_name="iris")
    spec = build_backend_registry(*make_plugin_manager()).resolve(config)
    assert spec.name == "onnxruntime"
    model = BUNDLED / "iris" / "1" / "model.onnx"
    backend = spec.factory(
        BackendContext(config=config, version=1, version_path=model.parent, model_path=model)
    )
    backend.load()
    return backend


@pytest.mark.parametrize(
    ("parameters", "inline"),
    [
        ({}, True),  # NOTE: one thread each way by default: it computes on the calling thread
        ({"intra_op_thread_count": "1"}, True),
        ({"intra_op_thread_count": "2"}, False),
        ({"intra_op_thread_count": "0"}, False),  # NOTE: 0: onnxruntime's own pool, every core
        ({"inter_op_thread_count": "2"}, False),
    ],
)
def test_only_a_session_computing_on_the_calling_thread_may_run_on_the_loop(parameters, inline):
    # NOTE: the scheduler judges an execution on the loop by the calling thread's CPU time,
    # which understates one that waits for a pool of its own
    assert loaded_iris(parameters).may_run_inline is inline
