"""The load loop's HTTP/1.1 client against a scripted loopback server: every framing it meets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from yarl import URL

from repoman.perf.http1 import Connection, ProtocolError, build_request

Answer = Callable[[bytes], list[bytes]]  # request head -> the chunks to write back


async def _serve(
    answer: Answer, requests: int, close_after: bool = False
) -> tuple[URL, asyncio.Task]:
    """A server that reads ``requests`` requests on one connection and writes ``answer``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(requests):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"\r\ncontent-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            for chunk in answer(head):
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(0.01)  # the client must re-assemble split answers
        if close_after:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return URL(f"http://127.0.0.1:{port}/v2/models/m/infer"), asyncio.create_task(
        server.serve_forever()
    )


def _exchange(answer: Answer, count: int = 2, close_after: bool = False, timeout_s: float = 5.0):
    async def main():
        url, serving = await _serve(answer, count, close_after)
        results = []
        try:
            connection = await Connection.open(url, timeout_s)
            request = build_request(url, b"body", {"Content-Type": "application/json"})
            for _ in range(count):
                try:
                    results.append(await connection.send(request, timeout_s))
                except Exception as exc:
                    results.append(exc)
            results.append(connection.closed)
        finally:
            serving.cancel()
        return results

    return asyncio.run(main())


def test_content_length_answers_arrive_whole_even_when_split():
    answer = [
        b"HTTP/1.1 200 OK\r\nInference-Header-Content-Length: 2\r\nContent-",
        b"Length: 5\r\n\r\nhe",
        b"llo",
    ]
    assert _exchange(lambda head: answer) == [(200, b"hello"), (200, b"hello"), False]


def test_interim_answers_are_skipped():
    answer = [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]
    assert _exchange(lambda head: answer) == [(200, b"ok"), (200, b"ok"), False]


def test_chunked_answers():
    answer = [
        b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        b"2;x=y\r\nde\r\n0\r\n\r\n",
    ]
    assert _exchange(lambda head: answer) == [(400, b"abcde"), (400, b"abcde"), False]


def test_a_body_ended_by_closing_and_connection_close():
    close_delimited = [b"HTTP/1.0 200 OK\r\n\r\nall of it"]
    results = _exchange(lambda head: close_delimited, count=1, close_after=True)
    assert results == [(200, b"all of it"), True]
    declared = [b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno"]
    assert _exchange(lambda head: declared, count=1) == [(503, b"no"), True]


def test_garbage_and_silence_fail_the_request_and_close_the_connection():
    [error, closed] = _exchange(lambda head: [b"SSH-2.0-OpenSSH\r\n\r\n"], count=1)
    assert isinstance(error, ProtocolError) and closed
    [error, closed] = _exchange(lambda head: [], count=1, timeout_s=0.2)
    assert isinstance(error, TimeoutError) and closed


def test_request_bytes():
    url = URL("http://[::1]:8000/v2/models/a%20b/versions/2/infer")
    wire = build_request(url, b"xyz", {"Inference-Header-Content-Length": "1"})
    head, body = wire.split(b"\r\n\r\n")
    assert body == b"xyz"
    assert head.split(b"\r\n") == [
        b"POST /v2/models/a%20b/versions/2/infer HTTP/1.1",
        b"Host: [::1]:8000",
        b"Inference-Header-Content-Length: 1",
        b"Content-Length: 3",
    ]


def test_sending_on_a_closed_connection_raises():
    async def main():
        url, serving = await _serve(lambda head: [], 0)
        connection = await Connection.open(url, 1.0)
        connection.close()
        serving.cancel()
        with pytest.raises(ConnectionResetError):
            connection.send(b"", 1.0)

    asyncio.run(main())
