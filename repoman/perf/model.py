"""What perf needs to know before the load starts: the server URL and the model's inputs."""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL

from repoman.perf.options import UsageError, describe
from repoman.types import DataType


@dataclass(frozen=True)
class InputSpec:
    """One model input as the metadata describes it, batch dimension removed when batching."""

    name: str
    datatype: DataType
    dims: tuple[int, ...]  # -1 marks a variable dimension


@dataclass(frozen=True)
class Target:
    """The model under test: where to post, whether it batches, what it takes."""

    server: URL
    model: str
    version: str
    infer_url: URL
    max_batch_size: int  # 0: the model does not batch, requests carry one unbatched sample
    inputs: tuple[InputSpec, ...]


def server_url(text: str) -> URL:
    """``HOST:PORT`` or ``http(s)://HOST:PORT[/]`` -> the server's base URL."""
    text = text.strip().rstrip("/")
    try:
        url = URL(text if "://" in text else f"http://{text}")
        valid = url.scheme in ("http", "https") and bool(url.host) and url.port is not None
    except ValueError:
        valid = False
    if not valid:
        raise UsageError(f"-u {text!r}: expected HOST:PORT or http://HOST:PORT")
    return url


def model_path(model: str, version: str) -> str:
    path = "/v2/models/" + urllib.parse.quote(model, safe="")
    return path + (f"/versions/{urllib.parse.quote(version, safe='')}" if version else "")


async def _get(session: aiohttp.ClientSession, url: URL) -> tuple[int, Any]:
    try:
        async with session.get(url) as response:
            raw = await response.read()
            status = response.status
    except TimeoutError:
        raise UsageError(f"no answer from {url.origin()} in time (see --timeout)") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UsageError(f"cannot reach {url.origin()}: {describe(exc)}") from None
    try:
        return status, orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return status, {"error": raw[:200].decode(errors="replace")}


def _complaint(body: Any) -> str:
    return str(body.get("error", body)) if isinstance(body, dict) else str(body)


async def fetch_target(
    session: aiohttp.ClientSession, server: URL, model: str, version: str
) -> Target:
    """Read the model's metadata, config (for max_batch_size) and readiness; UsageError if unfit."""
    path = model_path(model, version)
    (status, metadata), (config_status, config), (ready_status, ready) = await asyncio.gather(
        _get(session, server.with_path(path, encoded=True)),
        _get(session, server.with_path(path + "/config", encoded=True)),
        _get(session, server.with_path(path + "/ready", encoded=True)),
    )
    what = f"model '{model}'" + (f" version {version}" if version else "")
    if status != 200:
        raise UsageError(f"{what} at {server}: HTTP {status}: {_complaint(metadata)}")
    # NOTE: 404/405 here mean the server lacks the readiness route (metadata answered), not
    # that the model is unready; Triton answers 400 and repoman 503 for an unready model.
    if ready_status not in (200, 404, 405):
        raise UsageError(f"{what} is not ready (HTTP {ready_status}: {_complaint(ready)})")
    try:
        listed = [
            (
                str(t["name"]),
                DataType.from_protocol_name(t["datatype"]),
                [int(d) for d in t["shape"]],
            )
            for t in metadata["inputs"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{what}: unreadable metadata (bad or missing {exc})") from None
    if not listed:
        raise UsageError(f"{what} has no inputs")
    if config_status == 200 and isinstance(config, dict):
        # NOTE: Triton nests the config under "config" in some versions; repoman does not.
        config = config.get("config", config)
        max_batch_size = int(config.get("max_batch_size", 0) or 0)
    else:
        # No config endpoint (not every v2 server has one): a leading -1 on every input is
        # the usual sign of a batch dimension.
        batching = all(shape[:1] == [-1] for _, _, shape in listed)
        max_batch_size = 1 << 30 if batching else 0
    inputs = tuple(
        InputSpec(name, datatype, tuple(shape[1:] if max_batch_size > 0 else shape))
        for name, datatype, shape in listed
    )
    return Target(
        server=server,
        model=model,
        version=version,
        infer_url=server.with_path(path + "/infer", encoded=True),
        max_batch_size=max_batch_size,
        inputs=inputs,
    )
