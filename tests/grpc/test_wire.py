"""repoman's own HTTP/2 gRPC wire and server against real clients over loopback: grpcio
channels, tritonclient, and a raw HTTP/2 client on a socket (hpack) for what a well-behaved
client never sends."""

from __future__ import annotations

import asyncio
import gzip
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator

import grpc
import hpack
import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from repoman.grpc import wire
from repoman.grpc.server import GrpcServer, listening_socket

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
PREFIX = "/inference.GRPCInferenceService/"
INFER = PREFIX + "ModelInfer"
LIVE = PREFIX + "ServerLive"
BIG = 64 << 20
SMALL = 100_000
WAIT = 10.0
"""The bound on every wait in these tests (seconds)."""
ABORT_MESSAGE = "café: 100% sure\nsecond line"

Code = grpc.StatusCode


# ---- the servicer ----------------------------------------------------------------------


class Servicer:
    """Echoes tensors; "slow" sleeps (records its cancellation), "wait" sleeps 0.5 s,
    "refuse" aborts, "auth" answers the authorization metadata in ``id``. No ServerReady."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self._metadata: dict[str, list[tuple[str, str]]] = {}

    def event(self, name: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(name, threading.Event())

    def metadata(self, request_id: str) -> list[tuple[str, str]]:
        with self._lock:
            return self._metadata[request_id]

    async def ModelInfer(self, request, context):
        metadata = context.invocation_metadata()
        with self._lock:
            self._metadata[request.id] = list(metadata)
        if request.model_name == "slow":
            self.event("started:" + request.id).set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.event("cancelled:" + request.id).set()
                raise
        elif request.model_name == "wait":
            self.event("started:" + request.id).set()
            await asyncio.sleep(0.5)
        elif request.model_name == "refuse":
            await context.abort(Code.INVALID_ARGUMENT, ABORT_MESSAGE)
        elif request.model_name == "auth":
            found = [value for key, value in metadata if key == "authorization"]
            return pb.ModelInferResponse(model_name="auth", id=",".join(found))
        response = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
        for tensor in request.inputs:
            out = response.outputs.add(name=tensor.name, datatype=tensor.datatype)
            out.shape.extend(tensor.shape)
        response.raw_output_contents.extend(request.raw_input_contents)
        return response

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ModelStreamInfer(self, request, context):
        assert request is None
        await context.abort(Code.UNIMPLEMENTED, "no streams here")


# ---- a server on its own loop, in a thread -----------------------------------------------


class Running:
    def __init__(self, limit: int) -> None:
        self.servicer = Servicer()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = GrpcServer(self.servicer, SERVICE, limit)
        sock = listening_socket("127.0.0.1", 0, shared=False)
        self.port = sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.call(self.server.start(sock))

    def call(self, coro, timeout: float = WAIT):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self, grace: float = 1.0) -> None:
        try:
            self.call(self.server.stop(grace))
        finally:
            self.call(_cancel_the_rest())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(WAIT)
            assert not self.thread.is_alive()
            self.loop.close()


async def _cancel_the_rest() -> None:
    await asyncio.sleep(0.05)  # NOTE: lets closed connections see connection_lost
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture(scope="module")
def served() -> Iterator[Running]:
    running = Running(BIG)
    yield running
    running.close()


@pytest.fixture(scope="module")
def small() -> Iterator[Running]:
    running = Running(SMALL)
    yield running
    running.close()


def options(size: int = BIG) -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size)]


@pytest.fixture
def channel(served: Running) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served.address, options=options()) as chan:
        yield chan


@pytest.fixture
def triton(served: Running) -> Iterator[tc.InferenceServerClient]:
    client = tc.InferenceServerClient(served.address)
    yield client
    client.close()


def infer_stub(chan: grpc.Channel, path: str = INFER):
    return chan.unary_unary(
        path,
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )


def request(model: str, request_id: str, data: bytes = b"", name: str = "X"):
    message = pb.ModelInferRequest(model_name=model, id=request_id)
    tensor = message.inputs.add(name=name, datatype="UINT8")
    tensor.shape.append(len(data))
    message.raw_input_contents.append(data)
    return message


def check_echo(response, request_id: str, data: bytes, name: str = "X") -> None:
    assert response.id == request_id
    assert len(response.outputs) == 1
    assert response.outputs[0].name == name
    assert response.outputs[0].datatype == "UINT8"
    assert list(response.outputs[0].shape) == [len(data)]
    assert len(response.raw_output_contents) == 1
    assert response.raw_output_contents[0] == data


def triton_input(name: str, array: np.ndarray) -> tc.InferInput:
    tensor = tc.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT32")
    tensor.set_data_from_numpy(array)
    return tensor


# ---- 1. large tensors both ways ----------------------------------------------------------


def test_a_40_mib_tensor_round_trips_exactly(channel):
    data = np.random.default_rng(1).bytes(40 << 20)
    response = infer_stub(channel)(request("echo", "big", data), timeout=WAIT)
    check_echo(response, "big", data)


def test_a_large_fp32_tensor_round_trips_through_tritonclient(triton):
    array = np.random.default_rng(2).standard_normal((3, 1 << 20)).astype(np.float32)
    result = triton.infer("echo", [triton_input("IN", array)], request_id="fp32", client_timeout=WAIT)
    out = result.as_numpy("IN")
    assert out.dtype == np.float32
    assert out.shape == (3, 1 << 20)
    assert out.tobytes() == array.tobytes()
    assert result.get_response().id == "fp32"


# ---- 2. many concurrent calls on one channel ---------------------------------------------


def test_500_concurrent_calls_on_one_channel_each_get_their_own_answer(channel):
    stub = infer_stub(channel)
    futures = [
        stub.future(request("echo", f"call-{i}", f"data-{i}".encode() * (1 + i % 7)), timeout=WAIT)
        for i in range(500)
    ]
    for i, future in enumerate(futures):
        check_echo(future.result(timeout=WAIT), f"call-{i}", f"data-{i}".encode() * (1 + i % 7))


def test_concurrent_calls_from_the_asyncio_client(served):
    async def main():
        async with grpc.aio.insecure_channel(served.address, options=options()) as chan:
            stub = infer_stub(chan)
            answers = await asyncio.gather(
                *(stub(request("echo", f"aio-{i}", bytes([i % 256]) * 1000), timeout=WAIT)
                  for i in range(200))
            )
        for i, response in enumerate(answers):
            check_echo(response, f"aio-{i}", bytes([i % 256]) * 1000)

    asyncio.run(asyncio.wait_for(main(), WAIT))


# ---- 3. compressed requests --------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_are_read(served, triton, algorithm):
    array = (np.arange(300_000, dtype=np.int32) % 7).reshape(3, 100_000)
    request_id = f"compressed-{algorithm}"
    result = triton.infer(
        "echo",
        [triton_input("IN", array)],
        request_id=request_id,
        client_timeout=WAIT,
        compression_algorithm=algorithm,
    )
    assert np.array_equal(result.as_numpy("IN"), array)
    assert result.get_response().id == request_id
    assert ("grpc-encoding", algorithm) in served.servicer.metadata(request_id)


# ---- 4. the message size limit -----------------------------------------------------------


def test_a_message_over_the_limit_is_resource_exhausted_and_the_channel_goes_on(small):
    with grpc.insecure_channel(small.address, options=options()) as chan:
        stub = infer_stub(chan)
        with pytest.raises(grpc.RpcError) as caught:
            stub(request("echo", "too-big", b"\x01" * 200_000), timeout=WAIT)
        assert caught.value.code() is Code.RESOURCE_EXHAUSTED
        assert "larger than max" in caught.value.details()
        assert f"vs. {SMALL}" in caught.value.details()
        check_echo(stub(request("echo", "after", b"fine"), timeout=WAIT), "after", b"fine")
        # just under the limit is taken
        data = b"\x02" * (SMALL - 100)
        check_echo(stub(request("echo", "under", data), timeout=WAIT), "under", data)


def test_a_compressed_message_inflating_over_the_limit_is_resource_exhausted(small):
    with grpc.insecure_channel(small.address, options=options()) as chan:
        stub = infer_stub(chan)
        with pytest.raises(grpc.RpcError) as caught:
            stub(
                request("echo", "bomb", bytes(1_000_000)),
                timeout=WAIT,
                compression=grpc.Compression.Gzip,
            )
        assert caught.value.code() is Code.RESOURCE_EXHAUSTED
        assert "larger than max" in caught.value.details()
        data = bytes(50_000)
        response = stub(
            request("echo", "small-gzip", data), timeout=WAIT, compression=grpc.Compression.Gzip
        )
        check_echo(response, "small-gzip", data)


# ---- 5, 6. deadlines and cancellation ----------------------------------------------------


def test_a_client_deadline_is_deadline_exceeded_and_cancels_the_handler(served, channel):
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        infer_stub(channel)(request("slow", "deadline"), timeout=0.3)
    assert caught.value.code() is Code.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3
    assert served.servicer.event("cancelled:deadline").wait(WAIT)


def test_a_tritonclient_timeout_is_deadline_exceeded(served, triton):
    with pytest.raises(InferenceServerException) as caught:
        triton.infer(
            "slow", [triton_input("IN", np.zeros(4, np.float32))],
            request_id="triton-deadline", client_timeout=0.3,
        )
    assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert served.servicer.event("cancelled:triton-deadline").wait(WAIT)


def test_a_client_cancel_cancels_the_handler(served, channel):
    future = infer_stub(channel).future(request("slow", "cancel"), timeout=WAIT)
    assert served.servicer.event("started:cancel").wait(WAIT)
    assert not served.servicer.event("cancelled:cancel").is_set()
    assert future.cancel()
    assert served.servicer.event("cancelled:cancel").wait(WAIT)
    # the connection serves on
    check_echo(infer_stub(channel)(request("echo", "on", b"x"), timeout=WAIT), "on", b"x")


# ---- 7. unknown methods ------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    PREFIX + "NoSuchMethod",
    "/other.Service/ModelInfer",
    PREFIX + "ServerReady",  # in the service, not on the servicer
])
def test_unknown_methods_are_unimplemented(channel, path):
    stub = channel.unary_unary(
        path,
        request_serializer=pb.ServerReadyRequest.SerializeToString,
        response_deserializer=pb.ServerReadyResponse.FromString,
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub(pb.ServerReadyRequest(), timeout=WAIT)
    assert caught.value.code() is Code.UNIMPLEMENTED
    assert caught.value.details() == f"Method not found: {path}"


def test_tritonclient_sees_unimplemented_and_live(triton):
    assert triton.is_server_live(client_timeout=WAIT) is True
    with pytest.raises(InferenceServerException) as caught:
        triton.is_server_ready(client_timeout=WAIT)
    assert caught.value.status() == "StatusCode.UNIMPLEMENTED"


def test_a_streaming_method_may_refuse(channel):
    stub = channel.stream_stream(
        PREFIX + "ModelStreamInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelStreamInferResponse.FromString,
    )
    with pytest.raises(grpc.RpcError) as caught:
        list(stub(iter([request("echo", "stream")]), timeout=WAIT))
    assert caught.value.code() is Code.UNIMPLEMENTED
    assert caught.value.details() == "no streams here"


# ---- 8, 9. abort and metadata ------------------------------------------------------------


def test_abort_message_arrives_intact(channel):
    with pytest.raises(grpc.RpcError) as caught:
        infer_stub(channel)(request("refuse", "refuse"), timeout=WAIT)
    assert caught.value.code() is Code.INVALID_ARGUMENT
    assert caught.value.details() == ABORT_MESSAGE


def test_abort_through_tritonclient(triton):
    with pytest.raises(InferenceServerException) as caught:
        triton.infer("refuse", [triton_input("IN", np.zeros(2, np.float32))], client_timeout=WAIT)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert caught.value.message() == ABORT_MESSAGE


def test_authorization_metadata_reaches_the_handler(served, triton, channel):
    result = triton.infer(
        "auth", [triton_input("IN", np.zeros(2, np.float32))],
        client_timeout=WAIT, headers={"authorization": "Bearer s3cret"},
    )
    assert result.get_response().id == "Bearer s3cret"
    response = infer_stub(channel)(
        request("auth", "a"), timeout=WAIT,
        metadata=[("authorization", "Basic abc"), ("x-other", "1")],
    )
    assert response.id == "Basic abc"
    response = infer_stub(channel)(request("echo", "meta"), timeout=WAIT,
                                   metadata=[("x-custom", "v1")])
    metadata = served.servicer.metadata("meta")
    assert ("x-custom", "v1") in metadata
    assert all(not key.startswith(":") for key, _ in metadata)


# ---- a raw HTTP/2 client -----------------------------------------------------------------


class Raw:
    """A bare HTTP/2 client on a socket: frames out as given, frames in as they come."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.buffer = b""
        self.decoder = hpack.Decoder()
        self.deadline = time.monotonic() + WAIT

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def greet(self) -> None:
        self.send(wire.PREFACE + wire.frame(wire.SETTINGS, 0, 0))

    def frame(self) -> tuple[int, int, int, bytes] | None:
        """The next frame (kind, flags, stream, payload); None at end of stream."""
        while True:
            if len(self.buffer) >= 9:
                high, low, kind, flags, stream = struct.unpack_from(">BHBBI", self.buffer)
                length = (high << 16) | low
                if len(self.buffer) >= 9 + length:
                    payload = self.buffer[9 : 9 + length]
                    self.buffer = self.buffer[9 + length :]
                    return kind, flags, stream & 0x7FFFFFFF, payload
            assert time.monotonic() < self.deadline, "no frame in time"
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                assert not self.buffer, f"a partial frame before the end: {self.buffer!r}"
                return None
            self.buffer += chunk

    def frames_to_end(self) -> list[tuple[int, int, int, bytes]]:
        frames = []
        for _ in range(1000):
            got = self.frame()
            if got is None:
                return frames
            frames.append(got)
        raise AssertionError("the connection did not end")

    def call(self, stream_id: int, block: bytes, message: bytes) -> None:
        body = struct.pack(">BI", 0, len(message)) + message
        self.send(
            wire.frame(wire.HEADERS, wire.END_HEADERS, stream_id, block)
            + wire.frame(wire.DATA, wire.END_STREAM, stream_id, body)
        )

    def answer(self, stream_id: int) -> tuple[list[tuple[str, str]], bytes, dict[str, str]]:
        """The stream's response headers, body and trailers (a trailers-only answer: empty
        headers and body)."""
        blocks: list[list[tuple[str, str]]] = []
        body = b""
        for _ in range(10_000):
            got = self.frame()
            assert got is not None, "the connection ended before the answer"
            kind, flags, stream, payload = got
            if kind == wire.HEADERS:
                fields = self.decoder.decode(payload)
                if stream != stream_id:
                    continue
                blocks.append(fields)
                if flags & wire.END_STREAM:
                    headers = blocks[0] if len(blocks) == 2 else []
                    return headers, body, dict(blocks[-1])
            elif kind == wire.DATA and stream == stream_id:
                body += payload
            elif kind == wire.RST_STREAM and stream == stream_id:
                raise AssertionError(f"stream {stream_id} reset: {payload.hex()}")
            elif kind == wire.GOAWAY:
                raise AssertionError(f"GOAWAY: {payload!r}")
        raise AssertionError("no answer")


