"""Request bodies off the wire: size limits, the read timeout, Content-Encoding (gzip, deflate)."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import hdrs, web

from repoman.errors import BodyTimeout, InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from repoman.server.codec_tensors import json_loads, json_preview

__all__ = [
    "DEFAULT_MAX_JSON_BYTES",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_READ_TIMEOUT_S",
    "BodyLimits",
    "content_coding",
    "decode_off_loop",
    "inflate",
    "read_body",
    "read_json_body",
]

T = TypeVar("T")

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_JSON_BYTES = 4 * 1024 * 1024
"""orjson holds the GIL for a whole parse: 4 MiB of the costliest JSON (nested empty arrays)
took 0.5-0.6 s and ~150 MiB, 4 MiB of numbers 30 ms and ~45 MiB. tritonclient writes ~20
characters per FP32 value, so 4 MiB still carries a 224x224x3 image as JSON."""
DEFAULT_READ_TIMEOUT_S = 30.0
INLINE_DECODE_BYTES = 256 * 1024
"""Bodies up to this size, as sent, are decoded on the event loop (~35 ms at the very worst);
bigger and compressed ones in a worker thread."""
CODINGS = ("gzip", "deflate")
"""What tritonclient and Triton speak; every other coding is a 415 (fewer decoders face clients)."""


@dataclass(frozen=True)
class BodyLimits:
    """How much a client may send, and how slowly.

    ``max_bytes`` bounds a body both as sent and as inflated from its Content-Encoding.
    ``max_json_bytes`` bounds the JSON part of a body (all of it without
    ``Inference-Header-Content-Length``): parsed JSON takes 10 to 30 times its text in memory,
    binary tensors about their size. ``read_timeout`` is the most seconds from starting to read
    a body to its last byte.
    """

    max_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    read_timeout: float = DEFAULT_READ_TIMEOUT_S

    def too_large(self, size: int | None) -> PayloadTooLarge:
        found = "" if size is None else f" ({size} bytes)"
        return PayloadTooLarge(
            f"the request body{found} is over this server's limit of {self.max_bytes} bytes"
        )

    def json_too_large(self, size: int | None) -> PayloadTooLarge:
        found = "" if size is None else f" ({size} bytes)"
        return PayloadTooLarge(
            f"the JSON part of the request{found} is over this server's limit of "
            f"{self.max_json_bytes} bytes; send big tensors as binary data "
            "(the binary tensor data extension)"
        )


def content_coding(request: web.Request) -> str | None:
    """The body's Content-Encoding (None: as is); 415 for a coding repoman does not read.

    NOTE: the server runs with aiohttp's auto_decompress off (server/run.py), so bodies arrive
    as sent and ``inflate`` decodes them within a limit, off the event loop where it matters.
    """
    given = request.headers.getall(hdrs.CONTENT_ENCODING, [])
    if not given:
        return None
    raw = ", ".join(given)  # NOTE: repeated headers mean one list of codings (RFC 9110)
    coding = raw.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding not in CODINGS:
        raise UnsupportedMediaType(
            f"Content-Encoding {json_preview(raw)} is not supported: send the body as it is, "
            "or as gzip or deflate (one coding)"
        )
    return coding


async def read_body(
    request: web.Request,
    limit: int,
    timeout: float,
    too_large: Callable[[int | None], PayloadTooLarge],
) -> bytes:
    """The body as sent; ``too_large`` (413) past ``limit`` bytes, BodyTimeout (408) past
    ``timeout`` seconds. A declared Content-Length over ``limit`` is refused before a byte of
    the body is read.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large(declared)
    chunks: list[bytes] = []
    size = 0
    # NOTE: a small body usually arrives with its headers: then nothing can wait, and the
    # timer (created and cancelled for every request otherwise) is not needed.
    complete = declared is not None and request.content.is_eof()
    try:
        async with contextlib.nullcontext() if complete else asyncio.timeout(timeout):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > limit:
                    raise too_large(None)
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {timeout:g} s") from None
    except (web.RequestPayloadError, ConnectionResetError) as exc:
        # NOTE: a broken chunked encoding, or the client went away mid-body: its fault, not ours.
        raise InvalidRequest(f"the request body could not be read: {exc}") from None
    return b"".join(chunks)


def inflate(data: bytes, coding: str, limit: int, too_large: PayloadTooLarge) -> bytes:
    """``data`` decoded from its Content-Encoding ``coding``; ``too_large`` past ``limit`` bytes.

    Never produces more than ``limit`` + 1 bytes, however well ``data`` compresses. zlib
    releases the GIL while it inflates, so a worker thread running this leaves the loop free.
    """
    if coding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
        wbits = zlib.MAX_WBITS  # RFC 1950 (zlib), what "deflate" means
    else:
        wbits = -zlib.MAX_WBITS  # raw RFC 1951 deflate, which some clients send instead
    inflater = zlib.decompressobj(wbits)
    try:
        inflated = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InvalidRequest(
            f"the request body is not valid {coding} (its Content-Encoding): {exc}"
        ) from None
    if len(inflated) > limit:
        raise too_large
    if not inflater.eof:
        raise InvalidRequest(f"the request body's {coding} data (Content-Encoding) is cut short")
    if inflater.unused_data:
        raise InvalidRequest(
            f"the request body has bytes after its {coding} data (Content-Encoding)"
        )
    return inflated


async def decode_off_loop(
    decoder: Executor, decode: Callable[[], T], sent: bytes, coding: str | None
) -> T:
    """``decode()`` of a body that arrived as ``sent``: here when it is small and not
    compressed, else in ``decoder``'s worker thread.

    NOTE: parsing JSON and building arrays hold the GIL call by call, and zlib not at all, so
    the event loop gets it back between calls (or every switch interval in Python code) and
    keeps answering live probes and small requests while a big body is decoded.
    """
    if coding is None and len(sent) <= INLINE_DECODE_BYTES:
        return decode()
    return await asyncio.get_running_loop().run_in_executor(decoder, decode)


async def read_sent(
    request: web.Request, limits: BodyLimits, coding: str | None, *, all_json: bool
) -> bytes:
    """The body as sent: within the JSON limit when it is all JSON and not compressed (then
    what is read is what is parsed), else within the request limit."""
    if all_json and coding is None:
        return await read_body(
            request, limits.max_json_bytes, limits.read_timeout, limits.json_too_large
        )
    return await read_body(request, limits.max_bytes, limits.read_timeout, limits.too_large)


def inflated(sent: bytes, coding: str | None, limits: BodyLimits, *, all_json: bool) -> bytes:
    """``sent`` inflated from its Content-Encoding ``coding`` (as it is without one), within
    the JSON limit when it is all JSON, else within the request limit."""
    if coding is None:
        return sent
    if all_json:
        return inflate(sent, coding, limits.max_json_bytes, limits.json_too_large(None))
    return inflate(sent, coding, limits.max_bytes, limits.too_large(None))


async def read_json_body(request: web.Request, limits: BodyLimits, decoder: Executor) -> Any:
    """A JSON body (the repository API's), inflated if need be; None when it is empty."""
    coding = content_coding(request)
    sent = await read_sent(request, limits, coding, all_json=True)

    def decode() -> Any:
        body = inflated(sent, coding, limits, all_json=True)
        return json_loads(body) if body.strip() else None

    return await decode_off_loop(decoder, decode, sent, coding)
