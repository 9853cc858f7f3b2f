"""The transport-agnostic data plane: inference, health, metadata and the repository index."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from repoman import __version__
from repoman.config.model import TensorConfig
from repoman.dataplane.redact import Redactor
from repoman.dataplane.refusals import refusal_reason
from repoman.dataplane.request_checks import ExpectedInputs, prepare, reshape_outputs
from repoman.dataplane.status import RepositoryReport, StatusBoard
from repoman.errors import (
    InvalidRequest,
    LoadFailed,
    ModelNotFound,
    OutOfMemoryBudget,
    RepomanError,
)
from repoman.inference import InferRequest, InferResponse
from repoman.manager import MemoryRefusal, ModelManager, ModelVersion
from repoman.names import check_model_name
from repoman.pipeline.dispatch import Dispatcher
from repoman.pipeline.graph import members

SERVER_NAME = "repoman"
EXTENSIONS = (
    "binary_tensor_data",
    "model_configuration",
    "model_repository",
    "statistics",
)


class RepositoryControl(Protocol):
    """How the service loads and unloads models on request (the composition root provides it)."""

    async def load(self, name: str, config_text: str | None) -> list[str]: ...

    async def unload(self, name: str) -> None: ...


class InferenceService:
    """What every protocol layer calls; it knows nothing of HTTP.

    It is not ready until the first repository pass has finished (whatever its outcome:
    a model that failed is reported, not waited for), then ready while serving. Given the
    ``repository`` root, every reason it returns names files relative to it, and ``redact``
    does the same for the messages of the errors it raises (the transport calls it once).
    """

    def __init__(
        self,
        manager: ModelManager,
        dispatcher: Dispatcher,
        control: RepositoryControl | None = None,
        repository: Path | None = None,
        report: RepositoryReport | None = None,
    ) -> None:
        self._manager = manager
        self._dispatcher = dispatcher
        self._control = control
        self._ready = False
        self.redact = Redactor(repository)
        self._board = StatusBoard(manager, dispatcher, self.redact, report)

    @property
    def ready(self) -> bool:
        return self._ready

    def set_ready(self, ready: bool) -> None:
        self._ready = ready

    # ---- inference -----------------------------------------------------------------

    async def infer(
        self,
        name: str,
        version: int | None,
        read: Callable[[ExpectedInputs], Awaitable[InferRequest]],
    ) -> tuple[InferRequest, InferResponse]:
        """Route ``name``/``version``, then ``read`` the request (the body), then run it.

        Routing comes first so that a request that could not be served (404/503) is
        answered before its body is read and decoded; ``read`` gets what the routed
        version's config accepts, to refuse what it rules out before decoding tensors.
        """
        check_model_name(name)
        routed = self._manager.route(name, version)
        expected = ExpectedInputs(routed.config)
        try:
            request = await read(expected)
        except RepomanError as exc:
            self._dispatcher.stats(routed).record_failure(refusal_reason(exc))
            raise
        if not routed.serves:
            # NOTE: swapped out while the body arrived: the version now serving takes it.
            routed = self._manager.route(name, version)
        return request, await self._run(routed, request, expected)

    async def _run(
        self, version: ModelVersion, request: InferRequest, expected: ExpectedInputs
    ) -> InferResponse:
        config = version.config
        try:
            prepared = prepare(config, request, expected)
        except RepomanError as exc:
            self._dispatcher.stats(version).record_failure(refusal_reason(exc))
            raise
        outputs = await self._dispatcher.submit(
            version,
            prepared.inputs,
            prepared.wanted,
            priority=prepared.priority,
            timeout_us=prepared.timeout_us,
            request_id=request.id or "",
            parameters=request.parameters,
        )
        shaped = reshape_outputs(
            config, {name: outputs[name] for name in prepared.wanted}, copy=False
        )
        return InferResponse(
            model_name=version.model,
            model_version=version.version,
            id=request.id,
            outputs=shaped,
        )

    def refused(self, name: str, version: int | None, reason: str) -> None:
        """Count a request for ``name``/``version`` the edge refused before routing it (no
        credentials, a body over the limit): on the version it names, else the one serving.
        A request for a model or version that is not held is not counted on any version."""
        found = self._counted_version(name, version)
        if found is not None:
            self._dispatcher.stats(found).record_failure(reason)

    def encoded(self, name: str, version: int, seconds: float) -> None:
        """Record the time the edge took to encode a response of ``name``/``version``."""
        found = self._counted_version(name, version)
        if found is not None:
            self._dispatcher.stats(found).encode_seconds.observe(seconds)

    def encoded_many(self, name: str, version: int, counts: list[int], total: float) -> None:
        """Record encode times observed elsewhere (a front-end's, bucketed on
        ``stats.SECONDS_BUCKETS``): per-bucket counts and their sum in seconds."""
        found = self._counted_version(name, version)
        if found is not None:
            self._dispatcher.stats(found).encode_seconds.merge(counts, total)

    def _counted_version(self, name: str, version: int | None) -> ModelVersion | None:
        try:
            return self._manager.route(name, version)  # NOTE: the common case, one lookup
        except RepomanError:
            if version is None:
                return None
        return next((v for v in self._manager.versions(name) if v.version == version), None)

    # ---- health and metadata -------------------------------------------------------

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    async def model_ready(self, name: str, version: int | None = None) -> bool:
        self._known(name, version)
        return self._manager.is_ready(name, version)

    async def model_metadata(self, name: str, version: int | None = None) -> dict[str, Any]:
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
            "versions": [str(v.version) for v in self._manager.versions(name) if v.serves],
            "platform": config.platform or config.backend,
            "inputs": describe(config.inputs),
            "outputs": describe(config.outputs),
        }

    async def model_config(self, name: str, version: int | None = None) -> dict[str, Any]:
        return self._resolve(name, version).config.as_dict()

    async def repository_index(self) -> list[dict[str, Any]]:
        """Every model and version with its state (and reason), Triton's index shape."""
        rows: list[dict[str, Any]] = []
        for name in self._manager.model_names():
            versions = self._manager.versions(name)
            error = self._manager.model_error(name)
            if error and not versions:
                rows.append({"name": name, "state": "UNAVAILABLE", "reason": self.redact(error)})
            for mv in versions:
                state, reason = self._manager.serving_state(mv)
                row: dict[str, Any] = {
                    "name": name,
                    "version": str(mv.version),
                    "state": state.value,
                }
                if reason or error:
                    row["reason"] = self.redact(reason or error)
                if not mv.config.is_ensemble:
                    # NOTE: repoman's own fields: what it holds (READY) or will (AVAILABLE).
                    row["memory_bytes"] = mv.memory_bytes
                    row["memory"] = "measured" if mv.memory_measured else "predicted"
                rows.append(row)
        return rows

    async def statistics(
        self, name: str | None = None, version: int | None = None
    ) -> dict[str, Any]:
        """Triton's statistics extension: every loaded version, or those of one model/version."""
        if name is not None:
            self._known(name, version)
        names = [name] if name is not None else self._manager.model_names()
        rows = []
        for model in names:
            for mv in self._manager.versions(model):
                if version is not None and mv.version != version:
                    continue
                rows.append(self._dispatcher.stats(mv).as_dict(model, mv.version))
        return {"model_stats": rows}

    async def status(self, repository: bool = False) -> dict[str, Any]:
        """The status page's document (see dataplane/status.py); ``repository``: with what
        the watcher saw, for a caller the repository API would answer."""
        document = self._board.document(ready=self._ready, repository=repository)
        document["control"] = self._control is not None
        return document

    async def load_model(self, name: str, config_text: str | None = None) -> None:
        """Load (or reload) a model from the repository; returns when it is served or failed."""
        check_model_name(name)
        if self._control is None:
            raise InvalidRequest(
                "loading models through the API needs --model-control-mode explicit"
            )
        # NOTE: shielded: a client that hangs up must not cancel a load half-way through.
        failures = await asyncio.shield(self._control.load(name, config_text))
        if failures:
            if any(isinstance(failure, MemoryRefusal) for failure in failures):
                raise OutOfMemoryBudget(name, failures)  # NOTE: 507, with the reason
            # NOTE: Triton's answer to a load that failed, even where an older version keeps
            # serving: 400 with the reason.
            raise LoadFailed(name, failures)
        if not self._manager.is_ready(name):
            try:
                self._manager.route(name)
            except RepomanError as exc:
                if self._is_ensemble(name):  # NOTE: its members do not fit: the load failed
                    raise LoadFailed(name, [str(exc)]) from None
                raise

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None:
        """Drain and unload every version of a model; returns when done. Idempotent.

        ``unload_dependents`` (Triton's parameter): for an ensemble, then unload each member
        no other loaded ensemble uses (and, for a member that is an ensemble, its own).
        """
        check_model_name(name)
        if self._control is None:
            raise InvalidRequest(
                "unloading models through the API needs --model-control-mode explicit"
            )
        await asyncio.shield(self._unload(name, unload_dependents))

    async def _unload(self, name: str, dependents: bool) -> None:
        assert self._control is not None
        members_before = self._members_of(name)
        await self._control.unload(name)
        if not dependents:
            return
        used = {m for other in self._manager.model_names() for m in self._members_of(other)}
        unused = [m for m in members_before if m not in used and m != name]
        await asyncio.gather(*(self._unload(member, True) for member in unused))

    def _members_of(self, name: str) -> list[str]:
        """The members every held version of ``name`` names (none for a plain model)."""
        found: dict[str, None] = {}
        for mv in self._manager.versions(name):
            found.update(dict.fromkeys(members(mv.config)))
        return list(found)

    def _is_ensemble(self, name: str) -> bool:
        return any(mv.config.is_ensemble for mv in self._manager.versions(name))

    def _known(self, name: str, version: int | None) -> None:
        check_model_name(name)
        if name not in self._manager.model_names():
            raise ModelNotFound(name, version)
        if version is not None and version not in {v.version for v in self._manager.versions(name)}:
            raise ModelNotFound(name, version)

    def _resolve(self, name: str, version: int | None) -> ModelVersion:
        """The version whose config/metadata to show: the one named, else the one serving."""
        self._known(name, version)
        if version is not None:
            for mv in self._manager.versions(name):
                if mv.version == version:
                    return mv
        return self._manager.route(name, None)
