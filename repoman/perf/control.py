"""A small KServe v2 control client (repository load, statistics, model metadata) for tools."""

from __future__ import annotations

import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from yarl import URL

from repoman.errors import RepomanError
from repoman.perf.loadgen import error_message
from repoman.perf.model import Target, fetch_target
from repoman.perf.options import describe


class ControlClient:
    """One HTTP session to one server, for the calls around a measurement (not the load)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str | None) -> None:
        self._session = session
        self._server = URL(url)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def load(self, model: str, config: dict[str, Any] | None, timeout_s: float) -> None:
        """Load ``model`` with ``config`` (None: as the repository has it); RepomanError with
        the server's reason when it refuses or fails."""
        url = self._server / "v2" / "repository" / "models" / model / "load"
        body = {"parameters": {"config": json.dumps(config)}} if config is not None else {}
        try:
            async with self._session.post(
                url,
                json=body,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise RepomanError(f"loading the config failed: {describe(exc)}") from None
        if status != 200:
            raise RepomanError(error_message(status, payload))

    async def statistics(self, model: str) -> list[dict[str, Any]] | None:
        """The model's ``model_stats`` rows, or None when the server cannot say."""
        quoted = urllib.parse.quote(model, safe="")
        url = self._server.with_path(f"/v2/models/{quoted}/stats", encoded=True)
        try:
            async with self._session.get(url, headers=self._headers) as response:
                if response.status != 200:
                    return None
                rows = (await response.json())["model_stats"]
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError):
            return None
        return rows if isinstance(rows, list) else None

    async def target(self, model: str) -> Target:
        """What a load generator needs to know of ``model`` (its metadata and config)."""
        return await fetch_target(self._session, self._server, model, "")


@contextlib.asynccontextmanager
async def control_client(url: str, token: str | None) -> AsyncIterator[ControlClient]:
    """A ControlClient for the server at ``url``, its session closed on exit."""
    async with aiohttp.ClientSession() as session:
        yield ControlClient(session, url, token)
