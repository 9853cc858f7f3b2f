"""Thin KServe v2 handlers: parse the URL and body, call the service, serialise the answer."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from aiohttp import web

from repoman.dataplane.request_checks import ExpectedInputs
from repoman.errors import InvalidRequest, UnsupportedMediaType
from repoman.inference import InferRequest
from repoman.metrics import CONTENT_TYPE
from repoman.names import parse_version
from repoman.server.body import (
    content_coding,
    decode_off_loop,
    inflated,
    read_json_body,
    read_sent,
)
from repoman.server.codec_tensors import json_preview
from repoman.server.decode import decode_infer_request
from repoman.server.encode import encode_infer_response
from repoman.server.keys import DECODER, LIMITS, METRICS, SERVICE

HEADER_LENGTH = "Inference-Header-Content-Length"
BODY_TYPES = frozenset({"application/json", "application/octet-stream"})
_DIGITS = re.compile(r"[0-9]{1,18}", re.ASCII)


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(payload).encode(), content_type="application/json"
    )


def _target(request: web.Request) -> tuple[str, int | None]:
    """The model name (the service checks it) and version number named by the URL."""
    raw = request.match_info.get("version")
    return request.match_info["model"], (parse_version(raw) if raw else None)


async def live(request: web.Request) -> web.Response:
    return _json({"live": True})


async def ready(request: web.Request) -> web.Response:
    is_ready = request.app[SERVICE].ready
    return _json({"ready": is_ready}, 200 if is_ready else 503)


async def server_metadata(request: web.Request) -> web.Response:
    return _json(request.app[SERVICE].server_metadata())


async def model_metadata(request: web.Request) -> web.Response:
    name, version = _target(request)
    return _json(await request.app[SERVICE].model_metadata(name, version))


async def model_ready(request: web.Request) -> web.Response:
    name, version = _target(request)
    is_ready = await request.app[SERVICE].model_ready(name, version)
    return _json({"name": name, "ready": is_ready}, 200 if is_ready else 503)


async def model_config(request: web.Request) -> web.Response:
    name, version = _target(request)
    return _json(await request.app[SERVICE].model_config(name, version))


async def infer(request: web.Request) -> web.Response:
    name, version = _target(request)

    async def read(expected: ExpectedInputs) -> InferRequest:
        return await _read_infer_request(request, name, version, expected)

    service = request.app[SERVICE]
    infer_request, response = await service.infer(name, version, read)
    started = time.perf_counter()
    payload, json_length = encode_infer_response(response, infer_request)
    service.encoded(name, response.model_version, time.perf_counter() - started)
    if json_length is None:
        return web.Response(body=payload, content_type="application/json")
    return web.Response(
        body=payload,
        content_type="application/octet-stream",
        headers={HEADER_LENGTH: str(json_length)},
    )


async def _read_infer_request(
    request: web.Request, name: str, version: int | None, expected: ExpectedInputs
) -> InferRequest:
    """Read, inflate and decode an ``/infer`` body within the app's limits."""
    # NOTE: the raw header first: parsing Content-Type costs more than the rest of this.
    raw_type = request.headers.get("Content-Type")
    if raw_type and raw_type not in BODY_TYPES and request.content_type not in BODY_TYPES:
        raise UnsupportedMediaType(
            f"an inference request body is JSON (application/json), optionally followed "
            f"by binary tensors (application/octet-stream); found Content-Type "
            f"'{request.content_type}'"
        )
    header_length = _header_length(request)
    limits = request.app[LIMITS]
    if header_length is not None and header_length > limits.max_json_bytes:
        raise limits.json_too_large(header_length)
    coding = content_coding(request)
    # Without Inference-Header-Content-Length the whole body is JSON, and the JSON limit holds.
    all_json = header_length is None
    sent = await read_sent(request, limits, coding, all_json=all_json)

    def decode() -> InferRequest:
        return decode_infer_request(
            inflated(sent, coding, limits, all_json=all_json),
            header_length=header_length,
            model_name=name,
            model_version=version,
            expected=expected,
        )

    return await decode_off_loop(request.app[DECODER], decode, sent, coding)


def _header_length(request: web.Request) -> int | None:
    given = request.headers.getall(HEADER_LENGTH, [])
    if not given:
        return None
    raw = ", ".join(given)
    # NOTE: not int(): it also takes " 12", "1_2", "+12" and Unicode digits such as "١٢".
    if not _DIGITS.fullmatch(raw):
        raise InvalidRequest(
            f"{HEADER_LENGTH} must be a number of bytes (ASCII digits), found {json_preview(raw)}"
        )
    return int(raw)


async def repository_index(request: web.Request) -> web.Response:
    return _json(await request.app[SERVICE].repository_index())


async def statistics(request: web.Request) -> web.Response:
    if "model" not in request.match_info:
        return _json(await request.app[SERVICE].statistics())
    name, version = _target(request)
    return _json(await request.app[SERVICE].statistics(name, version))


async def repository_load(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    config_text = None
    payload = await read_json_body(request, request.app[LIMITS], request.app[DECODER])
    if payload is not None:
        parameters = payload.get("parameters", {}) if isinstance(payload, dict) else None
        if not isinstance(parameters, dict):
            raise InvalidRequest("load request body must be an object with optional 'parameters'")
        config_text = load_config_text(parameters)
    await request.app[SERVICE].load_model(name, config_text)
    return _json({})


def load_config_text(parameters: dict[str, Any]) -> str | None:
    """The config override among a load request's ``parameters`` (every transport's check)."""
    unknown = sorted(set(parameters) - {"config"})
    if unknown:
        raise InvalidRequest(
            f"unsupported load parameter(s): {json_preview(unknown)} (repoman accepts 'config')"
        )
    config_text = parameters.get("config")
    if config_text is not None and not isinstance(config_text, str):
        raise InvalidRequest("parameter 'config' must be a string holding the config as JSON")
    return config_text


def unload_dependents(parameters: dict[str, Any]) -> bool:
    """Triton's ``unload_dependents`` among an unload request's ``parameters`` (every
    transport's check)."""
    unknown = sorted(set(parameters) - {"unload_dependents"})
    if unknown:
        raise InvalidRequest(
            f"unsupported unload parameter(s): {json_preview(unknown)} "
            "(repoman accepts 'unload_dependents')"
        )
    dependents = parameters.get("unload_dependents", False)
    if not isinstance(dependents, bool):
        raise InvalidRequest("parameter 'unload_dependents' must be true or false")
    return dependents


async def repository_unload(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    dependents = False
    payload = await read_json_body(request, request.app[LIMITS], request.app[DECODER])
    if payload is not None:
        parameters = payload.get("parameters", {}) if isinstance(payload, dict) else None
        if not isinstance(parameters, dict):
            raise InvalidRequest("unload request body must be an object with optional 'parameters'")
        dependents = unload_dependents(parameters)
    await request.app[SERVICE].unload_model(name, dependents)
    return _json({})


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
