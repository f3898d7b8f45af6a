"""Real servers for the service tests: uvicorn subprocesses on 127.0.0.1, started once per session."""

from __future__ import annotations

import httpx
import pytest

from services.reward_api.local import LocalService

TOKEN = "test-token"
# Small limits so the limit tests are cheap: 4 MiB bodies (room for the 1 MB hostile completions),
# 100 samples per request, 200 queued samples per worker, no wait for room in the queue (a 503 at once).
LIMITS = {
    "REWARD_API_MAX_BODY_BYTES": str(4 * 1024 * 1024),
    "REWARD_API_MAX_SAMPLES": "100",
    "REWARD_API_MAX_QUEUED_SAMPLES": "200",
    "REWARD_API_QUEUE_WAIT_SECONDS": "0",
    "REWARD_API_RETRY_AFTER_SECONDS": "3",
    "REWARD_API_LOG_LEVEL": "warning",
}


@pytest.fixture(scope="session")
def server() -> LocalService:
    with LocalService.start(workers=1, env=LIMITS, token=TOKEN) as running:
        yield running


@pytest.fixture
def client(server: LocalService) -> httpx.Client:
    with httpx.Client(base_url=server.url, headers=server.headers(), timeout=30.0) as http:
        yield http
