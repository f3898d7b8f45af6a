"""Metrics storage failures degrade to "metrics off, loudly", and dead workers' files are folded."""

from __future__ import annotations

import os
import re
import signal
import time
from collections import namedtuple

import httpx

from services.reward_api import metrics_storage
from services.reward_api.local import LocalService
from tests.support.waiting import wait_until

from .test_score import CAT, completion, solution

SAMPLE = {"completion": completion([CAT]), "solution": solution([CAT])}


def test_a_directory_without_room_is_refused_before_any_worker_starts(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(metrics_storage.shutil, "disk_usage", lambda path: usage(1 << 20, 1 << 20, 4096))
    assert "4096 bytes free" in metrics_storage.storage_problem(str(tmp_path), workers=2)
    monkeypatch.setenv(metrics_storage.MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setenv(metrics_storage.OFF_ENV, "")  # restored (removed) after the test
    assert metrics_storage.prepare(workers=2) == (None, False)
    assert metrics_storage.MULTIPROC_ENV not in os.environ
    assert "4096 bytes free" in os.environ[metrics_storage.OFF_ENV]


def test_unusable_metrics_storage_turns_metrics_off_and_scoring_goes_on(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(blocker / "metrics"), "REWARD_API_LOG_LEVEL": "info"}
    with LocalService.start(workers=2, env=env) as server:
        scored = httpx.post(server.url + "/v1/score", json={"samples": [SAMPLE], "rewards": ["format"]})
        assert scored.status_code == 200 and scored.json()["rewards"]["format"] == [1.0]
        scrape = httpx.get(server.url + "/metrics")
        assert scrape.status_code == 503 and "metrics are off" in scrape.json()["detail"]
        assert "metrics are OFF" in server.log()  # loudly, with the reason
        assert httpx.get(server.url + "/readyz").status_code == 200


def total(text: str) -> float:
    return sum(float(v) for v in re.findall(r'^reward_api_requests_total\{endpoint="/v1/score"[^}]*\} (\S+)$',
                                            text, re.MULTILINE))


def test_a_dead_workers_files_are_folded_and_no_count_is_lost(tmp_path):
    with LocalService.start(workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
                                            "REWARD_API_LOG_LEVEL": "warning"}) as server:
        for _ in range(20):
            httpx.post(server.url + "/v1/score", json={"samples": [SAMPLE], "rewards": ["format"]})
        # A request is counted just after its answer is sent: wait for the 20th.
        before = wait_until(lambda: total(httpx.get(server.url + "/metrics").text) == 20 and 20, 10,
                            "the 20 requests to be counted", interval=0.05)
        victim = httpx.get(server.url + "/healthz").json()["pid"]
        assert list(tmp_path.glob(f"*_{victim}.db"))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and list(tmp_path.glob(f"*_{victim}.db")):
            time.sleep(0.2)  # the replacement worker folds the dead one's files at its start
        assert not list(tmp_path.glob(f"*_{victim}.db")), "the dead worker's files are still there"
        assert list(tmp_path.glob("counter_archive.db"))
        assert total(httpx.get(server.url + "/metrics").text) >= before  # folded, not lost
        live = {int(p.stem.rsplit("_", 1)[1]) for p in tmp_path.glob("*.db") if p.stem.rsplit("_", 1)[1].isdigit()}
        assert victim not in live and len(live - {server.process.pid}) <= 2  # the supervisor has a file too
