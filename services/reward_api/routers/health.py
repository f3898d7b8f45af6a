"""GET /healthz (liveness), GET /readyz (readiness), GET /metrics. Open: probes carry no token.

Readiness with several workers: each worker drops a file named after its pid into
``$PROMETHEUS_MULTIPROC_DIR/workers`` at startup (and removes it at shutdown); /readyz answers 200
once as many live workers are registered as were configured, and this worker scores a known sample.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import Response

from .. import metrics
from ..responses import JSONBytes
from .deps import CurrentSettings
from .request_handling import self_test

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict:
    # Answered on the event loop, never behind the batch queue: an overloaded worker is alive.
    return {"status": "ok", "pid": os.getpid()}


@router.get("/readyz")
async def readyz(settings: CurrentSettings) -> Response:
    expected = settings.workers
    problem = self_test()
    live = live_workers()
    if problem is None and live is not None and len(live) < expected:
        problem = f"{len(live)} of {expected} workers started"
    body = {
        "status": "ready" if problem is None else "not ready",
        "pid": os.getpid(),
        "workers": {"expected": expected, "started": expected if live is None else len(live)},
    }
    if problem is not None:
        body["detail"] = problem
    return JSONBytes(body, status_code=200 if problem is None else 503)


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    # The app's source of the exposition: this host's workers (metrics.host_exposition), or under
    # Ray Serve the sums over every replica (serve.py).
    try:
        payload, content_type = await request.app.state.exposition()
    except metrics.MetricsOff as exc:  # loudly: a scrape fails with the reason, scoring goes on
        return JSONBytes({"detail": str(exc)}, status_code=503)
    return Response(payload, media_type=content_type)


def _workers_dir() -> Path | None:
    directory = metrics.multiproc_dir()
    return None if directory is None else Path(directory) / "workers"


def register_worker() -> Path | None:
    directory = _workers_dir()
    if directory is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / str(os.getpid())
    path.touch()
    return path


def unregister_worker(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def live_workers() -> list[int] | None:
    """Pids of registered workers still alive (a crashed worker's file is ignored), or None when
    this process runs alone (no multiprocess directory)."""
    directory = _workers_dir()
    if directory is None:
        return None
    pids = []
    for entry in directory.iterdir():
        if entry.name.isdigit() and _alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
