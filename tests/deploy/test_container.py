"""The container: the Dockerfile's contract (read from the file), repoman as PID 1 of a PID
namespace stopping cleanly on SIGTERM, and, where a container engine works, the image built and
serving the bundled repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.deploy.kube import one
from tests.serverproc import ROOT, start_command

DOCKERFILE = ROOT / "Dockerfile"
GRACE_PERIOD = 30
"""Kubernetes' default terminationGracePeriodSeconds."""
STOP_PHASES = 3
"""How many waits of --shutdown-timeout a stop can take: in-flight requests, draining, unloading."""


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def last(instruction: str) -> str:
    return [rest for word, rest in instructions() if word == instruction][-1]


def flag(args: list[str], name: str) -> str:
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.partition("=")[2]
    raise AssertionError(f"{name} not in {args}")


def local(args: list[str], *, repository: Path, port: int = 0) -> list[str]:
    """The image's CMD for a run here: loopback, the port given, ``repository`` for /mnt/models."""
    values = {"--host": "127.0.0.1", "--http-port": str(port), "--model-repository": str(repository)}
    out: list[str] = []
    for arg in args:
        name, equals, _ = arg.partition("=")
        if equals and name in values:
            out.append(f"{name}={values[name]}")
        elif out and out[-1] in values:
            out.append(values[out[-1]])
        else:
            out.append(arg)
    return out


def test_the_dockerfile_keeps_its_contract() -> None:
    assert [w for w, _ in instructions()].count("FROM") >= 2, "multi-stage"
    assert json.loads(last("ENTRYPOINT")) == ["repoman"]
    cmd = json.loads(last("CMD"))
    assert cmd[0] == "serve" and flag(cmd, "--model-repository") == "/mnt/models"
    port = flag(cmd, "--http-port")
    assert flag(cmd, "--host") == "0.0.0.0"
    assert port in last("EXPOSE").split() and "8001" in last("EXPOSE").split()
    user = last("USER").split(":")[0]
    assert user not in ("0", "root")
    assert last("STOPSIGNAL") == "SIGTERM"
    assert f"http://127.0.0.1:{port}/v2/health/ready" in last("HEALTHCHECK")
    assert float(flag(cmd, "--shutdown-timeout")) * STOP_PHASES < GRACE_PERIOD
    # the runtimes run the image as the user it was built for, and stop in time too
    for runtime in ("repoman", "repoman-multimodel"):
        [container] = one("ClusterServingRuntime", runtime).body["spec"]["containers"]
        assert str(container["securityContext"]["runAsUser"]) == user
        timeout = float(flag(container["args"], "--shutdown-timeout"))
        assert timeout * STOP_PHASES < GRACE_PERIOD


def test_as_pid_1_repoman_stops_on_sigterm_and_exits_0(tmp_path) -> None:
    # NOTE: PID 1 of a namespace gets no signal it has no handler for (the kernel drops it):
    # this is what `docker run` / Kubernetes do to the image's entrypoint.
    if shutil.which("unshare") is None:
        pytest.skip("no `unshare` (util-linux) to make a PID namespace")
    probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here: {probe.stderr.strip()}")
    args = local(json.loads(last("CMD")), repository=ROOT / "model_repository")
    server = start_command(["unshare", "--pid", "--fork", sys.executable, "-m", "repoman", *args])
    try:
        [child] = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
        nspid = re.search(r"^NSpid:\s+(.*)$", Path(f"/proc/{child}/status").read_text(), re.M)
        assert nspid and nspid.group(1).split()[-1] == "1", "repoman is not PID 1 in its namespace"
        assert server.get("/v2/models/digits/ready")[0] == 200
        started = time.monotonic()
        os.kill(int(child), signal.SIGTERM)  # NOTE: to repoman itself, not to unshare
        code = server.process.wait(GRACE_PERIOD)
        assert code == 0, server.log()
        assert time.monotonic() - started < GRACE_PERIOD
    finally:
        server.stop()


def engine() -> str:
    """A container engine that can build and run here, or skip saying what is missing."""
    reasons = []
    [default] = [rest for word, rest in instructions() if rest.startswith("PYTHON_IMAGE=")]
    base = os.environ.get("REPOMAN_TEST_BASE_IMAGE") or default.partition("=")[2]
    for name in ("podman", "docker"):
        if shutil.which(name) is None:
            reasons.append(f"no {name}")
            continue
        info = subprocess.run([name, "info"], capture_output=True, text=True, timeout=60)
        if info.returncode != 0:
            reasons.append(f"{name} info: {info.stderr.strip().splitlines()[-1:]}")
            continue
        have = subprocess.run([name, "image", "inspect", base], capture_output=True, timeout=60)
        if have.returncode != 0:
            pull = subprocess.run([name, "pull", base], capture_output=True, text=True, timeout=180)
            if pull.returncode != 0:
                reasons.append(f"{name}: no base image {base} and it cannot be pulled "
                               f"({pull.stderr.strip().splitlines()[-1:]})")
                continue
        trial = subprocess.run([name, "run", "--rm", base, "true"], capture_output=True,
                               text=True, timeout=120)
        if trial.returncode != 0:
            reasons.append(f"{name} cannot run a container here "
                           f"({trial.stderr.strip().splitlines()[-1:]})")
            continue
        return name
    pytest.skip("no working container engine: " + "; ".join(reasons))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_image_serves_the_bundled_repository_and_stops_with_exit_0() -> None:
    tool = engine()
    tag = "localhost/repoman-test:latest"
    build = [tool, "build", "--network", "host", "-t", tag]
    if os.environ.get("REPOMAN_TEST_BASE_IMAGE"):
        build += ["--build-arg", f"PYTHON_IMAGE={os.environ['REPOMAN_TEST_BASE_IMAGE']}"]
    built = subprocess.run([*build, str(ROOT)], capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    port = free_port()
    name = f"repoman-test-{port}"
    run = [tool, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000",
           "-v", f"{ROOT / 'model_repository'}:/mnt/models:ro", tag]
    started = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/v2/health/ready", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the container never became ready"
            time.sleep(0.2)
        request = urllib.request.Request(
            url + "/v2/models/digits/infer", method="POST",
            data=(ROOT / "examples" / "digits_request.json").read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        assert next(o for o in answer["outputs"] if o["name"] == "label")["data"] == [0]
        stopped = subprocess.run([tool, "stop", "-t", str(GRACE_PERIOD), name],
                                 capture_output=True, text=True, timeout=GRACE_PERIOD + 30)
        assert stopped.returncode == 0, stopped.stderr
        code = subprocess.run([tool, "inspect", "-f", "{{.State.ExitCode}}", name],
                              capture_output=True, text=True, timeout=60).stdout.strip()
        assert code == "0", subprocess.run([tool, "logs", name], capture_output=True, text=True).stdout
    finally:
        subprocess.run([tool, "rm", "-f", name], capture_output=True, timeout=60)
