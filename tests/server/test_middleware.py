"""The error middleware: one JSON shape, repository paths made relative, no internals in 500s."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from repoman.dataplane.redact import Redactor
from repoman.errors import ModelNotReady
from repoman.server.keys import SERVICE
from repoman.server.middleware import errors_as_json


def answer(error: Exception) -> tuple[int, str]:
    app = web.Application()
    app[SERVICE] = SimpleNamespace(redact=Redactor(Path("/srv/models")))  # type: ignore[assignment]

    async def handler(request: web.Request) -> web.StreamResponse:
        raise error

    request = make_mocked_request("GET", "/v2/models/m", app=app)
    response = asyncio.run(errors_as_json(request, handler))
    assert isinstance(response, web.Response) and isinstance(response.body, bytes)
    return response.status, json.loads(response.body)["error"]


def test_repository_paths_in_error_messages_are_relative() -> None:
    error = ModelNotReady("m", 1, "Load model from /srv/models/m/1/model.onnx failed")
    assert answer(error) == (
        503,
        "version 1 of model 'm' is not ready: Load model from m/1/model.onnx failed",
    )


def test_an_unexpected_error_is_a_500_that_keeps_its_text_for_the_log() -> None:
    status, message = answer(ValueError("/home/someone/.venv/lib/thing.py: secret"))
    assert status == 500
    assert message == "internal error (ValueError); see the server log"
