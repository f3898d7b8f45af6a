"""The real reward service as a subprocess, for any test that needs one.

    from tests.support.servers import serving
    with serving(workers=2, env={"REWARD_API_TOKEN": "t"}) as server:
        httpx.post(server.url + "/v1/score", ...)

The test-facing names of `services.reward_api.local`, the one launcher (shared with the demo, the
benchmarks and the GPU scripts): the service is ready when they return, and isolated from the
REWARD_API_* settings of the environment the tests run in.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from services.reward_api.local import REPO_ROOT, LocalService, free_port, free_ports

RunningServer = LocalService

__all__ = ["REPO_ROOT", "RunningServer", "free_port", "free_ports", "serving", "start_server", "stop_server"]


def start_server(
    workers: int = 1, env: Mapping[str, str] | None = None, token: str | None = None, timeout: float = 60.0,
    port: int | None = None,
) -> RunningServer:
    """The service, ready. ``port``: a given one (a restart on the same address, as a trainer sees
    it), else a free one."""
    return LocalService.start(port=port, workers=workers, env=env, token=token, timeout=timeout)


def stop_server(server: RunningServer, timeout: float = 15.0) -> int | None:
    """SIGTERM (uvicorn shuts down gracefully), then SIGKILL if it lingers. Returns the exit code."""
    return server.stop(timeout)


@contextmanager
def serving(workers: int = 1, env: Mapping[str, str] | None = None, token: str | None = None,
            timeout: float = 60.0) -> Iterator[RunningServer]:
    with start_server(workers, env, token, timeout) as server:
        yield server
