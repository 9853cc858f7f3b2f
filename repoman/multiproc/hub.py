"""The core's side of the front-end processes: their requests on the one scheduler, their calls
answered by the one data plane, and the routing table pushed to them whenever it changes.

Messages (tuples; see :mod:`repoman.multiproc.protocol`) travel on one
:class:`~repoman.ipc.Connection` per front-end; tensors travel through two arenas per
front-end, one written by each side.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import weakref
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from repoman.dataplane.api import MetricsSource
from repoman.dataplane.service import InferenceService
from repoman.errors import ErrorKind, RepomanError
from repoman.ipc import Arena, Connection, ConnectionLost, tensors
from repoman.manager import ModelManager, ModelVersion, State
from repoman.multiproc import protocol
from repoman.pipeline.dispatch import Dispatcher
from repoman.pipeline.runner import Handle
from repoman.scheduler import RequestOptions

log = logging.getLogger(__name__)

KEPT_GENERATIONS = 1024
"""Configs of this many recent versions are kept for requests routed before a swap."""

CALLS = frozenset(
    {
        "model_ready",
        "model_metadata",
        "model_config",
        "repository_index",
        "statistics",
        "status",
        "load_model",
        "unload_model",
    }
)


class FrontendHub:
    """Accepts front-end connections on a Unix socket and serves them. Loop thread only."""

    def __init__(
        self,
        service: InferenceService,
        manager: ModelManager,
        dispatcher: Dispatcher,
        metrics: MetricsSource,
        *,
        arena_bytes: int,
    ) -> None:
        self._service = service
        self._manager = manager
        self._dispatcher = dispatcher
        self._metrics = metrics
        self._arena_bytes = arena_bytes
        self._peers: set[_Peer] = set()
        self._listener: socket.socket | None = None
        # NOTE: a generation names one ModelVersion object (a reload is a new one); the
        # configs of the latest few are kept to judge requests routed before a swap.
        self._generations: OrderedDict[int, Any] = OrderedDict()
        self._generation_of: weakref.WeakKeyDictionary[ModelVersion, int] = (
            weakref.WeakKeyDictionary()
        )
        self._next_generation = itertools.count(1)
        self._push_scheduled = False
        self.stopping = False
        """Set while the front-ends are being stopped: their going away is expected."""
        self.connected: Callable[[int], None] | None = None
        """Told the pid of each front-end that finished its handshake."""

    async def start(self, path: Path) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)

    def close(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for peer in list(self._peers):
            peer.connection.close()

    def routes_changed(self) -> None:
        """The routing table changed (a state, readiness): push it, once per loop iteration."""
        if not self._push_scheduled:
            self._push_scheduled = True
            asyncio.get_running_loop().call_soon(self._push)

    # ---- connections ------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        asyncio.get_running_loop().create_task(self._welcome(sock))

    async def _welcome(self, sock: socket.socket) -> None:
        # NOTE: the handshake passes the two arenas' descriptors (SCM_RIGHTS): blocking
        # calls, bounded by a timeout, on a thread.
        try:
            hello, request_arena, response_arena = await asyncio.to_thread(self._handshake, sock)
        except (OSError, ValueError) as exc:
            log.error("a front-end's handshake failed: %s", exc)
            sock.close()
            return
        peer = _Peer(self, hello[1], request_arena, response_arena)
        peer.connection = Connection(sock, peer.on_message, peer.on_close)
        self._peers.add(peer)
        peer.connection.send(("routes", self._snapshot()))
        if self.connected is not None:
            self.connected(peer.pid)

    def _handshake(self, sock: socket.socket) -> tuple[tuple[Any, ...], Arena, Arena]:
        sock.settimeout(10)
        data, fds, _, _ = socket.recv_fds(sock, 4096, 1)
        hello = protocol.decode_hello(data)
        if len(fds) != 1:
            raise ValueError("expected the front-end's arena")
        request_arena = Arena.attach(fds[0], hello[2])
        response_arena = Arena.create(self._arena_bytes)
        assert response_arena.fd is not None
        socket.send_fds(sock, [protocol.encode_welcome(self._arena_bytes)], [response_arena.fd])
        response_arena.release_fd()
        sock.settimeout(None)
        return hello, request_arena, response_arena

    # ---- the routing table ------------------------------------------------------------

    def _generation(self, mv: ModelVersion) -> int:
        generation = self._generation_of.get(mv)
        if generation is None:
            generation = next(self._next_generation)
            self._generation_of[mv] = generation
            self._generations[generation] = mv.config
            while len(self._generations) > KEPT_GENERATIONS:
                self._generations.popitem(last=False)
        return generation

    def config_of(self, generation: int) -> Any:
        return self._generations.get(generation)

    def _snapshot(self) -> dict[str, Any]:
        redact = self._service.redact
        models = {}
        for name in self._manager.model_names():
            error = self._manager.model_error(name)
            versions = {}
            for mv in self._manager.versions(name):
                state, reason = self._manager.serving_state(mv)
                ready = state is State.READY or state is State.AVAILABLE  # NOTE: both route
                versions[mv.version] = (
                    state.value,
                    redact(reason),
                    self._generation(mv) if ready else 0,
                    mv.config if ready else None,
                )
            models[name] = (redact(error) if error else None, versions)
        return {"ready": self._service.ready, "models": models}

    def _push(self) -> None:
        self._push_scheduled = False
        snapshot = self._snapshot()
        for peer in list(self._peers):
            with contextlib.suppress(ConnectionLost):
                peer.connection.send(("routes", snapshot))

    # ---- requests -----------------------------------------------------------------------

    def route(self, model: str, asked: int | None, routed: int, generation: int) -> ModelVersion:
        """The version that runs a request the front-end routed to ``routed``: that one while
        it is READY, else (for an unversioned request) the one serving now, if its config is
        the one the front-end checked the request against; else protocol.Retry."""
        try:
            return self._manager.route(model, routed)
        except RepomanError:
            if asked is not None:
                raise
        mv = self._manager.route(model, None)
        if mv.config != self.config_of(generation):
            raise protocol.Retry()
        return mv

    async def call(self, method: str, args: tuple[Any, ...]) -> Any:
        if method == "metrics":
            return await self._metrics.exposition()
        if method not in CALLS:
            raise RepomanError(f"no such call: {method}")
        return await getattr(self._service, method)(*args)


class _Peer:
    """One front-end: its arenas and its requests in flight."""

    connection: Connection

    def __init__(
        self, hub: FrontendHub, pid: int, request_arena: Arena, response_arena: Arena
    ) -> None:
        self.hub = hub
        self.pid = pid
        self.request_arena = request_arena
        self.response_arena = response_arena
        self.pending: dict[int, Handle] = {}

    def on_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "infer":
            self._infer(*message[1:])
        elif kind == "free":
            for offset in message[1]:
                self.response_arena.free(offset)
        elif kind == "cancel":
            item = self.pending.get(message[1])
            if item is not None:
                self.hub._dispatcher.withdraw(item)
                if not item.future.done():
                    item.future.cancel()
        elif kind == "refused":
            self.hub._service.refused(*message[1:])
        elif kind == "encoded":
            for name, version, counts, total in message[1]:
                self.hub._service.encoded_many(name, version, counts, total)
        elif kind == "call":
            asyncio.get_running_loop().create_task(self._call(*message[1:]))
        else:
            log.error("front-end %d sent an unknown message %r", self.pid, kind)

    def on_close(self, reason: BaseException | None) -> None:
        # NOTE: the arenas are not unmapped here: a batch still running may read a view of
        # this front-end's inputs. Dropped with this peer, they are unmapped (and the memfd
        # freed by the kernel) once the last such view is gone.
        self.hub._peers.discard(self)
        for item in list(self.pending.values()):
            self.hub._dispatcher.withdraw(item)
            if not item.future.done():
                item.future.cancel()
        if reason is not None:
            level = logging.INFO if self.hub.stopping else logging.WARNING
            log.log(level, "front-end %d went away (%s)", self.pid, reason)

    def _infer(
        self,
        rid: int,
        model: str,
        asked: int | None,
        routed: int,
        generation: int,
        inputs: dict[str, tensors.Descriptor],
        wanted: tuple[str, ...],
        priority: int,
        timeout_us: int | None,
        request_id: str = "",
        parameters: dict[str, Any] | None = None,
    ) -> None:
        try:
            mv = self.hub.route(model, asked, routed, generation)
            arrays = tensors.get_all(self.request_arena, inputs)
            item = self.hub._dispatcher.enqueue(
                mv, arrays, wanted, RequestOptions(priority, timeout_us, request_id, parameters)
            )
        except protocol.Retry:
            self.connection.send(("retry", rid))
            return
        except RepomanError as exc:
            self.connection.send(("failed", rid, *self._described(exc)))
            return
        except Exception as exc:  # NOTE: a bug, but the request is still answered
            log.exception("a request from front-end %d could not be queued", self.pid)
            self.connection.send(("failed", rid, *_internal(exc)))
            return
        self.pending[rid] = item
        item.future.add_done_callback(partial(self._done, rid, mv))

    def _described(self, error: BaseException) -> tuple[int, str, str, int]:
        """An error as a front-end is told it: HTTP status, redacted message, type name, kind."""
        message = self.hub._service.redact(str(error))
        if isinstance(error, RepomanError):
            return int(error.status), message, type(error).__name__, int(error.kind)
        return 500, message, type(error).__name__, int(ErrorKind.INTERNAL)

    def _done(self, rid: int, mv: ModelVersion, future: asyncio.Future[Any]) -> None:
        self.pending.pop(rid, None)
        if self.connection.closed:
            return
        if future.cancelled():
            self.connection.send(("cancelled", rid))
            return
        error = future.exception()
        if error is not None:
            self.connection.send(("failed", rid, *self._described(error)))
            return
        blocks: list[int] = []
        try:
            outputs = tensors.put_all(
                self.response_arena, future.result(), blocks, protocol.INLINE_BYTES
            )
        except Exception as exc:  # NOTE: a bug, but the request is still answered
            log.exception(
                "the outputs of a request could not be written for front-end %d", self.pid
            )
            for offset in blocks:
                self.response_arena.free(offset)
            self.connection.send(("failed", rid, *_internal(exc)))
            return
        self.connection.send(("result", rid, mv.version, outputs))

    async def _call(self, cid: int, method: str, args: tuple[Any, ...]) -> None:
        try:
            value = await self.hub.call(method, args)
        except RepomanError as exc:
            reply: tuple[Any, ...] = ("raise", cid, *self._described(exc))
        except Exception as exc:  # a bug: the front-end answers 500, the log says why
            log.exception("front-end call %s failed", method)
            reply = ("raise", cid, *_internal(exc))
        else:
            reply = ("reply", cid, value)
        if not self.connection.closed:
            self.connection.send(reply)


def _internal(error: BaseException) -> tuple[int, str, str, int]:
    """A bug, as a front-end is told it (the log has the traceback): HTTP status, message,
    type name, kind."""
    name = type(error).__name__
    return 500, f"internal error ({name}); see the server log", name, int(ErrorKind.INTERNAL)
