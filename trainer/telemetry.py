"""What the trainer reports about itself: Prometheus metrics on a port of its own, and a JSON summary
of the run (steps per second, time spent waiting for rewards, generation speed, peak GPU memory) in
the output directory.

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
        self.generation_total_s = 0.0
        self.generated_tokens = 0

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

    def observe_generation(self, seconds: float, tokens: int) -> None:
        """One generation round: its wall time and the completion tokens it produced."""
        self.generation_total_s += seconds
        self.generated_tokens += tokens

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def gpu_memory() -> dict:
    """This process's peak GPU memory (bytes) as PyTorch's allocator saw it, model loading included:
    what its tensors held at most (``allocated``) and what the allocator reserved (``reserved``; the
    CUDA context and other processes come on top, see nvidia-smi). Empty without a CUDA device."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {
        "gpu_name": torch.cuda.get_device_name(),
        "gpu_peak_allocated_bytes": torch.cuda.max_memory_allocated(),
        "gpu_peak_reserved_bytes": torch.cuda.max_memory_reserved(),
    }


def run_setup(trainer: Any) -> dict:
    """How ``trainer`` (a transformers Trainer) trains: processes, DeepSpeed's ZeRO stage, LoRA,
    gradient checkpointing, precision and attention, as the train summary records them."""
    args, model = trainer.args, trainer.model
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None) if trainer.is_deepspeed_enabled else None
    config = getattr(model, "config", None)
    return {
        "world_size": args.world_size,
        "deepspeed_zero_stage": plugin.zero_stage if plugin is not None else None,
        "peft": type(model).__name__.startswith("Peft"),
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "bf16": bool(args.bf16),
        "dtype": str(getattr(model, "dtype", "")).removeprefix("torch."),
        "attn_implementation": getattr(config, "_attn_implementation", None),
        # ZeRO-3 partitions every parameter at load: ds_numel is its whole size, numel() its local part
        "parameters": sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters()),
        "trainable_parameters": sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad),
    }


def timed_generation(trainer: Any, telemetry: Telemetry) -> bool:
    """Measure each of GRPO's generation rounds (wall time, completion tokens) into ``telemetry``.

    TRL exposes no hook around its generation, so this wraps the trainer's ``_generate_single_turn``
    (TRL 1.16, pinned), the call that runs ``model.generate`` and returns the completion ids; a TRL
    without it leaves generation unmeasured (False) rather than failing the run."""
    original = getattr(trainer, "_generate_single_turn", None)
    if original is None:
        return False

    def measured(*args: Any, **kwargs: Any):
        started = time.perf_counter()
        result = original(*args, **kwargs)
        completion_ids = result[0]  # (completion_ids, logprobs); ids as lists, so the GPU work is done
        telemetry.observe_generation(time.perf_counter() - started, sum(len(ids) for ids in completion_ids))
        return result

    trainer._generate_single_turn = measured
    return True


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
        self._generation_at_step_start = (0.0, 0)
        self.status = "running"
        self.error: str | None = None
        self.log_history: list[dict] = []
        self.setup: dict[str, Any] = {}  # how the run was set up (`run_setup`), for the record
        self.global_step = 0  # the optimizer step reached (counts a resumed run's earlier steps)
        self._log_due = False  # a step has ended and its log entry is on its way
        self._held_interrupt: str | None = None  # an interrupt waiting for that entry (`interrupt_after_log`)

    def on_train_begin(self, args, state, control, **kwargs):
        self._train_start = time.perf_counter()
        # Resumed from a checkpoint: the state carries the log of the steps before it.
        self.global_step = state.global_step
        if not self.log_history:
            self.log_history = [entry for entry in state.log_history if self._is_step_log(entry)]

    def on_step_begin(self, args, state, control, **kwargs):
        self._raise_held_interrupt()
        self._step_start = time.perf_counter()
        self._wait_at_step_start = self.telemetry.wait_total_s
        self._generation_at_step_start = (self.telemetry.generation_total_s, self.telemetry.generated_tokens)

    def on_step_end(self, args, state, control, **kwargs):
        # First, before this step is recorded: from here until its log entry an interrupt waits.
        # should_log is set for this step by Trainer's flow callback, which runs before this one.
        # One process only: with several, a rank holding would wait in the log's gather for ranks
        # already interrupted.
        self._log_due = bool(control.should_log) and args.world_size == 1
        seconds = time.perf_counter() - self._step_start
        t = self.telemetry
        wait = t.wait_total_s - self._wait_at_step_start
        generation_s, tokens = self._generation_at_step_start
        self.steps.append(
            {
                "step": state.global_step,
                "seconds": seconds,
                "reward_wait_seconds": wait,
                "generation_seconds": t.generation_total_s - generation_s,
                "generated_tokens": t.generated_tokens - tokens,
            }
        )
        self.global_step = state.global_step
        self.telemetry.step.set(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, value in (logs or {}).items():
            if key.startswith("rewards/") and key.endswith("/mean"):
                self.telemetry.reward_mean.labels(reward=key[len("rewards/") : -len("/mean")]).set(value)
        numbers = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        if self._is_step_log(numbers):
            self.log_history.append({"step": state.global_step, **numbers})
        if "loss" in numbers:  # the step's own entry (a held-out round's, logged from inside it, is not)
            self._log_due = False
            self._raise_held_interrupt()

    def interrupt_after_log(self, message: str) -> bool:
        """Hold an interrupt (SIGTERM, `trainer.train.interrupted_by_sigterm`) that arrives between a
        step's end and its log entry until the entry is in, so the record never counts a step whose
        numbers it lacks; returns whether it was held (else the caller raises it now). The wait is
        the logging of one step: milliseconds."""
        if not self._log_due:
            return False
        self._held_interrupt = message
        return True

    def _raise_held_interrupt(self) -> None:
        if self._held_interrupt is not None:
            message, self._held_interrupt = self._held_interrupt, None
            raise KeyboardInterrupt(message)

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
        steady_generation_s = sum(s.get("generation_seconds", 0.0) for s in steady)
        steady_tokens = sum(s.get("generated_tokens", 0) for s in steady)
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
            "generation_seconds": t.generation_total_s,
            "generated_tokens": t.generated_tokens,
            "generation_tokens_per_second": t.generated_tokens / t.generation_total_s if t.generation_total_s else None,
            "steady_generation_tokens_per_second": (
                steady_tokens / steady_generation_s if steady_generation_s else None
            ),
            **gpu_memory(),
            "setup": self.setup,
            "rewards": self.reward_names,
            "log_history": self.log_history,
            "per_step": self.steps,
        }

    def write_summary(self) -> Path:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / SUMMARY_FILE
        path.write_text(json.dumps(self.summary(), indent=2) + "\n")
        return path