@pytest.fixture
def raw(served: Running) -> Iterator[Raw]:
    client = Raw(served.port)
    yield client
    client.close()


def message_of(body: bytes) -> bytes:
    compressed, size = struct.unpack_from(">BI", body)
    assert compressed == 0
    assert len(body) == 5 + size
    return body[5:]


def base_headers(path: str) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "127.0.0.1"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


# ---- 10, 11. protocol errors -------------------------------------------------------------


def test_http1_gets_the_connection_closed_and_the_server_goes_on(served, triton):
    client = Raw(served.port)
    try:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        frames = client.frames_to_end()
    finally:
        client.close()
    goaways = [payload for kind, _, _, payload in frames if kind == wire.GOAWAY]
    assert len(goaways) == 1
    assert struct.unpack_from(">II", goaways[0]) == (0, wire.PROTOCOL_ERROR)
    assert triton.is_server_live(client_timeout=WAIT) is True


def test_data_on_stream_0_is_a_protocol_error(raw):
    raw.greet()
    raw.send(wire.frame(wire.DATA, 0, 0, b"hello"))
    frames = raw.frames_to_end()
    assert frames[-1][0] == wire.GOAWAY
    assert frames[-1][2] == 0
    last, code = struct.unpack_from(">II", frames[-1][3])
    assert (last, code) == (0, wire.PROTOCOL_ERROR)


