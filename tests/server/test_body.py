"""Request bodies: Content-Encoding inflated within a limit, and the codings refused."""

from __future__ import annotations

import gzip
import zlib

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from repoman.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from repoman.server.body import content_coding, inflate

TOO_LARGE = PayloadTooLarge("too large")
TEXT = b'{"inputs": []}' * 100


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("coding", "packed"),
    [
        ("gzip", gzip.compress(TEXT)),
        ("deflate", zlib.compress(TEXT)),
        ("deflate", raw_deflate(TEXT)),
    ],
)
def test_gzip_zlib_and_raw_deflate_inflate(coding: str, packed: bytes) -> None:
    assert inflate(packed, coding, len(TEXT), TOO_LARGE) == TEXT


def test_inflating_stops_one_byte_past_the_limit() -> None:
    bomb = gzip.compress(b"0" * 50_000_000)
    with pytest.raises(PayloadTooLarge) as caught:
        inflate(bomb, "gzip", 1000, TOO_LARGE)
    assert caught.value is TOO_LARGE
    assert inflate(gzip.compress(TEXT), "gzip", len(TEXT), TOO_LARGE) == TEXT  # exactly at it


@pytest.mark.parametrize(
    ("packed", "message"),
    [
        (b"not gzip at all", "not valid gzip"),
        (gzip.compress(TEXT)[:30], "cut short"),
        (gzip.compress(TEXT) + b"junk", "bytes after its gzip data"),
        (gzip.compress(TEXT[:10]) + gzip.compress(TEXT[10:]), "bytes after its gzip data"),
        (b"", "cut short"),
    ],
)
def test_corrupt_gzip_is_invalid(packed: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        inflate(packed, "gzip", 1 << 20, TOO_LARGE)


def coding_of(*values: str) -> str | None:
    headers = CIMultiDict(("Content-Encoding", value) for value in values)
    return content_coding(make_mocked_request("POST", "/", headers=headers))


@pytest.mark.parametrize(
    ("values", "coding"),
    [
        ((), None),
        (("identity",), None),
        (("",), None),
        (("GZIP",), "gzip"),
        ((" deflate ",), "deflate"),
    ],
)
def test_supported_codings(values: tuple[str, ...], coding: str | None) -> None:
    assert coding_of(*values) == coding


@pytest.mark.parametrize(
    "values", [("br",), ("zstd",), ("compress",), ("gzip, gzip",), ("gzip", "gzip"), ("x-gzip",)]
)
def test_other_codings_and_stacked_ones_are_unsupported(values: tuple[str, ...]) -> None:
    with pytest.raises(UnsupportedMediaType, match="gzip or deflate"):
        coding_of(*values)
