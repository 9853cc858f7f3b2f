"""A ``repoman serve`` subprocess for tuning: explicit mode, loopback, a free port."""

from __future__ import annotations

import collections
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from repoman.errors import RepomanError

_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
STOP_TIMEOUT_S = 30.0


class TuningServer:
    """The server the candidate configs are loaded into, one at a time, through the repository API.

    It runs in its own process so the load generator (this process) and the server never share
    a GIL or an event loop: what is measured is what ``repoman serve`` does. Explicit model
    control means only the tuner's load requests change what is served; the model files are
    read from the repository as they are. Its repository API takes a random ``token`` made
    for it alone (sent through the environment: a command line is visible to every user),
    so no other process on the machine can load configs into it.
    """

    def __init__(
        self,
        repository: Path,
        model: str,
        *,
        plugins_dir: Path | None = None,
        num_batch_threads: int | None = None,
    ) -> None:
        cmd = [sys.executable, "-m", "repoman", "serve", "--model-repository", str(repository)]
        cmd += ["--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "-1"]
        cmd += ["--model-control-mode", "explicit"]
        cmd += ["--load-model", model, "--shutdown-timeout", "5"]
        if plugins_dir is not None:
            cmd += ["--plugins-dir", str(plugins_dir)]
        if num_batch_threads:
            cmd += ["--num-batch-threads", str(num_batch_threads)]
        self.port: int | None = None
        self.token = secrets.token_urlsafe(32)
        self._tail: collections.deque[str] = collections.deque(maxlen=30)
        self._process = subprocess.Popen(
            cmd,
            env={**os.environ, "REPOMAN_CONTROL_TOKEN": self.token},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the tuner, which stops the server itself
        )
        self._listening = threading.Event()
        threading.Thread(target=self._read, daemon=True, name="tune-server-log").start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._tail.append(line.rstrip())
            match = _LISTENING.search(line)
            if match and self.port is None:
                self.port = int(match.group(1))
                self._listening.set()
        self._listening.set()

    def wait_listening(self, timeout: float) -> None:
        """Wait for the port; RepomanError with the server's last lines if it never comes."""
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.1):
            if time.monotonic() > deadline:
                break
        if self.port is None:
            self.stop()
            raise RepomanError(f"the tuning server did not start:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(f"  | {line}" for line in self._tail)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
