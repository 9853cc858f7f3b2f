"""The process one python model instance runs in: ``python -m repoman_python.stub``.

Started by :class:`repoman_python.isolated.IsolatedPythonBackend`, which hands it one end of
a socketpair (its number in ``REPOMAN_STUB_FD``) and then, in the first message, the model's
BackendContext and two memfd arenas: inputs (the server writes) and outputs (the stub
writes). Or started by :mod:`repoman_python.describe`, whose first message asks it to
describe a model file: it then reports each step, answers with the signature, and exits.
Whatever it logs or prints reaches the server's log as the model's (:mod:`.output`).
The model itself is served by the in-process :class:`PythonBackend`, unchanged, so every
message a model's mistakes produce is the same in both modes. The stub answers one
message at a time, dies with the server (PR_SET_PDEATHSIG, and a watch on its parent), and
exits after ``unload`` or when the server closes its end. Each reply to ``load`` and
``execute`` carries the current values of the model's custom metrics (pb_utils.MetricFamily).

While ``execute`` runs, the model may call models (BLS): each call goes to the server as a
``call`` message (its inputs in the outputs arena) and its ``answer`` comes back (outputs in
the inputs arena), in any order; a reader thread takes the answers as they come, so many
calls can be in flight (``async_exec``) and ``execute`` just waits on its own.
"""

from __future__ import annotations

import ctypes
import faulthandler
import itertools
import logging
import os
import queue
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from repoman import (
    Arena,
    BackendContext,
    Batch,
    ErrorKind,
    ModelCall,
    RepomanError,
    TensorDescriptor,
    get_tensors,
)
from repoman_python import output, pb_utils, wire
from repoman_python.backend import PythonBackend, read_signature
from repoman_python.describe import as_plain
from repoman_python.errors import error_info
from repoman_python.process import FD_VARIABLE, LOG_LEVEL_VARIABLE

log = logging.getLogger("repoman_python.stub")


