"""The Triton side of the python backend: what a ``TritonPythonModel`` gets and gives back."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import Any

import numpy as np

from repoman import BackendContext, BackendError, Batch, Caller, ErrorKind, ModelCall
from repoman_python import pb_utils

NOT_APPLICABLE = {
    "EXECUTION_ENV_PATH": "model.py runs in the server's own Python environment",
}
"""Triton python-backend config parameters that mean nothing here, and why."""

_IMPORTS_PB_UTILS = re.compile(r"\btriton_python_backend_utils\b")
_IMPORTS_REPOMAN = re.compile(r"\brepoman_python\b")


def install() -> None:
    """Make ``import triton_python_backend_utils`` find repoman's version of it."""
    sys.modules.setdefault(pb_utils.MODULE_NAME, pb_utils)


def is_triton_model(path: Path, model_type: type) -> bool:
    """Whether ``model_type`` speaks Triton's API (pb_utils requests and responses).

    A file that imports ``triton_python_backend_utils`` does; so does a class named
    ``TritonPythonModel`` in a file that does not use repoman's own ``repoman_python`` API.
    """
    source = path.read_text(errors="replace")
    if _IMPORTS_PB_UTILS.search(source):
        return True
    return model_type.__name__ == "TritonPythonModel" and not _IMPORTS_REPOMAN.search(source)


def logger_name(context: BackendContext) -> str:
    return f"repoman.models.{context.config.name}"


def initialize_args(context: BackendContext) -> dict[str, str]:
    """Triton's ``initialize(args)``: every value a string, the config as JSON."""
    return {
        "model_config": json.dumps(context.config.as_dict()),
        "model_instance_kind": context.instance_kind,
        "model_instance_name": context.instance_name,
        "model_instance_device_id": str(context.device_id or 0),
        "model_repository": str(context.version_path.parent),
        "model_version": str(context.version),
        "model_name": context.config.name,
    }


def requests_of(batch: Batch) -> list[pb_utils.InferenceRequest]:
    count = len(batch.requests)
    ids = batch.request_ids or [""] * count
    parameters = batch.request_parameters or [{}] * count
    outputs = batch.requested_outputs or [batch.output_names] * count
    return [
        pb_utils.InferenceRequest._received(
            [pb_utils.Tensor(name, array) for name, array in inputs.items()],
            wanted,
            request_id=request_id,
            parameters=params,
        )
        for inputs, wanted, request_id, params in zip(
            batch.requests, outputs, ids, parameters, strict=True
        )
    ]


def check_responses(responses: Any, count: int, where: str) -> list[pb_utils.InferenceResponse]:
    """``responses`` when it is one InferenceResponse per request; BackendError otherwise."""
    is_list = isinstance(responses, list | tuple)
    if not is_list or len(responses) != count:
        got = f"{len(responses)} responses" if is_list else f"a {type(responses).__name__}"
        raise BackendError(
            f"{where}: execute returned {got} for {count} requests "
            "(expected a list of one pb_utils.InferenceResponse per request, in order)"
        )
    for item in responses:
        if not isinstance(item, pb_utils.InferenceResponse):
            raise BackendError(
                f"{where}: execute returned a {type(item).__name__} "
                "for a pb_utils.InferenceResponse"
            )
    return list(responses)


def outputs_of(
    response: pb_utils.InferenceResponse, declared: Sequence[str], where: str, label: str
) -> dict[str, np.ndarray] | BackendError:
    """A response's tensors by name, or the error that fails its request."""
    error = response.error()
    if error is not None:
        # NOTE: the code is the kind (pb_utils' codes are Triton's, as ErrorKind's are): it
        # sets the status the client gets.
        return BackendError(f"{label}: {error.message()}", ErrorKind(error.code()))
    outputs: dict[str, np.ndarray] = {}
    for tensor in response.output_tensors():
        if tensor.name() not in declared:
            return BackendError(
                f"{where}: output '{tensor.name()}' is not in the model's config "
                f"(it declares: {', '.join(declared) or 'none'})"
            )
        outputs[tensor.name()] = tensor.as_numpy()
    return outputs


def auto_complete(hook: Any, parameters: Mapping[str, str], where: Path) -> dict[str, Any]:
    """Run Triton's ``auto_complete_config`` on an empty config; the config dict it returns."""
    start: dict[str, Any] = {}
    if parameters:
        start["parameters"] = {k: {"string_value": v} for k, v in parameters.items()}
    completed = hook(pb_utils.ModelConfig(start))
    if not isinstance(completed, pb_utils.ModelConfig):
        raise BackendError(
            f"{where}: auto_complete_config must return the auto_complete_model_config it "
            f"was given, got {type(completed).__name__}"
        )
    config = completed.as_dict()
    if (config.get("model_transaction_policy") or {}).get("decoupled"):
        raise BackendError(f"{where}: decoupled models are not supported by repoman yet")
    return config


# ---- models calling models (BLS) ------------------------------------------------------


def transport(caller: Caller | None) -> pb_utils._Transport | None:
    """What ``InferenceRequest.exec()`` sends through: ``caller`` (the core's door, or the
    stub's channel to it), its answer turned into an InferenceResponse, errors included."""
    if caller is None:
        return None

    def send(request: pb_utils.InferenceRequest) -> Future[pb_utils.InferenceResponse]:
        answer: Future[pb_utils.InferenceResponse] = Future()
        version = request.model_version()
        call = ModelCall(
            model=request.model_name(),
            inputs={tensor.name(): tensor.as_numpy() for tensor in request.inputs()},
            outputs=tuple(request.requested_output_names()),
            version=None if version < 0 else version,
            request_id=request.request_id(),
            parameters=json.loads(request.parameters()),
            timeout_us=request.timeout(),
        )
        try:
            running = caller(call)
        except Exception as exc:
            answer.set_result(error_response(exc))
            return answer

        def settle(done: Future[Mapping[str, np.ndarray]]) -> None:
            try:
                outputs = done.result()
            except CancelledError:
                answer.set_result(error_response(BackendError("the call was cancelled")))
            except Exception as exc:
                answer.set_result(error_response(exc))
            else:
                tensors = [pb_utils.Tensor(name, array) for name, array in outputs.items()]
                answer.set_result(pb_utils.InferenceResponse(output_tensors=tensors))

        running.add_done_callback(settle)
        return answer

    return send


def error_response(exc: BaseException) -> pb_utils.InferenceResponse:
    """The response a failed call gets: a TritonError whose code is the error's kind."""
    kind = getattr(exc, "kind", ErrorKind.INTERNAL)
    code = int(kind) if isinstance(kind, ErrorKind) else int(ErrorKind.INTERNAL)
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), code))
