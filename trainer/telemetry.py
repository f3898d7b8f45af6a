"""What the trainer reports about itself: Prometheus metrics on a port of its own, and a JSON summary
of the run (steps per second, time spent waiting for rewards) in the output directory.

Prometheus (``--metrics_port``, env ``TRAINER_METRICS_PORT``, default 9400, 0 disables; main
process only):

* ``trainer_step``: the optimizer step reached;
* ``trainer_reward_mean{reward}``: each reward's mean at the last logging step (TRL's
  ``rewards/<name>/mean``);
* ``trainer_reward_request_seconds``: histogram of reward requests as the trainer saw them, one per
  generation batch, retries and backoff included;
* ``trainer_reward_retries_total``: retries the reward client made.
* ``trainer_reward_wait_seconds_total``: time the training loop spent blocked on rewards.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

DEFAULT_METRICS_PORT = 9400
METRICS_PORT_ENV = "TRAINER_METRICS_PORT"
SUMMARY_FILE = "train_summary.json"

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def default_metrics_port() -> int:
    return int(os.environ.get(METRICS_PORT_ENV, DEFAULT_METRICS_PORT))


class Telemetry:
    """The run's counters. Fed by the reward client (requests, retries), the trainer (reward wait per
    step) and the callback (steps, logs); exported to Prometheus when ``port`` is not 0."""

    def __init__(self, port: int = 0, reward_names: list[str] | tuple[str, ...] = ()) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.step = Gauge("trainer_step", "Optimizer step reached", registry=self.registry)
        self.reward_mean = Gauge(
            "trainer_reward_mean", "Mean of each reward at the last logging step", ["reward"], registry=self.registry
        )
        self.request_seconds = Histogram(
            "trainer_reward_request_seconds",
            "Reward service requests as the trainer saw them (retries and backoff included)",
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.retries = Counter(
            "trainer_reward_retries_total", "Retries made by the reward client", registry=self.registry
        )
        self.wait_seconds = Counter(
            "trainer_reward_wait_seconds_total",
            "Time the training loop spent blocked on rewards",
            registry=self.registry,
        )
        for name in reward_names:
            self.reward_mean.labels(reward=name)
        self.port = port
        self.server = None
        if port:
            from prometheus_client import start_http_server

            self.server, _thread = start_http_server(port, registry=self.registry)
        # Plain numbers for the summary (the Prometheus objects are for scraping).
        self.requests = 0  # answered
        self.failed_requests = 0  # gave up (RewardServiceError and the like)
        self.request_total_s = 0.0
        self.retry_count = 0
        self.wait_total_s = 0.0

    def observe_request(self, seconds: float, ok: bool = True) -> None:
        if ok:
            self.requests += 1
        else:
            self.failed_requests += 1
        self.request_total_s += seconds
        self.request_seconds.observe(seconds)

    def observe_retry(self, _event: Any = None) -> None:
        self.retry_count += 1
        self.retries.inc()

    def observe_wait(self, seconds: float) -> None:
        self.wait_total_s += seconds
        self.wait_seconds.inc(seconds)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def timed_client_class():
    """AsyncRewardClient that reports each ``score`` call's duration (as the trainer saw it)."""
    from shared.client import AsyncRewardClient

    class TimedAsyncRewardClient(AsyncRewardClient):
        def __init__(self, *args: Any, telemetry: Telemetry, **kwargs: Any) -> None:
            super().__init__(*args, on_retry=telemetry.observe_retry, **kwargs)
            self.telemetry = telemetry

        async def score(self, *args: Any, **kwargs: Any):
            start = time.perf_counter()
            try:
                response = await super().score(*args, **kwargs)
            except BaseException:
                self.telemetry.observe_request(time.perf_counter() - start, ok=False)
                raise
            self.telemetry.observe_request(time.perf_counter() - start)
            return response

    return TimedAsyncRewardClient


