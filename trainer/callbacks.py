"""Training callbacks shared by GRPO (``trainer.train``) and SFT (``trainer.sft``).

* `HeldOutEvaluation`: every N optimizer steps (and at the start and the end), greedy answers on a
  held-out set, scored through the reward service's ``POST /v1/evaluate``; the research's metrics
  are logged as training metrics (``heldout/map``, ``heldout/ap50``, ``heldout/precision``,
  ``heldout/recall``, ``heldout/nms_ap``, ``heldout/box_ratio``) and appended to
  ``OUTPUT_DIR/heldout.jsonl``; the last round's completions go to ``OUTPUT_DIR/heldout_completions.jsonl``.
* `TimeLimit`: stops training after a wall-clock budget (``--max_seconds``), so that runs of
  different kinds can be compared at equal time.
* `NonFiniteGuard`: stops training at the first NaN or infinite loss or gradient norm, with a
  message, instead of training on garbage (sdpa attention with left padding in bf16 does this).
* `CheckpointRecord`: copies the run's ``reward_service.json`` (the reward versions that scored it
  so far) into every checkpoint, so that a resume checks them against the live service.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

HELDOUT_FILE = "heldout.jsonl"
HELDOUT_COMPLETIONS_FILE = "heldout_completions.jsonl"
# heldout/<name> logged from /v1/evaluate's answer: (log name, answer key)
HELDOUT_METRICS = (
    ("map", "ap"),
    ("ap50", "ap50"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("nms_ap", "nms_ap"),
)


class TrainingStopped(RuntimeError):
    """Training was stopped by a guard; the message says why and what to change."""


def heldout_metrics(answer: dict[str, Any]) -> dict[str, float]:
    """The logged metrics of one /v1/evaluate answer (None values left out); box ratio is predicted
    boxes per ground-truth box (1 is ideal; above 1, redundant boxes).

    >>> heldout_metrics({"ap": 0.5, "ap50": 0.75, "precision": 0.8, "recall": None, "nms_ap": 0.5,
    ...                  "n_pred": 12, "n_gt": 10})  # doctest: +NORMALIZE_WHITESPACE
    {'heldout/map': 0.5, 'heldout/ap50': 0.75, 'heldout/precision': 0.8, 'heldout/nms_ap': 0.5,
     'heldout/box_ratio': 1.2}
    """
    out = {f"heldout/{name}": float(answer[key]) for name, key in HELDOUT_METRICS if answer.get(key) is not None}
    if answer.get("n_gt"):
        out["heldout/box_ratio"] = answer["n_pred"] / answer["n_gt"]
    return out


class HeldOutEvaluation(TrainerCallback):
    """Greedy generation on ``examples`` every ``every_steps`` steps, scored by the reward service.

    ``examples`` are `trainer.data.Example` (ground truth in the pixels the model sees); evaluation
    runs on the main process only. ``trainer`` is set after the trainer is built, so that the
    metrics go through ``trainer.log`` (TensorBoard, ``trainer_state.json``) like any other, at the
    trainer's next log."""

    def __init__(
        self,
        examples: Sequence[Any],
        processor: Any,
        client: Any,
        output_dir: str | Path,
        every_steps: int,
        template: str = "standard",
        categories: Sequence[str] | None = None,
        batch_size: int = 64,
        max_new_tokens: int = 256,
    ) -> None:
        self.examples = list(examples)
        self.processor = processor
        self.client = client
        self.output_dir = Path(output_dir)
        self.every_steps = every_steps
        self.template = template
        self.categories = list(categories) if categories else None
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.trainer: Any = None
        self.last_step: int | None = None
        self.pending: list[dict[str, float]] = []  # metrics of rounds not yet logged
        self.seconds = 0.0  # spent evaluating, for the record
        self.started = time.perf_counter()  # training's start (elapsed times in heldout.jsonl count from it)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.started = time.perf_counter()
        if state.global_step > 0 and self.recorded_step() == state.global_step:
            self.last_step = state.global_step  # resumed where a round was already taken: not twice
            return
        self._evaluate(args, state, model)

    def recorded_step(self) -> int | None:
        """The step of the last round in heldout.jsonl (a resumed run's earlier rounds), if any."""
        path = self.output_dir / HELDOUT_FILE
        if not path.is_file():
            return None
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return json.loads(lines[-1]).get("step") if lines else None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every_steps > 0 and state.global_step % self.every_steps == 0:
            self._evaluate(args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.last_step != state.global_step:
            self._evaluate(args, state, model)
        self.flush()

    def flush(self) -> None:
        if self.trainer is None:
            return
        pending, self.pending = self.pending, []
        for metrics in pending:
            self.trainer.log(metrics)

    def _evaluate(self, args, state, model) -> None:
        if model is None or not state.is_world_process_zero:
            return
        started = time.perf_counter()
        completions = self.generate(model)
        answer = self.score(completions)
        seconds = time.perf_counter() - started
        self.seconds += seconds
        self.last_step = state.global_step
        metrics = heldout_metrics(answer)
        record = {
            "step": state.global_step,
            "elapsed": started - self.started,
            "seconds": seconds,
            **metrics,
            "evaluate": answer,
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / HELDOUT_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.write_completions(completions)
        logger.info(
            "held-out at step %d (%d images, %.1f s): %s",
            state.global_step,
            len(self.examples),
            seconds,
            ", ".join(f"{k.split('/')[1]} {v:.4f}" for k, v in metrics.items()),
        )
        self.pending.append(metrics)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Logged right after the trainer's own log of the step, through trainer.log so that they reach
        # every reporter (TensorBoard, trainer_state.json); logging them earlier in the step would
        # take over the trainer's log of that step (TRL folds its pending metrics into any log call).
        if not any(k.startswith("heldout/") for k in logs or {}):
            self.flush()

    def generate(self, model) -> list[str]:
        from trainer.evaluate import generate_completions

        return generate_completions(
            model, self.processor, self.examples, self.template, self.batch_size, self.max_new_tokens, progress=False
        )

    def score(self, completions: Sequence[str]) -> dict[str, Any]:
        from shared.evaluate import evaluate_images

        images = [{"completion": c, "solution": ex.solution} for ex, c in zip(self.examples, completions, strict=True)]
        return evaluate_images(self.client, images, self.categories)

    def write_completions(self, completions: Sequence[str]) -> None:
        from trainer.coco_datasets import write_jsonl
        from trainer.evaluate import completion_records

        records = completion_records(self.examples, completions, self.template, self.categories)
        write_jsonl(iter(records), self.output_dir / HELDOUT_COMPLETIONS_FILE)


class TimeLimit(TrainerCallback):
    """Stop after ``seconds`` of training (checked at the end of each step; 0 or None: no limit)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.started = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.seconds and time.perf_counter() - self.started >= self.seconds:
            logger.info("time limit of %.0f s reached at step %d: stopping", self.seconds, state.global_step)
            control.should_training_stop = True


class NonFiniteGuard(TrainerCallback):
    """Raise `TrainingStopped` at the first logged NaN/inf ``loss`` or ``grad_norm``."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                raise TrainingStopped(
                    f"{key} is {value} at step {state.global_step}: training would go on with corrupted weights. "
                    "Likely causes: sdpa attention with padded prompts in bf16 (use --attn_implementation eager), "
                    "or a learning rate too high (lower --learning_rate)."
                )


class CheckpointRecord(TrainerCallback):
    """Copy ``record`` (a file of the output directory) into each checkpoint Trainer saves."""

    def __init__(self, record: str | Path) -> None:
        self.record = Path(record)

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir() and self.record.is_file():
            shutil.copy2(self.record, checkpoint / self.record.name)