def test_a_ping_is_answered_with_its_bytes(raw):
    raw.greet()
    raw.send(wire.frame(wire.PING, 0, 0, b"12345678"))
    kinds = []
    for _ in range(20):
        got = raw.frame()
        assert got is not None
        kind, flags, stream, payload = got
        kinds.append(kind)
        if kind == wire.PING:
            assert (flags, stream, payload) == (wire.ACK, 0, b"12345678")
            break
    else:
        raise AssertionError(f"no PING answer among {kinds}")
    assert wire.SETTINGS in kinds


def test_the_server_settings_and_window(raw):
    raw.greet()
    kind, flags, stream, payload = raw.frame()
    assert (kind, flags, stream) == (wire.SETTINGS, 0, 0)
    settings = dict(struct.iter_unpack(">HI", payload))
    assert settings[wire.INITIAL_WINDOW_SIZE] == wire.STREAM_WINDOW
    assert settings[wire.MAX_FRAME_SIZE] == wire.FRAME_SIZE
    assert settings[wire.ENABLE_PUSH] == 0
    kind, flags, stream, payload = raw.frame()
    assert (kind, stream) == (wire.WINDOW_UPDATE, 0)
    assert int.from_bytes(payload, "big") == wire.CONNECTION_WINDOW - wire.DEFAULT_WINDOW


