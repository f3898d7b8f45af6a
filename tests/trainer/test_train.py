"""GRPO training of the tiny model against the real reward service on loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.reward_api.local import REPO_ROOT, LocalService, free_ports
from tests.trainer.cli import CPU_RUN, TINY_GRPO
from trainer import train

REWARDS = ["format", "od_length", "weighted_sum", "cosine"]


def train_args(model_dir, data_dir, out, url, steps, *extra):
    return [
        "--model_name_or_path",
        str(model_dir),
        "--data_files",
        str(Path(data_dir) / "train.jsonl"),
        "--image_folders",
        str(Path(data_dir) / "images"),
        "--reward_urls",
        url,
        "--rewards",
        *REWARDS,
        "--output_dir",
        str(out),
        "--max_steps",
        str(steps),
        *TINY_GRPO,
        *CPU_RUN,
        "--metrics_port",
        "0",
        *extra,
    ]


def score_counts(url: str) -> tuple[int, int]:
    """(/v1/score requests the service answered with 200, samples it scored for /v1/score), from its
    own /metrics."""
    text = httpx.get(url + "/metrics", timeout=5).text
    answered = scored = 0.0
    for line in text.splitlines():
        if line.startswith("reward_api_requests_total{") and 'endpoint="/v1/score"' in line and 'status="200"' in line:
            answered += float(line.rsplit(" ", 1)[1])
        elif line.startswith("reward_api_samples_total{") and 'endpoint="/v1/score"' in line:
            scored += float(line.rsplit(" ", 1)[1])
    return int(answered), int(scored)


def score_requests(url: str) -> int:
    """/v1/score requests the service answered with 200, from its own /metrics."""
    return score_counts(url)[0]


SAMPLES_PER_REQUEST = 4  # TINY_GRPO: one request per generation batch of 4 completions
QUIET_SECONDS = 1.0


def answered_requests(url: str, timeout: float = 30.0) -> int:
    """The /v1/score requests the service answered, once no answer is on its way any more (the
    trainer is stopped or done). A batch's samples are counted when it is scored, before its answer
    is sent; the request only after: so every scored batch must be counted as answered, and the
    counts must stay so for QUIET_SECONDS (a request received but not yet scored shows in neither)."""
    deadline = time.monotonic() + timeout
    counts, since = score_counts(url), time.monotonic()
    while True:
        answered, scored = counts
        if scored == SAMPLES_PER_REQUEST * answered and time.monotonic() - since >= QUIET_SECONDS:
            return answered
        assert time.monotonic() < deadline, f"the service's counts kept moving: {counts} (answered, samples)"
        time.sleep(0.1)
        now = score_counts(url)
        if now != counts:
            counts, since = now, time.monotonic()


def weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_grpo_trains_the_tiny_model_with_rewards_from_the_service(tiny_model_dir, synthetic_dir, tmp_path):
    out = tmp_path / "run"
    with LocalService.start() as server:
        assert train.main(train_args(tiny_model_dir, synthetic_dir, out, server.url, 2)) == 0
        served = answered_requests(server.url)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 2
    # One request per generation batch, every one answered by the service, none made up here.
    assert served == summary["reward_requests"] == 2
    assert summary["reward_retries"] == 0 and summary["reward_requests_failed"] == 0
    assert 0 < summary["reward_wait_share"] < 1
    for entry in summary["log_history"]:
        for name in REWARDS:
            assert f"rewards/{name}/mean" in entry
    # Every generation round measured: the completion tokens TRL counted (4 completions a step), in
    # the time model.generate took; and how the run was set up.
    for step, entry in zip(summary["per_step"], summary["log_history"], strict=True):
        assert step["generated_tokens"] == round(4 * entry["completions/mean_length"]) > 0
        assert 0 < step["generation_seconds"] < step["seconds"]
    assert summary["generated_tokens"] / summary["generation_seconds"] == summary["generation_tokens_per_second"]
    setup = summary["setup"]
    assert setup["world_size"] == 1 and setup["deepspeed_zero_stage"] is None and not setup["peft"]
    assert setup["trainable_parameters"] == setup["parameters"] > 0
    before, after = weights(tiny_model_dir), weights(out)
    changed = [name for name in before if not (before[name] == after[name]).all()]
    assert changed, "GRPO did not change any weight"
    record = json.loads((out / "reward_service.json").read_text())
    assert set(record["versions_used"]) == set(REWARDS)
    assert record["urls"] == [server.url] and record["unscored_samples"] == 0
    assert {entry["name"] for entry in record["service"]["rewards"]} >= set(REWARDS)


def test_lora_with_a_frozen_vision_tower_trains_language_adapters_only(tiny_model_dir, synthetic_dir, tmp_path):
    out = tmp_path / "lora"
    lora = ["--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--freeze_vision_modules", "true"]
    with LocalService.start() as server:
        assert train.main(train_args(tiny_model_dir, synthetic_dir, out, server.url, 2, *lora)) == 0
    from safetensors.torch import load_file

    adapters = load_file(str(out / "adapter_model.safetensors"))
    assert adapters and all("lora_" in name for name in adapters), sorted(adapters)[:5]
    assert not any("visual" in name for name in adapters), "LoRA adapters on the frozen vision tower"
    trained = [name for name, value in adapters.items() if "lora_B" in name and value.abs().sum() > 0]
    assert trained, "no LoRA adapter moved from its zero initialisation"
    setup = json.loads((out / "train_summary.json").read_text())["setup"]
    assert setup["peft"] and 0 < setup["trainable_parameters"] < setup["parameters"]


# ----------------------------------------------------------------------------------------------
# The service dies in the middle of a run


def start_trainer(model_dir, data_dir, out, url, steps, *extra) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "trainer.train", *train_args(model_dir, data_dir, out, url, steps, *extra)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_after_first_scores(server: LocalService, trainer: subprocess.Popen) -> int:
    """Wait until the service has scored a batch, freeze the trainer, count, kill the service
    (SIGKILL: no graceful goodbye), let the trainer go on. Returns the requests the service answered."""
    deadline = time.monotonic() + 120
    while score_requests(server.url) < 1:
        assert trainer.poll() is None, trainer.stdout.read()
        assert time.monotonic() < deadline, "the trainer never asked for rewards"
        time.sleep(0.05)
    trainer.send_signal(signal.SIGSTOP)
    served = answered_requests(server.url)  # a request in flight finishes; its answer waits in the trainer's socket
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()
    trainer.send_signal(signal.SIGCONT)
    return served


def trainer_retries(port: int) -> int:
    """The reward-request retries the trainer made so far, from its own /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    found = re.search(r"^trainer_reward_retries_total (\S+)$", text, re.MULTILINE)
    assert found, f"no trainer_reward_retries_total in the trainer's /metrics:\n{text[:2000]}"
    return int(float(found[1]))


