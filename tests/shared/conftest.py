"""Fixtures for the client tests: the real reward service (one per session), faulty servers in
front of it, a URL where nothing listens, and samples whose rewards differ from one another (so
a mix-up of order shows)."""

from __future__ import annotations

import httpx
import pytest

from services.reward_api.local import LocalService, free_port
from tests.shared.faulty_server import FaultyServer

# Tiny backoff: the tests exercise the retry paths, not the waiting.
FAST = {"backoff_base": 0.001, "backoff_max": 0.005, "timeout": 5.0}


@pytest.fixture(scope="session")
def service():
    server = LocalService.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def faulty(service):
    with FaultyServer(upstream=service.url) as server:
        yield server


@pytest.fixture
def faulty_b(service):
    with FaultyServer(upstream=service.url) as server:
        yield server


@pytest.fixture
def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def detection_sample(i: int) -> dict:
    """Sample i predicts one box shifted by i pixels from the ground truth: AP falls as i grows."""
    box = [10 + i, 10 + i, 50 + i, 60 + i]
    completion = (
        f"<think>sample {i}</think><answer>```json\n"
        f'[{{"bbox_2d": {box}, "label": "cat"}}]\n```</answer>'
    )
    solution = '<answer>```json\n[{"bbox_2d": [10, 10, 50, 60], "label": "cat"}]\n```</answer>'
    return {"completion": completion, "solution": solution, "completion_tokens": 20 + i, "id": f"s{i}"}


@pytest.fixture
def samples() -> list[dict]:
    return [detection_sample(i) for i in range(10)]


def direct_score(service, samples: list[dict], **fields) -> dict:
    """The service's own answer, asked without the client: what the client's result must equal."""
    answer = httpx.post(service.url + "/v1/score", json={"samples": samples, **fields}, timeout=30)
    answer.raise_for_status()
    return answer.json()
