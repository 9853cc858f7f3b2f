"""The gRPC edge: KServe v2's GRPCInferenceService (Triton's flavour) over the same data plane.

The only package that imports grpcio, hpack and the protocol's generated modules (tritonclient's).
"""

from repoman.grpc.run import (
    DEFAULT_GRPC_PORT,
    OFF,
    GrpcEdge,
    GrpcOptions,
    log_listening,
    reserve_port,
)

__all__ = [
    "DEFAULT_GRPC_PORT",
    "OFF",
    "GrpcEdge",
    "GrpcOptions",
    "log_listening",
    "reserve_port",
]