def test_a_server_side_grpc_timeout_is_deadline_exceeded(served, raw):
    raw.greet()
    block = hpack.Encoder().encode([*base_headers(INFER), ("grpc-timeout", "200m")])
    started = time.monotonic()
    raw.call(1, block, request("slow", "raw-deadline").SerializeToString())
    headers, body, trailers = raw.answer(1)
    assert time.monotonic() - started < 3
    assert (headers, body) == ([], b"")
    assert trailers["grpc-status"] == str(Code.DEADLINE_EXCEEDED.value[0])
    assert served.servicer.event("cancelled:raw-deadline").wait(WAIT)


@pytest.mark.parametrize("timeout", ["soon", "5", "²S", "123456789S"])
def test_a_malformed_grpc_timeout_is_answered_internal(raw, timeout):
    raw.greet()
    block = hpack.Encoder().encode([*base_headers(INFER), ("grpc-timeout", timeout)])
    raw.call(1, block, request("echo", "bad-timeout").SerializeToString())
    headers, body, trailers = raw.answer(1)
    assert (headers, body) == ([], b"")
    assert trailers["grpc-status"] == str(Code.INTERNAL.value[0])
    assert "malformed grpc-timeout" in trailers["grpc-message"]
    # the connection goes on
    block = hpack.Encoder().encode(base_headers(LIVE))
    raw.call(3, block, b"")
    assert trailers_ok(raw.answer(3)) == b"\x08\x01"


