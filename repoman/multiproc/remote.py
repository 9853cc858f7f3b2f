"""The data plane as a front-end process sees it: requests decoded, checked and answered here,
computed by the core's one scheduler; everything else asked of the core."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from repoman.config.model import ModelConfig
from repoman.dataplane.api import ReadRequest
from repoman.dataplane.refusals import refusal_reason
from repoman.dataplane.request_checks import ExpectedInputs, prepare, reshape_outputs
from repoman.dataplane.service import EXTENSIONS, SERVER_NAME
from repoman.errors import ErrorKind, RepomanError
from repoman.inference import InferRequest, InferResponse
from repoman.ipc import Arena, Connection, ConnectionLost, tensors
from repoman.manager.routing import choose
from repoman.manager.version import State
from repoman.multiproc.protocol import INLINE_BYTES
from repoman.names import check_model_name
from repoman.scheduler.stats import SECONDS_BUCKETS, Histogram

RETRIES = 3
"""How often a request whose version was swapped under it is checked again and resent."""


class RemoteError(RepomanError):
    """An error the core answered with: its HTTP status, message, type name (``error_type``,
    for the transports that tell errors apart by type) and kind, as the core gave them."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str = "",
        kind: int = ErrorKind.UNAVAILABLE,
    ) -> None:
        super().__init__(message, ErrorKind(kind))
        self.status = HTTPStatus(status)
        self.error_type = error_type


@dataclass(frozen=True)
class Route:
    """A version as the routing table shows it (what ``choose`` needs, and its config)."""

    version: int
    state: State
    reason: str
    generation: int
    config: ModelConfig | None