def test_training_survives_a_service_restart_within_the_retry_budget(tiny_model_dir, synthetic_dir, tmp_path):
    out = tmp_path / "run"
    free, metrics_port = free_ports(2)
    first = LocalService.start(port=free)
    trainer = start_trainer(
        tiny_model_dir,
        synthetic_dir,
        out,
        first.url,
        5,
        "--reward_max_retries",
        "100",
        "--reward_backoff_base",
        "0.2",
        "--reward_backoff_max",
        "1",
        "--metrics_port",
        str(metrics_port),
    )
    second = None
    try:
        served_before = kill_after_first_scores(first, trainer)
        deadline = time.monotonic() + 120  # the rest of the step (generation included) comes first
        while trainer_retries(metrics_port) < 1:  # the trainer is retrying against a dead port now
            assert trainer.poll() is None, trainer.stdout.read()
            assert time.monotonic() < deadline, "the trainer never retried against the dead service"
            time.sleep(0.05)
        second = LocalService.start(port=free)
        output, _ = trainer.communicate(timeout=180)
        served_after = answered_requests(second.url)
    finally:
        if trainer.poll() is None:
            trainer.kill()
        for server in (first, second):
            if server is not None:
                server.stop()
    assert trainer.returncode == 0, output
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 5
    assert summary["reward_retries"] >= 1
    # Every step's rewards came from one answered request; nothing was scored while the service was down.
    assert served_before + served_after == summary["reward_requests"] == 5
    assert len(summary["log_history"]) == 5


def test_training_stops_with_a_clear_error_beyond_the_retry_budget(tiny_model_dir, synthetic_dir, tmp_path):
    out = tmp_path / "run"
    server = LocalService.start()
    trainer = start_trainer(
        tiny_model_dir,
        synthetic_dir,
        out,
        server.url,
        50,
        "--reward_max_retries",
        "2",
        "--reward_backoff_base",
        "0.05",
        "--reward_backoff_max",
        "0.1",
    )
    try:
        served = kill_after_first_scores(server, trainer)
        output, _ = trainer.communicate(timeout=120)
    finally:
        if trainer.poll() is None:
            trainer.kill()
        server.stop()
    assert trainer.returncode == train.EXIT_REWARD_SERVICE, output
    assert "training stopped: the reward service did not answer" in output
    assert re.search(r"failed after 3 attempts \(max_retries=2\)", output), output
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["status"] == "failed" and "RewardServiceError" in summary["error"]
    # Only the batches the service scored were trained on and logged; the unscored one was not.
    assert summary["reward_requests"] == served == summary["steps"] == len(summary["log_history"])
    assert summary["reward_requests_failed"] == 1


def test_sigterm_stops_training_with_the_record_of_the_steps_so_far(tiny_model_dir, synthetic_dir, tmp_path):
    """A scheduler's SIGTERM (or bench/fullsize.sh's time cap) ends the run with its summary written."""
    out = tmp_path / "run"
    server = LocalService.start()
    trainer = start_trainer(tiny_model_dir, synthetic_dir, out, server.url, 500)
    try:
        deadline = time.monotonic() + 120
        while score_requests(server.url) < 2:  # the second batch is asked for once the first step is done
            assert trainer.poll() is None, trainer.stdout.read()
            assert time.monotonic() < deadline, "the trainer never asked for rewards"
            time.sleep(0.05)
        trainer.send_signal(signal.SIGTERM)
        output, _ = trainer.communicate(timeout=60)
    finally:
        if trainer.poll() is None:
            trainer.kill()
        server.stop()
    assert trainer.returncode != 0, output
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "KeyboardInterrupt: stopped by signal SIGTERM"
    assert 1 <= summary["steps"] < 500 and len(summary["log_history"]) == summary["steps"]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
