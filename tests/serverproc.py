"""Start the real `repoman serve` in a subprocess on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_LISTENING = re.compile(r"listening on http://(?P<host>[^ ]+):(?P<port>\d+)")
_LISTENING_GRPC = re.compile(r"listening on grpc://(?P<host>[^ ]+):(?P<port>\d+)")


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    host: str = ""
    port: int = 0
    grpc_port: int = 0
    """The gRPC port (0: not serving gRPC)."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """``host:port`` as tritonclient wants it."""
        return f"{self.host}:{self.port}"

    @property
    def grpc_address(self) -> str:
        """``host:port`` of the gRPC listener, as tritonclient.grpc wants it."""
        assert self.grpc_port, "this server does not serve gRPC:\n" + self.log()
        return f"{self.host}:{self.grpc_port}"

    def log(self) -> str:
        return "\n".join(self.lines)

    def get(self, path: str) -> tuple[int, dict]:
        return self.request("GET", path)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            status = exc.code
        return status, (json.loads(raw) if raw else {})

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"repoman did not stop within {timeout}s of SIGTERM:\n{self.log()}"
            ) from None


def start_server(
    repository: Path,
    *args: str,
    ready: bool = True,
    timeout: float = 90,
    env: dict[str, str] | None = None,
    launcher: Sequence[str] = (sys.executable, "-m", "repoman"),
    cwd: Path = ROOT,
    new_session: bool = False,
) -> ServerProcess:
    """Run ``repoman serve`` on 127.0.0.1 with a port the OS picks; wait until it listens (and is ready).

    ``launcher`` is the command that stands for ``repoman`` (another environment's script, say).
    ``new_session``: the server leads a process group of its own (as in a terminal), so a
    test can signal that group without signalling itself.
    """
    command = [
        *launcher,
        "serve",
        "--model-repository",
        str(repository),
        "--host",
        "127.0.0.1",
        "--http-port",
        "0",
        *args,
    ]
    if "--grpc-port" not in args:
        command += ["--grpc-port", "0"]
    # NOTE: REPOMAN_TEST_HTTP_WORKERS=N runs every test server with N front-end processes:
    # the whole end-to-end suite then checks that front-ends change nothing a client sees.
    workers = os.environ.get("REPOMAN_TEST_HTTP_WORKERS")
    if workers and "--http-workers" not in args:
        command += ["--http-workers", workers]
    return start_command(
        command, ready=ready, timeout=timeout, env=env, cwd=cwd, new_session=new_session
    )


def start_command(
    command: Sequence[str],
    *,
    ready: bool = True,
    timeout: float = 90,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    new_session: bool = False,
) -> ServerProcess:
    """Run exactly ``command`` (a ``repoman serve`` whose port the log's 'listening on' line
    gives); wait until it listens (and is ready)."""
    process = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        start_new_session=new_session,
    )
    server = ServerProcess(process)
    found = threading.Event()

    def reader() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.lines.append(line.rstrip("\n"))
            grpc_match = _LISTENING_GRPC.search(line)
            if grpc_match and not server.grpc_port:
                server.grpc_port = int(grpc_match["port"])
            match = _LISTENING.search(line)
            if match and not found.is_set():
                server.host, server.port = match["host"], int(match["port"])
                found.set()
        found.set()

    threading.Thread(target=reader, daemon=True).start()
    if not found.wait(timeout) or not server.port:
        server.stop()
        raise AssertionError("repoman did not start listening:\n" + server.log())
    if ready:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _ = server.get("/v2/health/ready")
            if status == 200:
                break
            if process.poll() is not None:
                raise AssertionError("repoman exited:\n" + server.log())
            time.sleep(0.05)
        else:
            server.stop()
            raise AssertionError("repoman did not become ready:\n" + server.log())
    return server
