"""The transport-agnostic data plane: inference, health, metadata and the repository index."""

from __future__ import annotations

from typing import Any, Protocol

from repoman import __version__
from repoman.config.model import TensorConfig
from repoman.dataplane.request_checks import check_request, reshape_outputs
from repoman.errors import InvalidRequest, ModelNotFound
from repoman.inference import InferRequest, InferResponse
from repoman.manager.manager import ModelManager, ModelVersion, State
from repoman.metrics import Metrics
from repoman.scheduler import SharedScheduler
from repoman.source.scan import MODEL_NAME

SERVER_NAME = "repoman"
EXTENSIONS = (
    "binary_tensor_data",
    "model_configuration",
    "model_repository",
    "statistics",
)


class RepositoryControl(Protocol):
    """How the service loads and unloads models on request (the composition root provides it)."""

    async def load(self, name: str, config_text: str | None) -> None: ...

    async def unload(self, name: str) -> None: ...


class InferenceService:
    """What every protocol layer calls; it knows nothing of HTTP.

    ``ready`` is False until the first repository pass has finished (whatever its
    outcome: a model that failed is reported, not waited for), then True while serving.
    """

    def __init__(
        self,
        manager: ModelManager,
        scheduler: SharedScheduler,
        control: RepositoryControl | None = None,
    ) -> None:
        self.manager = manager
        self.scheduler = scheduler
        self.control = control
        self.ready = False
        self.metrics = Metrics(manager, scheduler)

    # ---- inference -----------------------------------------------------------------

    def check_servable(self, name: str, version: int | None = None) -> None:
        """Raise (404/503) unless a request for ``name``/``version`` could be served now;
        lets the HTTP layer answer before it parses a body that could not be used."""
        self.manager.route(name, version)

    async def infer(self, request: InferRequest) -> InferResponse:
        version = self.manager.route(request.model_name, request.model_version)
        config = version.config
        inputs = check_request(config, request)
        if request.outputs is None:
            wanted = config.output_names
        else:
            wanted = tuple(output.name for output in request.outputs)
        priority = timeout_us = None
        if request.parameters:
            priority = _int_parameter(request, "priority")
            timeout_us = _int_parameter(request, "timeout")
        outputs = await self.scheduler.submit(
            version, inputs, wanted, priority=priority or 0, timeout_us=timeout_us
        )
        shaped = reshape_outputs(config, {name: outputs[name] for name in wanted})
        return InferResponse(
            model_name=version.model,
            model_version=version.version,
            id=request.id,
            outputs=shaped,
        )

    # ---- health and metadata -------------------------------------------------------

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def model_ready(self, name: str, version: int | None = None) -> bool:
        self._known(name, version)
        return self.manager.is_ready(name, version)

    def model_metadata(self, name: str, version: int | None = None) -> dict[str, Any]:
        mv = self._resolve(name, version)
        config = mv.config
        batch = [-1] if config.max_batch_size > 0 else []

        def describe(tensors: tuple[TensorConfig, ...]) -> list[dict[str, Any]]:
            return [
                {"name": t.name, "datatype": t.data_type.value, "shape": batch + list(t.dims)}
                for t in tensors
            ]

        return {
            "name": name,
            "versions": [
                str(v.version) for v in self.manager.versions(name) if v.state is State.READY
            ],
            "platform": config.platform or config.backend,
            "inputs": describe(config.inputs),
            "outputs": describe(config.outputs),
        }

    def model_config(self, name: str, version: int | None = None) -> dict[str, Any]:
        return self._resolve(name, version).config.as_dict()

    def repository_index(self) -> list[dict[str, Any]]:
        """Every model and version with its state (and reason), Triton's index shape."""
        rows: list[dict[str, Any]] = []
        for name in self.manager.model_names():
            versions = self.manager.versions(name)
            error = self.manager.model_error(name)
            if error and not versions:
                rows.append({"name": name, "state": "UNAVAILABLE", "reason": error})
            for mv in versions:
                row = {"name": name, "version": str(mv.version), "state": mv.state.value}
                if mv.reason or error:
                    row["reason"] = mv.reason or error
                rows.append(row)
        return rows

    def statistics(self, name: str | None = None, version: int | None = None) -> dict[str, Any]:
        """Triton's statistics extension: every loaded version, or those of one model/version."""
        if name is not None:
            self._known(name, version)
        names = [name] if name is not None else self.manager.model_names()
        rows = []
        for model in names:
            for mv in self.manager.versions(model):
                if version is not None and mv.version != version:
                    continue
                rows.append(self.scheduler.stats(mv).as_dict(model, mv.version))
        return {"model_stats": rows}

    async def load_model(self, name: str, config_text: str | None = None) -> None:
        """Load (or reload) a model from the repository; returns when it is served or failed."""
        if self.control is None:
            raise InvalidRequest(
                "loading models through the API needs --model-control-mode explicit"
            )
        if not MODEL_NAME.match(name):
            raise InvalidRequest(f"invalid model name '{name}'")
        await self.control.load(name, config_text)
        if not self.manager.is_ready(name):
            self.manager.route(name)  # raises the reason it is not ready

    async def unload_model(self, name: str) -> None:
        """Drain and unload every version of a model; returns when done. Idempotent."""
        if self.control is None:
            raise InvalidRequest(
                "unloading models through the API needs --model-control-mode explicit"
            )
        if not MODEL_NAME.match(name):
            raise InvalidRequest(f"invalid model name '{name}'")
        await self.control.unload(name)

    def _known(self, name: str, version: int | None) -> None:
        if name not in self.manager.model_names():
            raise ModelNotFound(name, version)
        if version is not None and version not in {v.version for v in self.manager.versions(name)}:
            raise ModelNotFound(name, version)

    def _resolve(self, name: str, version: int | None) -> ModelVersion:
        """The version whose config/metadata to show: the one named, else the one serving."""
        self._known(name, version)
        if version is not None:
            for mv in self.manager.versions(name):
                if mv.version == version:
                    return mv
        return self.manager.route(name, None)


def _int_parameter(request: InferRequest, name: str) -> int | None:
    """A request-level integer parameter (``priority``, ``timeout`` in microseconds)."""
    value = request.parameters.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(f"request parameter '{name}' must be an integer >= 0, found {value!r}")
    return value
