"""The ``python`` backend as the server builds it: each instance's model runs in a process of
its own (a stub, :mod:`repoman_python.stub`), so the server outlives whatever the model does.

A model that exits, crashes or hangs fails only the batch it was running (a clear 500 naming
the model); its stub is started again, and the model loaded again, for the next batch. Other
models never notice. ``parameters { key: "isolation" value: { string_value: "none" } }``
runs a model in the server's process instead (no hop, no protection).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from repoman import (
    Arena,
    Backend,
    BackendContext,
    BackendError,
    Batch,
    Caller,
    ErrorKind,
    ModelCall,
    RepomanError,
    Result,
    TensorDescriptor,
    get_tensors,
    int_parameter,
    model_caller,
    time_left,
)
from repoman_python import custom_metrics, wire
from repoman_python import process as stubs
from repoman_python.backend import PythonBackend
from repoman_python.errors import rebuilt_error
from repoman_python.exchange import Exchange
from repoman_python.output import Origin
from repoman_python.pb_utils import MetricsSnapshot

log = logging.getLogger(__name__)

LOAD_TIMEOUT = 120
"""Seconds a stub may take to start and run the model's import and ``initialize``."""
EXECUTE_TIMEOUT = 60
"""Seconds one batch may take in the model's ``execute`` before its stub is killed."""
UNLOAD_GRACE = 10
"""Seconds ``finalize`` may take before the stub is killed anyway."""
ARENA_BYTES = 64 << 20
"""Each of the two arenas (inputs, outputs): virtual size; pages cost only once written."""


def default_memory_limit() -> int:
    """Half the machine's physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (OSError, ValueError):
        return 8 << 30


@dataclass(frozen=True)
class Settings:
    """A python model's isolation settings, from its config's parameters."""

    isolated: bool
    load_timeout: int
    execute_timeout: int
    memory_limit: int


def read_settings(params: Mapping[str, str]) -> Settings:
    """The settings ``params`` give (defaults where they say nothing); ValueError when one
    is not valid."""
    isolation = (params.get("isolation") or "process").strip().lower()
    if isolation not in ("process", "none"):
        raise ValueError(f"parameter isolation: expected process or none, found '{isolation}'")
    load = _seconds(params, "load_timeout_seconds", LOAD_TIMEOUT)
    execute = _seconds(params, "execute_timeout_seconds", EXECUTE_TIMEOUT)
    memory = int_parameter(params, "memory_limit_bytes", default_memory_limit())
    assert memory is not None
    return Settings(isolation == "process", load, execute, memory)


class StubDied(BackendError):
    """The model's process exited, was killed, or stopped answering."""


def _nothing() -> None:
    """Nothing to release."""


