"""Start the real reward service as a subprocess, for any test that needs one.

    from tests.support.servers import serving
    with serving(workers=2, env={"REWARD_API_TOKEN": "t"}) as server:
        httpx.post(server.url + "/v1/score", ...)

The server listens on 127.0.0.1 on a free port; ``start_server`` returns once GET /readyz answers
200 (every worker can score), and raises with the server's log when it does not come up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunningServer:
    url: str
    port: int
    workers: int
    process: subprocess.Popen
    log_path: Path
    token: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def free_port() -> int:
    """A port nothing listens on now (the OS picks it; a tiny race with other programs remains)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    workers: int = 1, env: Mapping[str, str] | None = None, token: str | None = None, timeout: float = 60.0,
    port: int | None = None,
) -> RunningServer:
    """The service in its own process group, ready. ``port``: a given one (a restart on the same
    address, as a trainer sees it), else a free one."""
    port = free_port() if port is None else port
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("REWARD_API_")}
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the server makes a private one
    full_env.update(env or {})
    if token is not None:
        full_env["REWARD_API_TOKEN"] = token
    full_env.setdefault("OMP_NUM_THREADS", "1")
    log_file = tempfile.NamedTemporaryFile(prefix="reward_api_", suffix=".log", delete=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "services.reward_api", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)],
        cwd=REPO_ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT,
        start_new_session=True,  # stop_server signals the whole group: uvicorn and its workers
    )
    log_file.close()
    server = RunningServer(f"http://127.0.0.1:{port}", port, workers, process, Path(log_file.name), token,
                           dict(env or {}))
    try:
        _wait_ready(server, timeout)
    except BaseException:
        stop_server(server)
        raise
    return server


def _wait_ready(server: RunningServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"reward service exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"reward service not ready after {timeout} s:\n{server.log()}")


def stop_server(server: RunningServer, timeout: float = 15.0) -> int | None:
    """SIGTERM (uvicorn shuts down gracefully), then SIGKILL if it lingers. Returns the exit code."""
    process = server.process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    try:
        server.log_path.unlink()
    except FileNotFoundError:
        pass
    return process.returncode


@contextmanager
def serving(workers: int = 1, env: Mapping[str, str] | None = None, token: str | None = None,
            timeout: float = 60.0) -> Iterator[RunningServer]:
    server = start_server(workers, env, token, timeout)
    try:
        yield server
    finally:
        stop_server(server)
