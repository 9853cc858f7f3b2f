"""EXPERIMENT (issue #17, reverted): grpclib (pure-Python HTTP/2 on asyncio) serving the servicer.

Incomplete on purpose: no receive-size limit (grpclib has none) and no grace when stopping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from tritonclient.grpc import service_pb2 as pb

from repoman.grpc.service import Aborted, InferenceServicer

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]


class GrpclibService:
    def __init__(self, servicer: InferenceServicer) -> None:
        self._servicer = servicer

    def __mapping__(self) -> dict[str, Handler]:
        found = {}
        for method in SERVICE.methods:
            streaming = method.client_streaming or method.server_streaming
            found[f"/{SERVICE.full_name}/{method.name}"] = Handler(
                self._handler(method.name, streaming),
                Cardinality.STREAM_STREAM if streaming else Cardinality.UNARY_UNARY,
                getattr(pb, method.input_type.name),
                getattr(pb, method.output_type.name),
            )
        return found

    def _handler(self, name: str, streaming: bool) -> Callable[[Any], Any]:
        method = getattr(self._servicer, name)

        async def handle(stream: Any) -> None:
            request = None if streaming else await stream.recv_message()
            try:
                response = await method(request, list(stream.metadata.items()))
            except Aborted as exc:
                raise GRPCError(Status(exc.code.value[0]), exc.details) from None
            await stream.send_message(response)

        return handle