class TelemetryCallback(TrainerCallback):
    """Steps and reward means to Prometheus; per-step timing to ``train_summary.json``.

    A step's reward wait is what the trainer measured around its reward computation during that
    step (GRPO generates and scores at the first micro-step of each generation round)."""

    def __init__(self, telemetry: Telemetry, output_dir: str, reward_names: list[str]) -> None:
        self.telemetry = telemetry
        self.output_dir = Path(output_dir)
        self.reward_names = reward_names
        self.steps: list[dict] = []
        self._train_start = 0.0
        self._step_start = 0.0
        self._wait_at_step_start = 0.0
        self.status = "running"
        self.error: str | None = None
        self.log_history: list[dict] = []
        self.global_step = 0  # the optimizer step reached (counts a resumed run's earlier steps)

    def on_train_begin(self, args, state, control, **kwargs):
        self._train_start = time.perf_counter()
        # Resumed from a checkpoint: the state carries the log of the steps before it.
        self.global_step = state.global_step
        if not self.log_history:
            self.log_history = [entry for entry in state.log_history if self._is_step_log(entry)]

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = time.perf_counter()
        self._wait_at_step_start = self.telemetry.wait_total_s

    def on_step_end(self, args, state, control, **kwargs):
        seconds = time.perf_counter() - self._step_start
        wait = self.telemetry.wait_total_s - self._wait_at_step_start
        self.steps.append({"step": state.global_step, "seconds": seconds, "reward_wait_seconds": wait})
        self.global_step = state.global_step
        self.telemetry.step.set(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, value in (logs or {}).items():
            if key.startswith("rewards/") and key.endswith("/mean"):
                self.telemetry.reward_mean.labels(reward=key[len("rewards/") : -len("/mean")]).set(value)
        numbers = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        if self._is_step_log(numbers):
            self.log_history.append({"step": state.global_step, **numbers})

    @staticmethod
    def _is_step_log(entry: dict) -> bool:
        """Training steps and held-out rounds; not the end-of-training totals (train_runtime, ...)."""
        return any(key == "loss" or str(key).startswith(("rewards/", "heldout/")) for key in entry)

    def on_train_end(self, args, state, control, **kwargs):
        if self.status == "running":
            self.status = "completed"
        if state.is_world_process_zero:
            self.write_summary()

    def fail(self, error: BaseException) -> None:
        self.status = "failed"
        self.error = f"{type(error).__name__}: {error}"
        self.write_summary()

    def summary(self) -> dict:
        train_s = time.perf_counter() - self._train_start if self._train_start else 0.0
        step_s = sum(s["seconds"] for s in self.steps)
        wait_s = sum(s["reward_wait_seconds"] for s in self.steps)
        # Steady state leaves out the first step (compilation, caches, connection set-up).
        steady = self.steps[1:] if len(self.steps) > 1 else self.steps
        steady_s = sum(s["seconds"] for s in steady)
        steady_wait = sum(s["reward_wait_seconds"] for s in steady)
        t = self.telemetry
        return {
            "status": self.status,
            "error": self.error,
            "steps": len(self.steps),  # run by this process (a resumed run: since the checkpoint)
            "global_step": self.global_step,
            "train_seconds": train_s,
            "steps_per_second": len(self.steps) / step_s if step_s else None,
            "steady_steps_per_second": len(steady) / steady_s if steady_s else None,
            "reward_wait_seconds": wait_s,
            "reward_wait_share": wait_s / step_s if step_s else None,
            "steady_reward_wait_share": steady_wait / steady_s if steady_s else None,
            "reward_requests": t.requests,
            "reward_requests_failed": t.failed_requests,
            "reward_request_seconds_mean": t.request_total_s / t.requests if t.requests else None,
            "reward_retries": t.retry_count,
            "rewards": self.reward_names,
            "log_history": self.log_history,
            "per_step": self.steps,
        }

    def write_summary(self) -> Path:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / SUMMARY_FILE
        path.write_text(json.dumps(self.summary(), indent=2) + "\n")
        return path