def die_with_parent() -> None:
    """SIGKILL when the server exits, however it exits (Linux); a watch thread as a backstop."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    # NOTE: PR_SET_PDEATHSIG fires when the parent *thread* that forked us exits; the server
    # forks from one long-lived thread, and this watch covers what the kernel call cannot.
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    if parent == 1:
        os._exit(1)
    threading.Thread(target=watch, name="stub-parent-watch", daemon=True).start()


def limit_memory(limit: int) -> None:
    """Cap the stub's private memory (RLIMIT_DATA: heap and private mappings; the shared
    arenas do not count), so a model that grows without bound gets MemoryError."""
    if limit > 0:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


class Stub:
    """The model side of the conversation: load once, execute batches, unload, exit."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.backend: PythonBackend | None = None
        self.inputs: Arena | None = None
        self.outputs: Arena | None = None
        self.output_blocks: list[int] = []
        self._send_lock = threading.Lock()  # the model's calls and the replies share the socket
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        """Reads the socket once a model made a call during execute (BLS); until then the
        main thread reads it itself, which saves a thread wake-up per batch."""
        self._executing = False
        self._tags = itertools.count(1)
        self._calls: dict[int, tuple[Future[Mapping[str, np.ndarray]], list[int]]] = {}

    def send(self, message: Any) -> None:
        with self._send_lock:
            wire.send(self.sock, message)

    def serve(self) -> int:
        message, fds = wire.receive(self.sock, trusted=True, with_fds=2)
        kind, body = message
        if kind == "describe":
            return self._describe(body)
        assert kind == "load" and len(fds) == 2, "the first message loads or describes"
        self.inputs = Arena.attach(fds[0], body["input_bytes"])
        self.outputs = Arena.attach(fds[1], body["output_bytes"])
        limit_memory(body["memory_limit_bytes"])
        context: BackendContext = body["context"]
        self.backend = PythonBackend(context)
        if not self._reply(self.backend.load):
            return 1
        while True:
            message = self._next()
            if message is None:
                return 0
            kind, body = message
            if kind == "execute":
                self._release_outputs()
                self.backend.caller = self.call
                self._executing = True
                try:
                    reply = self._execute(body)
                finally:
                    with self._send_lock:
                        self._executing = False
                    self.backend.caller = None
                    self._abandon_calls()
                self.send((*reply, _metrics()))
            elif kind == "unload":
                self._reply(self.backend.unload)
                return 0
            else:
                raise ValueError(f"unknown message {kind!r}")

    def _next(self) -> Any:
        """The next message for the main loop (None: the server closed its end): read here
        while no reader thread runs."""
        if self._reader is not None:
            return self._inbox.get()
        return self._receive()

    def _read(self) -> None:
        """The reader thread: every message for the main loop goes to its inbox, until the
        server closes its end (None)."""
        while (message := self._receive()) is not None:
            self._inbox.put(message)
        self._inbox.put(None)

    def _receive(self) -> Any:
        """The next message that is not an answer to a call (those settle their call on the
        way; one may come for a call abandoned when its execute returned); None once the
        server closed its end."""
        try:
            while True:
                message, _ = wire.receive(self.sock, trusted=True)
                if message[0] != "answer":
                    return message
                self._answered(*message[1:])
        except (wire.Closed, OSError):
            return None

    # ---- calls to models (BLS) -------------------------------------------------------

    def call(self, call: ModelCall) -> Future[Mapping[str, np.ndarray]]:
        """Send ``call`` to the server (any thread, while execute runs); the future gets the
        outputs, or the RepomanError the server answered with."""
        assert self.outputs is not None
        future: Future[Mapping[str, np.ndarray]] = Future()
        blocks: list[int] = []
        arrays = {name: _as_bytes(np.asarray(array)) for name, array in call.inputs.items()}
        with self._send_lock:
            if self._executing and self._reader is None:
                # NOTE: the main thread runs the model and waits for this answer: from now
                # on a thread of its own reads the socket (the main thread reads no more).
                self._reader = threading.Thread(target=self._read, name="stub-reader", daemon=True)
                self._reader.start()
            tag = next(self._tags)
            descriptors = wire.put_arrays(self.outputs, arrays, blocks)
            self._calls[tag] = (future, blocks)
            body = {
                "tag": tag,
                "model": call.model,
                "version": call.version,
                "inputs": descriptors,
                "outputs": list(call.outputs),
                "request_id": call.request_id,
                "parameters": dict(call.parameters),
                "timeout_us": call.timeout_us,
            }
            wire.send(self.sock, ("call", body))
        return future

    def _answered(self, tag: int, kind: str, detail: Any) -> None:
        with self._send_lock:
            entry = self._calls.pop(tag, None)
        if entry is None:
            return  # NOTE: a call abandoned when its execute returned; its blocks are gone
        future, blocks = entry
        assert self.outputs is not None and self.inputs is not None
        # NOTE: the server copied the inputs when the call arrived, before it answered.
        for offset in blocks:
            self.outputs.free(offset)
        if kind == "outputs":
            # NOTE: copied: the server frees the answer's blocks once execute returns.
            arrays = {
                n: np.array(a, copy=True) for n, a in get_tensors(self.inputs, detail).items()
            }
            future.set_result(arrays)
        else:
            message, code = detail
            future.set_exception(RepomanError(message, ErrorKind(code)))

    def _abandon_calls(self) -> None:
        """execute returned with calls unanswered: their answers are dropped, and their
        input blocks freed with the next batch's (the server may not have read them yet)."""
        with self._send_lock:
            calls, self._calls = self._calls, {}
        for future, blocks in calls.values():
            self.output_blocks.extend(blocks)
            future.set_exception(RepomanError("the call was abandoned: execute returned"))

    def _describe(self, body: dict[str, Any]) -> int:
        """Describe a model file (its ``auto_complete_config``), answer, exit."""
        limit_memory(body["memory_limit_bytes"])

        def on_step(step: str) -> None:
            wire.send(self.sock, ("step", step))

        try:
            signature = read_signature(Path(body["model_path"]), body["parameters"], on_step)
        except Exception as exc:
            wire.send(self.sock, ("error", error_info(exc)))
            return 1
        wire.send(self.sock, ("ok", as_plain(signature)))
        return 0

    def _reply(self, step: Any) -> bool:
        try:
            step()
        except Exception as exc:
            self.send(("error", error_info(exc), _metrics()))
            return False
        self.send(("ok", None, _metrics()))
        return True

    def _execute(self, body: dict[str, Any]) -> tuple[str, Any]:
        assert self.backend is not None and self.inputs is not None
        if body["stacked"] is not None:
            descriptors, rows = body["stacked"]
            requests = wire.unstack(get_tensors(self.inputs, descriptors), rows)
        else:
            requests = [get_tensors(self.inputs, request) for request in body["requests"]]
        batch = Batch(
            requests,
            tuple(body["output_names"]),
            tuple(body["input_names"]),
            body["batching"],
            request_ids=body.get("request_ids"),
            request_parameters=body.get("request_parameters"),
            requested_outputs=body.get("requested_outputs"),
        )
        try:
            results = self.backend.execute(batch)
        except Exception as exc:
            return "error", error_info(exc)
        # NOTE: responses that stack go back as one tensor per output (the server cuts it
        # into each response's rows); one with an error, or outputs that differ, go one by one.
        stacked = wire.stack(results)
        if stacked is None:
            return "ok", [self._result(result) for result in results]
        arrays, rows = stacked
        return "stacked", (self._put({n: _as_bytes(a) for n, a in arrays.items()}), rows)

    def _result(self, result: Any) -> tuple[str, Any]:
        if isinstance(result, Exception):
            return "error", error_info(result)
        return "outputs", self._put({name: _as_bytes(array) for name, array in result.items()})

    def _put(self, arrays: Mapping[str, np.ndarray]) -> dict[str, TensorDescriptor]:
        """Outputs written for the server (their blocks freed when the next message comes)."""
        assert self.outputs is not None
        with self._send_lock:  # NOTE: the blocks list is shared with abandoned calls' blocks
            return wire.put_arrays(self.outputs, arrays, self.output_blocks)

    def _release_outputs(self) -> None:
        """The server copied the last batch's outputs out before sending this message."""
        assert self.outputs is not None
        for offset in self.output_blocks:
            self.outputs.free(offset)
        self.output_blocks.clear()


def _metrics() -> pb_utils.MetricsSnapshot:
    """The model's custom metrics, sent with each load and execute reply (small: a few
    numbers per metric); the server keeps the latest for /metrics."""
    return pb_utils._metrics_snapshot()


def _as_bytes(array: np.ndarray) -> np.ndarray:
    """A BYTES output may hold str (the server encodes them as UTF-8): encode them here."""
    if array.dtype != object:
        return array
    encoded = np.empty(array.shape, dtype=object)
    encoded.reshape(-1)[:] = [v.encode() if isinstance(v, str) else v for v in array.reshape(-1)]
    return encoded


def main() -> int:
    die_with_parent()
    output.capture(os.environ.get(LOG_LEVEL_VARIABLE, "INFO"))
    # NOTE: a crash (SIGSEGV, SIGABRT ...) writes the model's Python stack to stderr, which
    # the server logs as the model's before it reports the crash.
    faulthandler.enable(file=sys.__stderr__)
    sock = socket.socket(fileno=int(os.environ[FD_VARIABLE]))
    try:
        return Stub(sock).serve()
    except (wire.Closed, BrokenPipeError, ConnectionResetError):
        return 0


if __name__ == "__main__":
    sys.exit(main())