class RemoteDataPlane:
    """Implements :class:`~repoman.dataplane.api.DataPlane` over a connection to the core."""

    def __init__(self, connection_factory: Callable[[RemoteDataPlane], Connection]) -> None:
        # NOTE: looked up once: on Python 3.11 every get_running_loop() is a getpid() call
        self._loop = asyncio.get_running_loop()
        self._routes: dict[str, tuple[str | None, dict[int, Route]]] = {}
        self._ready = False
        self.routed = asyncio.Event()
        """Set once the core's first routing table arrived."""
        self._waiting: dict[int, tuple[asyncio.Future[Any], list[int]]] = {}
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self.request_arena: Arena | None = None
        self.response_arena: Arena | None = None
        # NOTE: gathered over one loop iteration and sent once, just before that iteration's
        # flush (the one that sends the answers they belong to), so the core still has them
        # before any later message from this front-end (a scrape's call) or its client's
        # next request: one message per iteration instead of one per response.
        self._encode_times: dict[tuple[str, int], Histogram] = {}
        self._to_free: list[int] = []
        self.connection = connection_factory(self)

    def redact(self, text: str) -> str:
        return text  # NOTE: the core redacts what it sends

    @property
    def ready(self) -> bool:
        return self._ready and not self.connection.closed

    def server_metadata(self) -> dict[str, Any]:
        from repoman import __version__

        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    # ---- inference ----------------------------------------------------------------------

    async def infer(
        self, name: str, version: int | None, read: ReadRequest
    ) -> tuple[InferRequest, InferResponse]:
        check_model_name(name)
        route = self._route(name, version)
        assert route.config is not None
        expected = ExpectedInputs(route.config)
        try:
            request = await read(expected)
        except RepomanError as exc:
            self.refused(name, route.version, refusal_reason(exc))
            raise
        for _ in range(RETRIES):
            route = self._route(name, version)
            assert route.config is not None
            try:
                prepared = prepare(route.config, request, expected)
            except RepomanError as exc:
                self.refused(name, route.version, refusal_reason(exc))
                raise
            answer = await self._compute(name, version, route, prepared, request)
            if answer[0] == "retry":
                continue
            number, outputs = answer[1], answer[2]
            wanted = {output: outputs[output] for output in prepared.wanted}
            shaped = reshape_outputs(route.config, wanted, copy=False)
            return request, InferResponse(
                model_name=name, model_version=number, id=request.id, outputs=shaped
            )
        raise RemoteError(503, f"model '{name}' was swapped repeatedly while being asked; retry")

    def _route(self, name: str, version: int | None) -> Route:
        error, versions = self._routes.get(name, (None, {}))
        return choose(name, versions, error, version)

    async def _compute(
        self, name: str, asked: int | None, route: Route, prepared: Any, request: InferRequest
    ) -> tuple:
        assert self.request_arena is not None
        rid = next(self._ids)
        blocks: list[int] = []
        inputs = tensors.put_all(self.request_arena, prepared.inputs, blocks, INLINE_BYTES)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._waiting[rid] = (future, blocks)
        self.connection.send(
            (
                "infer",
                rid,
                name,
                asked,
                route.version,
                route.generation,
                inputs,
                prepared.wanted,
                prepared.priority,
                prepared.timeout_us,
                request.id or "",
                request.parameters,
            )
        )
        try:
            return await future
        except asyncio.CancelledError:
            # NOTE: the client went away: the core drops the request if it is still queued;
            # its blocks are freed when the core's answer comes.
            if not self.connection.closed:
                self.connection.send(("cancel", rid))
            raise

    # ---- counting, told to the core (the one set of statistics) ----------------------------

    def refused(self, name: str, version: int | None, reason: str) -> None:
        # NOTE: sent before the client's answer, on the one ordered connection: a scrape
        # through this front-end after the answer counts it.
        if not self.connection.closed:
            self.connection.send(("refused", name, version, reason))

    def encoded(self, name: str, version: int, seconds: float) -> None:
        if self.connection.closed:
            return
        times = self._encode_times
        if not times:
            self.connection.before_flush(self._send_encode_times)
        histogram = times.get((name, version))
        if histogram is None:
            histogram = times[name, version] = Histogram(SECONDS_BUCKETS)
        histogram.observe(seconds)

    def _send_encode_times(self) -> None:
        times, self._encode_times = self._encode_times, {}
        self.connection.send(
            (
                "encoded",
                [(name, version, h.counts, h.total) for (name, version), h in times.items()],
            )
        )

    def _free(self, offsets: list[int]) -> None:
        if not self._to_free:
            self.connection.before_flush(self._send_free)
        self._to_free += offsets

    def _send_free(self) -> None:
        offsets, self._to_free = self._to_free, []
        self.connection.send(("free", offsets))

    # ---- everything else, asked of the core ----------------------------------------------

    async def _ask(self, method: str, *args: Any) -> Any:
        cid = next(self._ids)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._calls[cid] = future
        self.connection.send(("call", cid, method, args))
        return await future

    async def model_ready(self, name: str, version: int | None = None) -> bool:
        return bool(await self._ask("model_ready", name, version))

    async def model_metadata(self, name: str, version: int | None = None) -> dict[str, Any]:
        return dict(await self._ask("model_metadata", name, version))

    async def model_config(self, name: str, version: int | None = None) -> dict[str, Any]:
        return dict(await self._ask("model_config", name, version))

    async def repository_index(self) -> list[dict[str, Any]]:
        return list(await self._ask("repository_index"))

    async def statistics(
        self, name: str | None = None, version: int | None = None
    ) -> dict[str, Any]:
        return dict(await self._ask("statistics", name, version))

    async def status(self, repository: bool = False) -> dict[str, Any]:
        return dict(await self._ask("status", repository))

    async def load_model(self, name: str, config_text: str | None = None) -> None:
        await self._ask("load_model", name, config_text)

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None:
        await self._ask("unload_model", name, unload_dependents)

    async def exposition(self) -> bytes:
        return bytes(await self._ask("metrics"))

    # ---- messages from the core -----------------------------------------------------------

    def on_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "routes":
            self._take_routes(message[1])
        elif kind in ("result", "failed", "cancelled", "retry"):
            self._answer(message)
        elif kind in ("reply", "raise"):
            future = self._calls.pop(message[1], None)
            if future is not None and not future.done():
                if kind == "reply":
                    future.set_result(message[2])
                else:
                    future.set_exception(RemoteError(*message[2:6]))

    def on_close(self, reason: BaseException | None) -> None:
        lost = ConnectionLost(f"the core went away ({reason})")
        for future, _ in self._waiting.values():
            if not future.done():
                future.set_exception(RemoteError(503, str(lost)))
        for future in self._calls.values():
            if not future.done():
                future.set_exception(RemoteError(503, str(lost)))
        self._waiting.clear()
        self._calls.clear()

    def _take_routes(self, snapshot: dict[str, Any]) -> None:
        self._ready = bool(snapshot["ready"])
        self.routed.set()
        self._routes = {
            name: (
                error,
                {
                    number: Route(number, State(state), reason, generation, config)
                    for number, (state, reason, generation, config) in versions.items()
                },
            )
            for name, (error, versions) in snapshot["models"].items()
        }

    def _answer(self, message: tuple[Any, ...]) -> None:
        kind, rid = message[0], message[1]
        waiting = self._waiting.pop(rid, None)
        if waiting is None:
            return
        future, blocks = waiting
        assert self.request_arena is not None and self.response_arena is not None
        for offset in blocks:
            self.request_arena.free(offset)
        if kind == "result":
            outputs: dict[str, Any] = {}
            used = []
            for name, descriptor in message[3].items():
                array = tensors.get(self.response_arena, descriptor)
                if descriptor[2] is not None:
                    # NOTE: copied out so the core's block can be freed at once (the response
                    # is encoded later, after this returns); an inline one is ours already.
                    array = array.copy()
                    used.append(descriptor[2])
                outputs[name] = array
            if used and not self.connection.closed:
                self._free(used)
            if not future.done():
                future.set_result(("result", message[2], outputs))
        elif future.done():
            return
        elif kind == "failed":
            future.set_exception(RemoteError(*message[2:6]))
        elif kind == "retry":
            future.set_result(("retry",))
        else:
            future.set_exception(RemoteError(503, "the request was cancelled"))