class IsolatedPythonBackend(Backend):
    """A proxy: ``load`` starts a stub and loads the model in it, ``execute`` sends each batch
    there through shared memory, ``unload`` finalizes the model and reaps the stub.

    The core awaits ``execute_async`` on its event loop (no thread waits while the model
    runs); ``execute`` is the blocking way, for warm-up and tools. One batch at a time;
    ``unload`` may come from another thread while a batch is stuck (it then kills the stub)."""

    def __init__(self, context: BackendContext) -> None:
        super().__init__(context)
        self._label = f"model '{context.config.name}' version {context.version}"
        self._local: PythonBackend | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._inputs: Arena | None = None
        self._outputs: Arena | None = None
        self._lock = threading.Lock()  # one conversation with the stub at a time
        self._restart = False  # the stub died: start it again before the next batch
        self._closed = False
        self._timeouts = (LOAD_TIMEOUT, EXECUTE_TIMEOUT)
        self._memory_limit = 0
        self._metrics: MetricsSnapshot = []  # the model's custom metrics, as last reported
        self._exchange: Exchange | None = None  # batches sent to the stub from the loop

    # ---- settings ------------------------------------------------------------------

    def _settings(self) -> Settings:
        try:
            return read_settings(self.context.config.parameters)
        except ValueError as exc:
            raise BackendError(f"{self._label}: {exc}") from None

    # ---- lifecycle -----------------------------------------------------------------

    def load(self) -> None:
        settings = self._settings()
        self._timeouts = (settings.load_timeout, settings.execute_timeout)
        self._memory_limit = settings.memory_limit
        if not settings.isolated:
            self._local = PythonBackend(self.context)
            self._local.load()
        else:
            with self._lock:
                self._start()
        custom_metrics.track(self)

    def _start(self) -> None:
        """Start a stub and load the model in it; BackendError (and no stub) on failure."""
        load_timeout: float = self._timeouts[0]
        memory = self._memory_limit
        within = f"within {load_timeout:g} s (load_timeout_seconds)"
        # NOTE: a load the manager gives up on (--model-load-timeout) must not leave its
        # stub running: the stub is bounded by what is left of the manager's deadline too.
        left = time_left()
        if left is not None and left < load_timeout:
            load_timeout = max(left, 0.001)
            within = f"within the --model-load-timeout ({left:.1f} s were left)"
        inputs = Arena.create(ARENA_BYTES, name="repoman-python-inputs")
        outputs = Arena.create(ARENA_BYTES, name="repoman-python-outputs")
        context = self.context
        origin = Origin(context.config.name, context.version, context.instance_name)
        try:
            process, ours = stubs.start(origin)
        except BaseException:
            inputs.close()
            outputs.close()
            raise
        self._process, self._sock = process, ours
        self._inputs, self._outputs = inputs, outputs
        assert inputs.fd is not None and outputs.fd is not None
        body = {
            "context": self.context,
            "input_bytes": inputs.size,
            "output_bytes": outputs.size,
            "memory_limit_bytes": memory,
        }
        try:
            ours.settimeout(load_timeout)
            wire.send(ours, ("load", body), [inputs.fd, outputs.fd])
            inputs.release_fd()
            outputs.release_fd()
            kind, detail = self._receive()
        except TimeoutError:
            self._stop(kill=True)
            raise StubDied(
                f"{self._label}: the model did not load {within}; its process was killed"
            ) from None
        except (wire.Closed, OSError) as exc:
            code = self._stop(kill=True)
            raise StubDied(f"{self._label}: loading failed: {stubs.exited(code, exc)}") from None
        if kind != "ok":
            self._stop(kill=False)
            raise rebuilt_error(detail, self._label)
        self._restart = False
        log.debug("%s: stub pid %d loaded", self._label, process.pid)

    def memory_bytes(self) -> int | None:
        """The stub process's resident set (None for a model loaded in the server's process)."""
        process = self._process
        if process is None:
            return None
        try:
            with open(f"/proc/{process.pid}/statm", "rb") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            return None

    def unload(self) -> None:
        custom_metrics.forget(self)
        if self._local is not None:
            local, self._local = self._local, None
            local.unload()
            return
        self._closed = True
        # NOTE: a batch stuck in the model holds the lock: then there is no asking nicely.
        if not self._lock.acquire(timeout=UNLOAD_GRACE):
            process = self._process
            if self._exchange is not None and self._exchange.open and process is not None:
                process.kill()  # NOTE: the loop then reads the stream's end and reaps it
            else:
                self._stop(kill=True)
            return
        try:
            if self._process is None or self._restart:
                self._stop(kill=True)
                return
            failure: RepomanError | None = None
            try:
                assert self._sock is not None
                self._sock.settimeout(UNLOAD_GRACE)
                wire.send(self._sock, ("unload", None))
                kind, detail = self._receive()
                if kind != "ok":
                    failure = rebuilt_error(detail, self._label)
            except (TimeoutError, wire.Closed, OSError) as exc:
                log.warning("%s: finalize did not finish cleanly: %s", self._label, exc)
            self._stop(kill=False)
            if failure is not None:
                raise failure
        finally:
            self._lock.release()

    def _stop(self, *, kill: bool) -> int | None:
        """Reap the stub (SIGKILL now when ``kill``, else after a grace period); its exit
        code. The arenas go with it (memfds: nothing is left in /dev/shm)."""
        process, self._process = self._process, None
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            _close_on_its_loop(exchange)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        code = None
        if process is not None:
            code = stubs.stop(process, kill=kill, grace=UNLOAD_GRACE)
        for arena in (self._inputs, self._outputs):
            if arena is not None:
                arena.close()
        self._inputs = self._outputs = None
        return code

    # ---- execute -------------------------------------------------------------------

    @property
    def runs_on_loop(self) -> bool:
        """In a stub, a batch is a message out and a reply back: the core awaits it on its
        event loop (:meth:`execute_async`) and holds no worker thread while the model runs."""
        return self._local is None

    def execute(self, batch: Batch) -> Sequence[Result]:
        """The blocking way (warm-up, tools, ``isolation: none``): the same conversation
        on this thread."""
        if self._local is not None:
            return self._local.execute(batch)
        with self._lock:
            if self._closed:
                raise BackendError(f"{self._label}: unloaded")
            if self._restart or self._process is None:
                log.warning("%s: starting its process again", self._label)
                self._start()
            return self._execute(batch)

    def execute_async(self, batch: Batch) -> asyncio.Future[Sequence[Result]]:
        """Send ``batch`` to the stub now; the future gets its results once the reply is
        read (by the loop's reader, which also starts the model's calls as they come)."""
        # NOTE: the core never runs two batches of an instance at once, so only an unload
        # that gave up waiting for a stuck batch (or a blocking execute) holds the lock. It
        # is held until the future is done, released by the future's first callback.
        if not self._lock.acquire(blocking=False):
            raise BackendError(f"{self._label}: busy or unloaded")
        try:
            if self._closed or self._restart or self._process is None:
                future = asyncio.ensure_future(self._start_then_execute(batch))
            else:
                # NOTE: released as the reply is read, before the result is set: no
                # callback (and loop iteration) of its own for it
                return self._execute_on_loop(batch, self._lock.release)
        except BaseException:
            self._lock.release()
            raise
        future.add_done_callback(lambda _: self._lock.release())
        return future

    async def _start_then_execute(self, batch: Batch) -> Sequence[Result]:
        if self._closed:
            raise BackendError(f"{self._label}: unloaded")
        log.warning("%s: starting its process again", self._label)
        await asyncio.to_thread(self._start)
        return await self._execute_on_loop(batch)

    def _message(self, batch: Batch, blocks: list[int]) -> tuple[str, dict[str, Any]]:
        """The ``execute`` message for ``batch``, its inputs put in the inputs arena (their
        blocks added to ``blocks``, to free once the stub has answered)."""
        assert self._inputs is not None
        # NOTE: a batch whose requests stack travels as one tensor per input (the stub cuts
        # it back into the requests' own rows): one descriptor to write and read, not one per
        # request.
        stacked = wire.stack(batch.requests)
        requests: list[dict[str, TensorDescriptor]] | None = None
        together: tuple[dict[str, TensorDescriptor], dict[str, list[int]]] | None = None
        if stacked is None:
            requests = [wire.put_arrays(self._inputs, r, blocks) for r in batch.requests]
        else:
            together = (wire.put_arrays(self._inputs, stacked[0], blocks), stacked[1])
        return "execute", {
            "requests": requests,
            "stacked": together,
            "output_names": batch.output_names,
            "input_names": batch.input_names,
            "batching": batch.batching,
            "request_ids": batch.request_ids,
            "request_parameters": batch.request_parameters,
            "requested_outputs": batch.requested_outputs,
        }

    def _execute(self, batch: Batch) -> Sequence[Result]:
        execute_timeout = self._timeouts[1]
        sock = self._sock
        assert sock is not None and self._inputs is not None and self._outputs is not None
        blocks: list[int] = []
        calls = _Calls(
            lambda message: wire.send(sock, message), model_caller(), self._inputs, self._outputs
        )
        try:
            message = self._message(batch, blocks)
            sock.settimeout(execute_timeout)
            wire.send(sock, message)
            # NOTE: this thread only waits on the socket while the model runs; a call it
            # makes (BLS) is started here and answered from the event loop when done.
            kind, detail = self._receive()
            while kind == "call":
                calls.start(detail)
                kind, detail = self._receive()
        except TimeoutError:
            self._stop(kill=True)
            self._restart = True
            raise self._timed_out() from None
        except (wire.Closed, OSError) as exc:
            code = self._stop(kill=True)
            self._restart = True
            raise self._died(code, exc) from None
        finally:
            calls.close()
            self._free(blocks)
        return self._results(kind, detail)

    def _execute_on_loop(
        self, batch: Batch, release: Callable[[], None] = _nothing
    ) -> asyncio.Future[Sequence[Result]]:
        """:meth:`_execute` without a thread: the message goes out now, and the reply (and
        the model's calls before it) come back through the loop's reader on the socket.
        ``release`` is called once the stub is done with the batch, before its future is
        settled (or raises, if it raises)."""
        assert self._sock is not None and self._inputs is not None and self._outputs is not None
        loop = asyncio.get_running_loop()
        results: asyncio.Future[Sequence[Result]] = loop.create_future()
        blocks: list[int] = []
        try:
            message = self._message(batch, blocks)
        except Exception as exc:
            self._free(blocks)
            release()
            results.set_exception(exc)
            return results
        exchange = self._exchange
        if exchange is None or exchange.sock is not self._sock or exchange.loop is not loop:
            if exchange is not None:
                _close_on_its_loop(exchange)
            exchange = self._exchange = Exchange(self._sock, timeout=self._timeouts[1], loop=loop)
        # NOTE: made at a batch's first call (few batches make any), through the door the
        # scheduler opened for this batch (taken now: the calls arrive in another callback)
        caller = model_caller()
        calls: _Calls | None = None

        def called(body: Any) -> None:
            nonlocal calls
            if calls is None:
                calls = _Calls(exchange.send, caller, self._inputs, self._outputs)
            calls.start(body)

        def replied(outcome: tuple[Any, ...] | BaseException) -> None:
            if calls is not None:
                calls.close()
            self._free(blocks)
            if isinstance(outcome, BaseException):
                # NOTE: reaping the stub waits for it: on a thread, then the batch fails.
                lost = asyncio.ensure_future(self._lost(outcome))

                def reaped(done: asyncio.Future[Sequence[Result]]) -> None:
                    release()
                    _settle_from(results, done)

                lost.add_done_callback(reaped)
                return
            release()
            kind, detail, *rest = outcome
            if rest and isinstance(rest[0], list):
                self._metrics = rest[0]
            try:
                results.set_result(self._results(kind, detail))
            except Exception as exc:
                results.set_exception(exc)

        exchange.start(message, replied, called)
        return results

    async def _lost(self, why: BaseException) -> Sequence[Result]:
        """The exchange failed: the stub is killed and reaped, started again for the next
        batch, and this batch fails saying why."""
        code = await asyncio.to_thread(self._stop, kill=True)
        self._restart = True
        if isinstance(why, TimeoutError):
            raise self._timed_out()
        if isinstance(why, wire.Closed | OSError):
            raise self._died(code, why)
        raise why  # NOTE: an unreadable reply: the stub's stream is lost too

    def _free(self, blocks: list[int]) -> None:
        if self._inputs is not None:
            for offset in blocks:
                self._inputs.free(offset)

    def _results(self, kind: str, detail: Any) -> Sequence[Result]:
        if kind == "stacked":
            # NOTE: every response's outputs in one tensor per output, copied out once.
            descriptors, rows = detail
            return wire.unstack(self._copied(descriptors), rows)
        if kind != "ok":
            raise rebuilt_error(detail, self._label)
        return [self._result(item) for item in detail]

    def _timed_out(self) -> StubDied:
        return StubDied(
            f"{self._label}: execute did not return within {self._timeouts[1]:g} s "
            "(execute_timeout_seconds); its process was killed and is started again "
            "for the next batch"
        )

    def _died(self, code: int | None, exc: BaseException) -> StubDied:
        return StubDied(
            f"{self._label}: {stubs.exited(code, exc)} while executing a batch; it is "
            "started again for the next batch"
        )

    def _result(self, item: tuple[str, Any]) -> Result:
        kind, detail = item
        if kind == "error":
            return rebuilt_error(detail, self._label)
        return self._copied(detail)

    def _copied(self, descriptors: Mapping[str, TensorDescriptor]) -> dict[str, np.ndarray]:
        """The stub's outputs, copied out of its arena: it reuses the blocks once it gets the
        next message (an output that came inline in the message is the server's already)."""
        assert self._outputs is not None
        arrays = get_tensors(self._outputs, descriptors)
        for name, descriptor in descriptors.items():
            if descriptor[2] is not None:
                arrays[name] = np.array(arrays[name], copy=True)
        return arrays

    def _receive(self) -> tuple[str, Any]:
        assert self._sock is not None
        message, _ = wire.receive(self._sock, trusted=False)
        kind, detail, *rest = message
        if rest and isinstance(rest[0], list):
            self._metrics = rest[0]
        return kind, detail

    def metrics_snapshot(self) -> MetricsSnapshot:
        """The model's custom metrics: the latest values its stub sent (read in place when
        the model runs in the server's process)."""
        local = self._local
        if local is not None:
            return local.metrics_snapshot()
        return self._metrics