def trailers_ok(answer: tuple[list[tuple[str, str]], bytes, dict[str, str]]) -> bytes:
    headers, body, trailers = answer
    assert (":status", "200") in headers
    assert ("content-type", "application/grpc") in headers
    assert trailers == {"grpc-status": "0"}
    return message_of(body)


# ---- 12. the header-block cache ----------------------------------------------------------


def check_call(raw: Raw, mirror: hpack.Decoder, stream_id: int, block: bytes) -> str:
    """Send a call of ``block``; check its answer is for what ``block`` means now (as a
    decoder in step with the server's decodes it). Returns what identifies the answer."""
    fields = mirror.decode(block)
    path = dict(fields)[":path"]
    auth = ",".join(value for key, value in fields if key == "authorization")
    raw.call(stream_id, block, request("auth", f"s{stream_id}").SerializeToString())
    answer = raw.answer(stream_id)
    if path == LIVE:
        assert pb.ServerLiveResponse.FromString(trailers_ok(answer)).live is True
        return "live"
    assert path == INFER
    response = pb.ModelInferResponse.FromString(trailers_ok(answer))
    assert response.id == auth
    return "auth:" + auth


def test_identical_header_blocks_are_answered_for_their_own_headers(raw):
    raw.greet()
    encoder, mirror = hpack.Encoder(), hpack.Decoder()
    one = [*base_headers(INFER), ("authorization", "Bearer one")]
    first = encoder.encode(one)
    second = encoder.encode(one)
    assert second != first  # the first indexed its fields
    assert encoder.encode(one) == second  # all indexed: the same bytes each time
    assert check_call(raw, mirror, 1, first) == "auth:Bearer one"
    assert check_call(raw, mirror, 3, second) == "auth:Bearer one"
    assert check_call(raw, mirror, 5, second) == "auth:Bearer one"
    assert check_call(raw, mirror, 7, encoder.encode(base_headers(LIVE))) == "live"
    two = encoder.encode([*base_headers(INFER), ("authorization", "Bearer two")])
    assert check_call(raw, mirror, 9, two) == "auth:Bearer two"
    again = encoder.encode(one)
    assert again != second  # the table moved: other indices
    assert check_call(raw, mirror, 11, again) == "auth:Bearer one"
    assert check_call(raw, mirror, 13, again) == "auth:Bearer one"
    assert check_call(raw, mirror, 15, encoder.encode(base_headers(LIVE))) == "live"
    two_again = encoder.encode([*base_headers(INFER), ("authorization", "Bearer two")])
    assert check_call(raw, mirror, 17, two_again) == "auth:Bearer two"
    assert check_call(raw, mirror, 19, two_again) == "auth:Bearer two"
    # the first block's bytes once more: whatever they mean now, they are answered for that
    check_call(raw, mirror, 21, second)


