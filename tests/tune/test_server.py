"""The tuning server: a `repoman serve` of its own, whose repository API needs a token."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from repoman.tune.server import TuningServer
from tests.serverproc import ROOT


def post(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, data=b"", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_tuning_server_guards_its_repository_api_with_a_token_of_its_own() -> None:
    server = TuningServer(ROOT / "model_repository", "digits")
    try:
        server.wait_listening(60)
        assert server.token and len(server.token) >= 32
        index = f"{server.url}/v2/repository/index"
        assert post(index) == 401
        assert post(index, "guess") == 403
        assert post(index, server.token) == 200
        # NOTE: sent through the environment: a command line is visible to every user (ps).
        pid = server._process.pid
        assert server.token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert "without a control token" not in server.log_tail()
    finally:
        server.stop()