class _Calls:
    """The calls a stub's model makes during one ``execute`` (BLS), on the server's side.

    Each ``call`` message (from untrusted plain data) becomes a ModelCall through the door
    the scheduler opened for the batch (``model_caller()`` where it is built); its answer
    goes back to the stub through ``send`` from the thread that settles it (the event loop),
    its outputs in the inputs arena. Once the batch returns (:meth:`close`) nothing more is
    sent and the answers' blocks are freed.
    """

    def __init__(
        self, send: Callable[[Any], None], caller: Caller | None, inputs: Arena, outputs: Arena
    ) -> None:
        self._send, self._inputs, self._outputs = send, inputs, outputs
        self._caller = caller
        self._lock = threading.Lock()
        self._blocks: list[int] = []
        self._closed = False

    def start(self, body: Any) -> None:
        tag = body.get("tag") if isinstance(body, dict) else None
        try:
            call = self._read(body)
            if self._caller is None:
                raise BackendError("models can be called only from within execute")
            running = self._caller(call)
        except Exception as exc:
            self._answer_error(tag, exc)
            return
        running.add_done_callback(lambda done: self._answer(tag, done))

    def _read(self, body: Any) -> ModelCall:
        """The call ``body`` describes; its inputs copied out of the stub's arena (the stub
        frees them once answered; the member may run later)."""
        try:
            inputs = {
                str(name): np.array(array, copy=True)
                for name, array in get_tensors(self._outputs, body["inputs"]).items()
            }
            version = body["version"]
            timeout = body["timeout_us"]
            if not (version is None or type(version) is int) or type(timeout) is not int:
                raise TypeError("version and timeout_us must be integers")
            parameters = body["parameters"]
            if not isinstance(parameters, dict):
                raise TypeError("parameters must be a dict")
            return ModelCall(
                model=str(body["model"]),
                inputs=inputs,
                outputs=tuple(str(name) for name in body["outputs"]),
                version=version,
                request_id=str(body["request_id"]),
                parameters=parameters,
                timeout_us=max(timeout, 0),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise BackendError(f"an unreadable call from the model: {exc}") from None

    def _answer(self, tag: Any, done: Future[Mapping[str, np.ndarray]]) -> None:
        error = done.exception()
        if error is not None:
            self._answer_error(tag, error)
            return
        with self._lock:
            if self._closed:
                return
            try:
                descriptors = wire.put_arrays(self._inputs, dict(done.result()), self._blocks)
                self._send(("answer", tag, "outputs", descriptors))
            except (OSError, ValueError) as exc:
                log.debug("answering a call failed: %s", exc)  # NOTE: the stub is gone

    def _answer_error(self, tag: Any, error: BaseException) -> None:
        kind = error.kind if isinstance(error, RepomanError) else ErrorKind.INTERNAL
        with self._lock:
            if self._closed:
                return
            try:
                self._send(("answer", tag, "error", (str(error), int(kind))))
            except OSError as exc:
                log.debug("answering a call failed: %s", exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            # NOTE: the sender holds the exchange, which holds this: a cycle per batch otherwise
            self._send = _nowhere
            blocks, self._blocks = self._blocks, []
        for offset in blocks:
            self._inputs.free(offset)


def _nowhere(message: Any) -> None:
    """Where a closed exchange's answers go: nowhere (it sends none)."""


def _close_on_its_loop(exchange: Exchange) -> None:
    """``exchange.close()``, on its loop (from any thread; at once where the loop is closed)."""
    loop = exchange.loop
    try:
        if asyncio.get_running_loop() is loop:
            exchange.close()
            return
    except RuntimeError:
        pass  # NOTE: no loop runs on this thread
    try:
        loop.call_soon_threadsafe(exchange.close)
    except RuntimeError:  # NOTE: its loop is closed: nothing reads for it any more
        exchange.close()


def _seconds(params: Mapping[str, str], name: str, default: int) -> int:
    value = int_parameter(params, name, default)
    assert value is not None
    if value == 0:
        raise ValueError(f"parameter {name}: expected an integer > 0, found 0")
    return value


def _settle_from(target: asyncio.Future[Any], done: asyncio.Future[Any]) -> None:
    """``target`` ends as ``done`` did."""
    if done.cancelled():
        target.cancel()
        return
    error = done.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(done.result())