def _hpack_string(text: bytes) -> bytes:
    assert len(text) < 127
    return bytes([len(text)]) + text


def incremental(name: str, value: str) -> bytes:
    """A literal with incremental indexing, new name (RFC 7541 6.2.1)."""
    return b"\x40" + _hpack_string(name.encode()) + _hpack_string(value.encode())


def indexed(index: int) -> bytes:
    assert index < 127
    return bytes([0x80 | index])


def size_update(size: int) -> bytes:
    """A dynamic table size update (RFC 7541 6.3): a 5-bit prefix integer."""
    if size < 31:
        return bytes([0x20 | size])
    out, size = [0x20 | 31], size - 31
    while size >= 128:
        out.append((size & 0x7F) | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out)


def test_a_block_is_not_reused_after_an_eviction_that_keeps_the_newest_entry(raw):
    """A full table, then a literal repeating the newest entry: the oldest is evicted; the
    table's length and newest entry are as before, but index 63 now means something else."""
    raw.greet()
    mirror = hpack.Decoder()
    static = (
        b"\x83\x86"  # :method POST, :scheme http
        + wire.literal(":path", INFER)
        + wire.literal("content-type", "application/grpc")
        + wire.literal("te", "trailers")
    )
    alpha = ("authorization", "alpha")  # 13 + 5 + 32 = 50 bytes
    tag = ("x-tag", "bbbbbbbbbbbbb")  # 5 + 13 + 32 = 50 bytes
    first = size_update(100) + static + incremental(*alpha) + incremental(*tag)
    assert check_call(raw, mirror, 1, first) == "auth:alpha"  # table: [tag, alpha], full
    by_index = static + indexed(63)  # 63: the older entry, alpha
    assert check_call(raw, mirror, 3, by_index) == "auth:alpha"
    assert check_call(raw, mirror, 5, by_index) == "auth:alpha"  # the cached block
    # tag once more: alpha is evicted, the table is [tag, tag]
    assert check_call(raw, mirror, 7, static + incremental(*tag)) == "auth:"
    assert list(mirror.header_table.dynamic_entries) == [(b"x-tag", b"bbbbbbbbbbbbb")] * 2
    # index 63 is tag now: the call carries no authorization
    assert check_call(raw, mirror, 9, by_index) == "auth:"


def test_a_cached_block_with_a_table_size_update_still_resizes_the_table(raw):
    """A size update is part of what a block does to the table: a block whose decoding
    changed nothing (so it may be remembered) must still set the size when it comes again."""
    raw.greet()
    mirror = hpack.Decoder()
    static = (
        b"\x83\x86"  # :method POST, :scheme http
        + wire.literal(":path", INFER)
        + wire.literal("content-type", "application/grpc")
        + wire.literal("te", "trailers")
    )
    alpha = ("authorization", "alpha")  # 50 bytes in the table
    assert check_call(raw, mirror, 1, static + incremental(*alpha)) == "auth:alpha"
    assert size_update(4096) == b"\x3f\xe1\x1f"
    to_large = size_update(4096) + static + indexed(62)
    to_small = size_update(100) + static + indexed(62)
    assert check_call(raw, mirror, 3, to_large) == "auth:alpha"  # 4096 already: remembered
    assert check_call(raw, mirror, 5, to_small) == "auth:alpha"  # 100, alpha fits: remembered
    assert check_call(raw, mirror, 7, to_large) == "auth:alpha"  # 4096 again
    assert mirror.header_table.maxsize == 4096
    # two more entries: with 4096 bytes alpha stays (index 64); with 100 it would be evicted
    tags = static + incremental("x-tag", "bbbbbbbbbbbbb") + incremental("x-tag", "ccccccccccccc")
    assert check_call(raw, mirror, 9, tags) == "auth:"
    assert len(mirror.header_table.dynamic_entries) == 3
    assert check_call(raw, mirror, 11, static + indexed(64)) == "auth:alpha"


