"""Starting and reaping stub processes (``python -m repoman_python.stub``), for a model
instance and for describing a model file alike: one socket each, output into the server log."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import TypeVar

from repoman_python import output

FD_VARIABLE = "REPOMAN_STUB_FD"
LOG_LEVEL_VARIABLE = "REPOMAN_STUB_LOG_LEVEL"
STOP_GRACE = 10
"""Seconds a stub asked to finish (or whose socket closed) may take to exit before SIGKILL."""

T = TypeVar("T")

# NOTE: PR_SET_PDEATHSIG signals a stub when the *thread* that started it exits; the core's
# worker threads can be retired, so every stub is started from this one thread, which lives
# as long as the server.
_spawner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="repoman-stub-spawner")


def _on_spawner(call: Callable[[], T]) -> T:
    return _spawner.submit(call).result()


def start(origin: output.Origin) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """A new stub and the server's end of its socket; what it writes goes to the log as
    ``origin``'s."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    env = dict(os.environ)
    env[FD_VARIABLE] = str(theirs.fileno())
    env[LOG_LEVEL_VARIABLE] = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    # NOTE: the stub imports exactly what the server imports (plugins dirs included).
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    command = [sys.executable, "-m", "repoman_python.stub"]
    try:
        process = _on_spawner(
            lambda: subprocess.Popen(
                command,
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # NOTE: a session (and process group) of its own: a terminal's Ctrl-C
                # (SIGINT to the server's group) reaches the server only, whose orderly
                # stop runs each model's finalize. The stub still dies with the server
                # (PR_SET_PDEATHSIG and its parent watch), however the server ends.
                start_new_session=True,
            )
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    assert process.stdout is not None and process.stderr is not None
    output.forward(process.stdout, origin, logging.INFO)
    output.forward(process.stderr, origin, logging.WARNING)
    return process, ours


def stop(process: subprocess.Popen[bytes], *, kill: bool, grace: float = STOP_GRACE) -> int:
    """Reap ``process`` (SIGKILL now when ``kill``, else after ``grace`` seconds); its exit
    code (negative: the signal that ended it)."""
    if kill:
        process.kill()
    try:
        return process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def exited(code: int | None, exc: BaseException) -> str:
    """How a stub ended, in words: ``code`` from :func:`stop`, None when still unknown."""
    if code is None:
        return f"its process stopped answering ({exc})"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"its process was killed by {name}"
    return f"its process exited with {code}"
