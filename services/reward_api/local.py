"""Run the service as a local subprocess: for `make demo`, the tests, the benchmarks and the GPU scripts.

    from services.reward_api.local import LocalService
    with LocalService.start(workers=2) as service:
        httpx.post(service.url + "/v1/score", ...)

``start`` returns once ``GET /readyz`` answers 200 (every worker can score) and raises with the
service's log when it exits or does not come up in time. The service gets its own process group,
so ``stop`` reaches uvicorn's workers too. Shell scripts that start the service in the background
wait for it with ``python -m services.reward_api.local wait PORT [SECONDS] [--pid PID]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.client import RewardClient

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nothing listens on now (the OS picks it; a tiny race with other programs remains)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports nothing listens on now: every socket stays bound until all are chosen,
    so the OS cannot hand the same port out twice."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def wait_ready(url: str, timeout: float, exited: Callable[[], bool] = lambda: False) -> None:
    """Poll ``url``/readyz until it answers 200. TimeoutError after ``timeout`` s; RuntimeError as
    soon as ``exited()`` says the process that should answer is gone."""
    deadline = time.monotonic() + timeout
    with RewardClient(url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if exited():
                raise RuntimeError(f"the reward service at {url} exited before it was ready")
            if client.health()[client.base_urls[0]]:
                return
            time.sleep(0.1)
    raise TimeoutError(f"the reward service at {url} was not ready after {timeout:g} s")


@dataclass
class LocalService:
    """A running ``python -m services.reward_api`` on 127.0.0.1."""

    url: str
    port: int
    workers: int
    process: subprocess.Popen
    log_path: Path
    token: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # the variables given on top of the environment
    keep_log: bool = False

    @classmethod
    def start(
        cls,
        *,
        port: int | None = None,
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        token: str | None = None,
        log_path: Path | None = None,
        timeout: float = 60.0,
    ) -> LocalService:
        """Start the service and wait until it is ready.

        ``port``: a given one (a restart on the same address), else a free one. The service's
        settings are the defaults plus ``env`` and ``token``: REWARD_API_* variables and
        PROMETHEUS_MULTIPROC_DIR of this process are not passed on, so a shell's settings cannot
        change what a test or a benchmark measures. ``log_path``: where its output goes and stays; by
        default a temporary file removed by ``stop``.
        """
        port = free_port() if port is None else port
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("REWARD_API_")}
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the service makes a private one
        full_env.update(env or {})
        if token is not None:
            full_env["REWARD_API_TOKEN"] = token
        full_env.setdefault("OMP_NUM_THREADS", "1")  # numpy threads would fight the workers for cores
        keep_log = log_path is not None
        if log_path is None:
            with tempfile.NamedTemporaryFile(prefix="reward_api_", suffix=".log", delete=False) as tmp:
                log_path = Path(tmp.name)
        try:
            with open(log_path, "w") as log:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "services.reward_api",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--workers",
                        str(workers),
                    ],
                    cwd=REPO_ROOT,
                    env=full_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except BaseException:
            if not keep_log:
                Path(log_path).unlink(missing_ok=True)
            raise
        service = cls(
            f"http://127.0.0.1:{port}", port, workers, process, Path(log_path), token, dict(env or {}), keep_log
        )
        try:
            wait_ready(service.url, timeout, exited=lambda: process.poll() is not None)
        except (RuntimeError, TimeoutError) as exc:
            code = process.poll()  # before stop(): its SIGTERM would be reported as the cause
            log_text = service.log()
            service.stop()
            state = "still running, stopped" if code is None else f"exit code {code}"
            raise RuntimeError(f"{exc} ({state}):\n{log_text[-5000:]}") from None
        except BaseException:
            service.stop()
            raise
        return service

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM to the group (uvicorn shuts down gracefully), then SIGKILL if it lingers. Returns
        the exit code."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if not self.keep_log:
            self.log_path.unlink(missing_ok=True)
        return self.process.returncode

    def __enter__(self) -> LocalService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.reward_api.local",
        description="Wait until the reward service on 127.0.0.1:PORT is ready.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    wait = commands.add_parser("wait", help="exit 0 once GET /readyz answers 200, 1 if it does not in time")
    wait.add_argument("port", type=int)
    wait.add_argument("seconds", type=float, nargs="?", default=60.0)
    wait.add_argument("--pid", type=int, help="the service's process: give up as soon as it is gone")
    args = parser.parse_args(argv)
    exited = (lambda: not _alive(args.pid)) if args.pid else (lambda: False)
    try:
        wait_ready(f"http://127.0.0.1:{args.port}", args.seconds, exited=exited)
    except (TimeoutError, RuntimeError) as exc:
        print(f"{exc}; see its log", file=sys.stderr)
        return 1
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