# ---- 13. graceful stop -------------------------------------------------------------------


def test_a_graceful_stop_answers_calls_in_flight_and_takes_no_new_connection():
    running = Running(BIG)
    stopped = False
    try:
        with grpc.insecure_channel(running.address, options=options()) as chan:
            stub = infer_stub(chan)
            check_echo(stub(request("echo", "before", b"b"), timeout=WAIT), "before", b"b")
            future = stub.future(request("wait", "in-flight", b"f"), timeout=WAIT)
            assert running.servicer.event("started:in-flight").wait(WAIT)
            started = time.monotonic()
            running.call(running.server.stop(5))
            stopped = True
            elapsed = time.monotonic() - started
            check_echo(future.result(timeout=WAIT), "in-flight", b"f")
            assert elapsed < 3, "stop waited out its grace although the call was answered"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", running.port), timeout=WAIT).close()
    finally:
        if not stopped:
            running.close()
        else:
            running.call(_cancel_the_rest())
            running.loop.call_soon_threadsafe(running.loop.stop)
            running.thread.join(WAIT)
            running.loop.close()


def test_stop_with_an_idle_connection_open():
    running = Running(BIG)
    try:
        with grpc.insecure_channel(running.address, options=options()) as chan:
            stub = infer_stub(chan)
            check_echo(stub(request("echo", "idle", b"i"), timeout=WAIT), "idle", b"i")
            started = time.monotonic()
            running.call(running.server.stop(5))
            assert time.monotonic() - started < 3
    finally:
        running.close()


# ---- 14. the helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("100m", 0.1),
    ("5S", 5.0),
    ("1H", 3600.0),
    ("2M", 120.0),
    ("250u", 250e-6),
    ("99999999n", 99999999e-9),
])
def test_timeout_seconds(text, seconds):
    assert wire.timeout_seconds(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize("text", ["", "S", "5", "5x", "-1S", "1.5S", " 5S", "123456789S", "²S"])
def test_timeout_seconds_of_malformed_values_is_none(text):
    assert wire.timeout_seconds(text) is None


def test_percent_encoded():
    assert wire.percent_encoded("plain text: ok") == "plain text: ok"
    assert wire.percent_encoded(ABORT_MESSAGE) == "caf%C3%A9: 100%25 sure%0Asecond line"
    assert wire.percent_encoded("a\tb\x7f") == "a%09b%7F"


def test_literal_decodes_to_the_same_header():
    decoder = hpack.Decoder()
    assert decoder.decode(wire.literal("grpc-status", "0")) == [("grpc-status", "0")]
    long = "x" * 300
    assert decoder.decode(wire.literal("grpc-message", long)) == [("grpc-message", long)]
    assert decoder.decode(wire.RESPONSE_BLOCK + wire.OK_TRAILERS) == [
        (":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "0"),
    ]
    assert len(decoder.header_table.dynamic_entries) == 0  # never indexed


def test_frame_header():
    assert wire.frame(wire.PING, wire.ACK, 0, b"12345678") == (
        b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + b"12345678"
    )
    assert wire.frame(wire.DATA, 0, 5, b"x" * 70_000)[:9] == b"\x01\x11\x70\x00\x00\x00\x00\x00\x05"


def test_decompress():
    data = b"tensor bytes " * 1000
    assert wire.decompress("gzip", gzip.compress(data), 0) == data
    assert wire.decompress("deflate", zlib.compress(data), 0) == data
    assert wire.decompress("gzip", gzip.compress(data), len(data)) == data
    with pytest.raises(ValueError, match="larger than max"):
        wire.decompress("gzip", gzip.compress(data), len(data) - 1)
    with pytest.raises(ValueError, match="not supported"):
        wire.decompress("br", data, 0)
    with pytest.raises(ValueError, match="not supported"):
        wire.decompress("", data, 0)
    with pytest.raises(ValueError, match="could not be decompressed"):
        wire.decompress("gzip", b"not gzip at all", 0)
