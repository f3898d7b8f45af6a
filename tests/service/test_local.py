"""services.reward_api.local: the launcher the demo, the benchmarks, the GPU scripts and these tests use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from services.reward_api.local import REPO_ROOT, LocalService, free_port


def test_a_started_service_is_ready_isolated_from_the_shell_and_stopped_cleanly(monkeypatch, tmp_path):
    # A token in the shell would lock every test out if it leaked into the service.
    monkeypatch.setenv("REWARD_API_TOKEN", "from-the-shell")
    log = tmp_path / "service.log"
    service = LocalService.start(env={"REWARD_API_MAX_SAMPLES": "2"}, log_path=log)
    try:
        assert httpx.get(service.url + "/readyz").status_code == 200
        samples = [{"completion": "x", "solution": "None"}] * 3
        answer = httpx.post(service.url + "/v1/score", json={"samples": samples})
        assert answer.status_code == 422 and "2" in answer.text  # env reached it; no token asked for
    finally:
        code = service.stop()
    # uvicorn shuts down on SIGTERM and then re-raises it: -SIGTERM, not the -SIGKILL of a forced stop
    assert code == -signal.SIGTERM
    text = log.read_text()  # a given log is kept
    assert "Uvicorn running" in text and "Finished server process" in text


def test_a_service_that_exits_at_start_raises_with_its_log():
    with pytest.raises(RuntimeError, match="exited before it was ready") as caught:
        LocalService.start(env={"REWARD_API_MAX_SAMPLES": "many"}, timeout=30)
    assert "REWARD_API_MAX_SAMPLES (--max-samples): Input should be a valid integer" in str(caught.value)  # the service's own message, from its log


def _wait_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "services.reward_api.local", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_wait_command_succeeds_on_a_ready_service_and_fails_on_a_silent_port():
    with LocalService.start() as service:
        assert _wait_cli("wait", str(service.port), "10", "--pid", str(service.process.pid)).returncode == 0
    silent = _wait_cli("wait", str(free_port()), "1.5")
    assert silent.returncode == 1 and "not ready after 1.5 s" in silent.stderr
    # a service that died: no need to wait out the timeout
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = _wait_cli("wait", str(free_port()), "50", "--pid", str(dead.pid))
    assert gone.returncode == 1 and "exited before it was ready" in gone.stderr
    assert _wait_cli("wait").returncode == 2
    assert _wait_cli("wait", "eighty").returncode == 2


def test_a_service_that_does_not_come_up_in_time_is_stopped_and_reported_as_such():
    with pytest.raises(RuntimeError, match=r"not ready after 0.01 s \(still running, stopped\)"):
        LocalService.start(timeout=0.01)
