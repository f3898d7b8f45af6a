"""Two worker processes: /metrics sums both, readiness counts both, promtool accepts the output."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import httpx
import pytest

from services.reward_api.local import LocalService
from tests.support.tools import executable
from tests.support.waiting import wait_until

from .test_score import CAT, completion, solution


def metric(text: str, name: str, labels: str) -> float:
    series = f"{name}{{{labels}}}" if labels else name
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{{{labels}}} not in /metrics"
    return float(match.group(1))


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    metrics_dir = tmp_path_factory.mktemp("prom")
    (metrics_dir / "stale_counter_1.db").write_bytes(b"left over from an old run")  # must be cleaned
    with LocalService.start(workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                                 "REWARD_API_LOG_LEVEL": "warning"}) as server:
        yield server, metrics_dir


def test_metrics_are_summed_over_both_workers(two_workers):
    server, metrics_dir = two_workers
    assert not (metrics_dir / "stale_counter_1.db").exists()
    ready = httpx.get(server.url + "/readyz").json()
    assert ready["workers"] == {"expected": 2, "started": 2}

    # A fresh connection per request lets either worker accept it; keep going until both answered.
    pids, healthz_calls = set(), 0
    while len(pids) < 2 and healthz_calls < 400:
        pids.add(httpx.get(server.url + "/healthz").json()["pid"])
        healthz_calls += 1
    assert len(pids) == 2, "one worker never answered"

    sample = {"completion": completion([CAT]), "solution": solution([CAT])}
    sent = 0
    for n in range(1, 31):
        answer = httpx.post(server.url + "/v1/score", json={"samples": [sample] * n, "rewards": ["ap", "format"]})
        assert answer.status_code == 200
        sent += n

    # A request is counted after its answer is sent: the other worker can serve /metrics before the
    # 30th is written, so wait for it (the samples were counted before the answers).
    def all_requests_counted() -> str | None:
        text = httpx.get(server.url + "/metrics").text
        return text if metric(text, "reward_api_requests_total", 'endpoint="/v1/score",status="200"') == 30 else None

    text = wait_until(all_requests_counted, 10, "the 30th /v1/score request to be counted", interval=0.05)
    assert metric(text, "reward_api_samples_total", 'endpoint="/v1/score"') == sent
    assert metric(text, "reward_api_requests_total", 'endpoint="/healthz",status="200"') == healthz_calls
    assert metric(text, "reward_api_requests_total", 'endpoint="/v1/score",status="200"') == 30
    assert metric(text, "reward_api_reward_value_count", 'reward="ap"') == sent
    assert metric(text, "reward_api_predicted_boxes_count", "") == sent
    # both workers wrote their own files, which /metrics summed
    writers = {path.name.rsplit("_", 1)[-1] for path in metrics_dir.glob("counter_*.db")}
    assert {f"{pid}.db" for pid in pids} <= writers


def test_promtool_accepts_the_exposition(two_workers):
    server, _ = two_workers
    promtool = executable("promtool", "apt-get install prometheus")
    text = httpx.get(server.url + "/metrics").text
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_crashed_worker_is_replaced_and_scoring_goes_on(tmp_path):
    # uvicorn's supervisor restarts a worker that dies; until then /readyz says so (503), and the
    # surviving worker keeps scoring. SIGKILL: no shutdown hook runs, as in an OOM kill.
    sample = {"completion": completion([CAT]), "solution": solution([CAT])}
    with LocalService.start(workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "REWARD_API_LOG_LEVEL": "warning"}) as server:
        victim = httpx.get(server.url + "/healthz").json()["pid"]
        os.kill(victim, signal.SIGKILL)
        answers, pids, deadline = [], set(), time.monotonic() + 30
        while time.monotonic() < deadline:
            answers.append(httpx.post(server.url + "/v1/score", json={"samples": [sample], "rewards": ["ap"]}).status_code)
            ready = httpx.get(server.url + "/readyz")
            pids.add(httpx.get(server.url + "/healthz").json()["pid"])
            if ready.status_code == 200 and len(pids - {victim}) == 2:
                break
            time.sleep(0.1)
        assert set(answers) == {200}, answers  # the survivor (and then the new worker) scored every request
        assert ready.status_code == 200, ready.text
        assert len(pids - {victim}) == 2, f"no replacement worker answered: {pids}"
