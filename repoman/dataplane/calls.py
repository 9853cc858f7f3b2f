"""Calls a model makes to models from inside a batch (BLS), run as the data plane runs a
client's request: routed, checked against the config, through the shared scheduler."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping

import numpy as np

from repoman.calls import ModelCall
from repoman.dataplane.request_checks import check_request, reshape_outputs
from repoman.errors import InvalidRequest, ModelNotReady, RequestTimeout
from repoman.inference import InferRequest, RequestedOutput
from repoman.manager import ModelManager, ModelVersion
from repoman.names import check_model_name
from repoman.pipeline.dispatch import Dispatcher


class ModelCalls:
    """The scheduler's call handler (``SharedScheduler.bind_calls``). Event loop only."""

    def __init__(self, manager: ModelManager, dispatcher: Dispatcher) -> None:
        self._manager = manager
        self._dispatcher = dispatcher

    async def __call__(
        self, call: ModelCall, held: tuple[ModelVersion, ...]
    ) -> Mapping[str, np.ndarray]:
        """The outputs of ``call``; raises the RepomanError that answers it.

        ``held``: the instances the calling batches hold while they wait for this call. A
        call whose every possible instance is among them would wait for itself forever (a
        model calling itself with one instance): it is refused at once instead.
        """
        check_model_name(call.model)
        version = self._manager.route(call.model, call.version)
        config = version.config
        instances = len(version.instances)
        if not config.is_ensemble and Counter(held)[version] >= max(instances, 1):
            raise ModelNotReady(
                version.model,
                version.version,
                f"the call would wait for itself: its {instances} instance(s) are all running "
                "batches that wait for this call (give it more instances in instance_group)",
            )
        wanted = call.outputs or config.output_names
        known = config.outputs_by_name
        for name in wanted:
            if name not in known:
                raise InvalidRequest(
                    f"unknown output '{name}' requested from model '{version.model}' "
                    f"(its outputs: {', '.join(sorted(known))})"
                )
        request = InferRequest(
            model_name=call.model,
            model_version=call.version,
            id=call.request_id or None,
            inputs=dict(call.inputs),
            outputs=[RequestedOutput(name) for name in wanted],
            parameters=dict(call.parameters),
        )
        inputs = check_request(config, request)
        running = self._dispatcher.submit(
            version,
            inputs,
            tuple(wanted),
            request_id=call.request_id,
            parameters=call.parameters,
            callers=held,
        )
        if call.timeout_us > 0:
            try:
                outputs = await asyncio.wait_for(running, call.timeout_us / 1e6)
            except TimeoutError:
                raise RequestTimeout(
                    f"model '{version.model}' version {version.version} did not answer within "
                    f"{call.timeout_us} us (the request's timeout)"
                ) from None
        else:
            outputs = await running
        return reshape_outputs(config, {name: outputs[name] for name in wanted})
