"""Thin KServe v2 gRPC handlers (Triton's GRPCInferenceService): call the data plane, answer.

Every RPC runs through one wrapper that asks the access policy (the ``authorization``
metadata, as HTTP's header) and turns errors into gRPC statuses (status.py), with the
messages the HTTP edge sends. The server (server.py) finds each RPC by its name.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2
from tritonclient.grpc import service_pb2 as pb

from repoman.dataplane.api import DataPlane
from repoman.dataplane.request_checks import ExpectedInputs
from repoman.errors import RepomanError
from repoman.grpc.codec import decode_infer_request, encode_infer_response, parameter_values
from repoman.grpc.server import Abort, Context
from repoman.grpc.status import BY_HTTP_STATUS, status_of
from repoman.inference import InferRequest
from repoman.names import parse_version
from repoman.server.auth import AccessPolicy, Scope
from repoman.server.handlers import load_config_text, unload_dependents

log = logging.getLogger(__name__)

Request = TypeVar("Request")
Response = TypeVar("Response")
Method = Callable[[Any, Request, Context], Awaitable[Response]]

STREAMING = (
    "ModelStreamInfer (streaming inference for decoupled models) is not supported by repoman; "
    "call ModelInfer once per request"
)
SHARED_MEMORY = (
    "shared memory is not supported by repoman; send tensors in the request (raw_input_contents)"
)

INDEX_FIELDS = ("name", "version", "state", "reason")
"""The index fields Triton's protocol has (the HTTP rows carry repoman's memory figures too)."""


def _version(text: str) -> int | None:
    """A request's ``version`` field: empty means the version the policy serves."""
    return parse_version(text) if text else None


def _authorization(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else ""
    return ""


def rpc(
    scope: Scope, *, inference: bool = False
) -> Callable[[Method[Request, Response]], Method[Request, Response]]:
    """Guard an RPC by the access policy for ``scope``; answer errors with their status.
    ``inference``: a refusal is counted on the model the request names."""

    def wrap(method: Method[Request, Response]) -> Method[Request, Response]:
        @functools.wraps(method)
        async def handler(self: InferenceServicer, request: Request, context: Context) -> Response:
            policy = self.policy
            if policy.restricts:
                denied = policy.check(scope, _authorization(context))
                if denied is not None:
                    if inference:
                        _count_refusal(self.plane, request, "unauthorized")
                    await context.abort(BY_HTTP_STATUS[denied.status], denied.message)
            try:
                return await method(self, request, context)
            except RepomanError as exc:
                await context.abort(status_of(exc), self.plane.redact(exc.message))
            except Abort:
                raise
            except Exception as exc:
                log.exception("unexpected error serving gRPC %s", method.__name__)
                # NOTE: the exception's text stays in the log: it may name files or internals.
                await context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"internal error ({type(exc).__name__}); see the server log",
                )
            raise AssertionError("context.abort returned")  # pragma: no cover

        return handler

    return wrap


def _count_refusal(plane: DataPlane, request: Any, reason: str) -> None:
    try:
        version = _version(request.model_version)
    except RepomanError:
        return  # NOTE: no version to count it on
    plane.refused(request.model_name, version, reason)


async def _unimplemented(context: Context, message: str) -> Any:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)


class InferenceServicer:
    """``inference.GRPCInferenceService`` over a DataPlane (in-process or a front-end's)."""

    def __init__(self, plane: DataPlane, policy: AccessPolicy) -> None:
        self.plane = plane
        self.policy = policy

    # ---- health and metadata -------------------------------------------------------------

    @rpc(Scope.HEALTH)
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    @rpc(Scope.HEALTH)
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.plane.ready)

    @rpc(Scope.DATA)
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> Any:
        ready = await self.plane.model_ready(request.name, _version(request.version))
        return pb.ModelReadyResponse(ready=ready)

    @rpc(Scope.DATA)
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> Any:
        return pb.ServerMetadataResponse(**self.plane.server_metadata())

    @rpc(Scope.DATA)
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> Any:
        found = await self.plane.model_metadata(request.name, _version(request.version))
        return json_format.ParseDict(found, pb.ModelMetadataResponse())

    @rpc(Scope.DATA)
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> Any:
        found = await self.plane.model_config(request.name, _version(request.version))
        config = json_format.ParseDict(found, model_config_pb2.ModelConfig())
        return pb.ModelConfigResponse(config=config)

    @rpc(Scope.DATA)
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> Any:
        if request.name:
            found = await self.plane.statistics(request.name, _version(request.version))
        else:
            found = await self.plane.statistics()
        return json_format.ParseDict(found, pb.ModelStatisticsResponse())

    # ---- inference -----------------------------------------------------------------------

    @rpc(Scope.DATA, inference=True)
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> Any:
        name = request.model_name
        version = _version(request.model_version)

        async def read(expected: ExpectedInputs) -> InferRequest:
            return decode_infer_request(
                request, model_name=name, model_version=version, expected=expected
            )

        infer_request, response = await self.plane.infer(name, version, read)
        started = time.perf_counter()
        encoded = encode_infer_response(response, infer_request)
        self.plane.encoded(name, response.model_version, time.perf_counter() - started)
        return encoded

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> Any:
        await _unimplemented(context, STREAMING)

    # ---- the repository extension ---------------------------------------------------------

    @rpc(Scope.REPOSITORY)
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> Any:
        rows = await self.plane.repository_index()
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    **{key: row[key] for key in INDEX_FIELDS if key in row}
                )
                for row in rows
            ]
        )

    @rpc(Scope.REPOSITORY)
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> Any:
        config_text = load_config_text(parameter_values(request.parameters))
        await self.plane.load_model(request.model_name, config_text)
        return pb.RepositoryModelLoadResponse()

    @rpc(Scope.REPOSITORY)
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> Any:
        parameters = parameter_values(request.parameters)
        await self.plane.unload_model(request.model_name, unload_dependents(parameters))
        return pb.RepositoryModelUnloadResponse()

    # ---- Triton's other extensions: not served --------------------------------------------

    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        await _unimplemented(context, SHARED_MEMORY)

    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        await _unimplemented(context, SHARED_MEMORY)

    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        await _unimplemented(context, SHARED_MEMORY)

    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        await _unimplemented(context, SHARED_MEMORY)

    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        await _unimplemented(context, SHARED_MEMORY)

    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        await _unimplemented(context, SHARED_MEMORY)

    async def TraceSetting(self, request: Any, context: Any) -> Any:
        await _unimplemented(
            context, "trace settings are not supported by repoman (it keeps no request traces)"
        )

    async def LogSettings(self, request: Any, context: Any) -> Any:
        await _unimplemented(
            context,
            "log settings cannot be changed at run time; start repoman with --log-level "
            "and --log-format",
        )
