"""Supervised warm start with TRL's SFTTrainer: ``python -m trainer.sft --model_name_or_path DIR --data_files F ...``.

The same VLM-R1 JSONL, image resizing and question templates as GRPO (``trainer.train``): each
line becomes a prompt (its question with the template, its images) and a completion built from its
ground truth (`trainer.prompts.sft_completion`: a short ``<think>`` and the answer, in the pixels of
the resized image the model sees). Only the completion is learnt. The checkpoint in
``--output_dir`` (model, processor with the resize bounds used) is what ``trainer.train`` and
``trainer.evaluate`` load as they are.

Arguments are TRL's ``SFTConfig`` and ``ModelConfig`` plus the shared data, held-out and time-limit
options (`trainer.options`). With ``--heldout_data`` the reward service (``--reward_urls``) scores
the held-out answers during training, exactly as in GRPO. ``--resume_from_checkpoint`` (a path or
``last``) resumes a stopped run; user mistakes end with one line and an exit code of
`trainer.errors`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import (
    offline_by_default,
    quiet_logs,
    run_command,
)
from trainer.options import DataArguments, HeldOutArguments, ServiceArguments, VisionArguments

offline_by_default()  # before transformers is imported: a missing model folder fails at once

logger = logging.getLogger("trainer.sft")


@dataclass
class SFTArguments(DataArguments, ServiceArguments, HeldOutArguments, VisionArguments):
    """This project's SFT arguments (the rest are TRL's SFTConfig and ModelConfig)."""

    thinking: str = field(
        default="",
        metadata={"help": "The <think> text of every target answer (default: trainer.prompts.SFT_THINKING)."},
    )


def build_sft_dataset(examples: Sequence[Any], template: str, thinking: str | None = None):
    """The GRPO dataset (`trainer.data.build_dataset`) plus a ``completion`` column: the answer to learn."""
    from trainer import data, prompts

    completions = [
        [{"role": "assistant", "content": prompts.sft_completion(ex.solution, thinking or prompts.SFT_THINKING)}]
        for ex in examples
    ]
    return data.build_dataset(examples, template, extra_columns={"completion": completions})


def build_trainer(
    options: SFTArguments, args: Any, model_args: Any, processor: Any, callbacks: Sequence[Any] = (), resume=None
):
    """TRL's SFTTrainer on the run's data and model (the checkpoint's weights when resuming a full fine-tune)."""
    from trl import SFTTrainer

    from trainer.attention import rope_positions_in_collator
    from trainer.model import freeze_vision, load_model, master_weights_dtype, train_vision_at
    from trainer.train import coordinates_of, full_weights, load_training_data

    examples, _ = load_training_data(options, processor, coordinates_of(model_args.model_name_or_path))
    dataset = build_sft_dataset(examples, options.question_template, options.thinking)
    source = resume if full_weights(resume) else model_args.model_name_or_path
    # SFT here trains every weight
    dtype = master_weights_dtype(model_args.dtype, args, full_fine_tuning=True, model_path=str(source))
    model = load_model(str(source), dtype, model_args.attn_implementation)
    if options.freeze_vision_modules:
        logger.info("vision tower frozen (%d parameters)", freeze_vision(model))
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=processor, callbacks=list(callbacks)
    )
    rope_positions_in_collator(trainer)  # in the data loader's workers, not in the training step
    train_vision_at(trainer, options.vision_learning_rate)
    return trainer


def parse_arguments(argv: Sequence[str] | None) -> tuple[SFTArguments, Any, Any]:
    from trl import SFTConfig

    from trainer.options import parse_run_arguments

    options, args, model_args = parse_run_arguments(SFTArguments, SFTConfig, "od-sft", __doc__.split("\n\n")[0], argv)
    # Images are opened on access (the dataset's transform) and the columns the collator reads are
    # not the model's arguments: Trainer must keep them.
    args.remove_unused_columns = False
    args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    args.completion_only_loss = True
    return options, args, model_args


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    from trainer.callbacks import NonFiniteGuard, TimeLimit
    from trainer.model import load_processor, model_type, save_processor
    from trainer.options import heldout_callback
    from trainer.telemetry import Telemetry, TelemetryCallback
    from trainer.train import coordinates_of, describe_service, load_weights_here, resume_checkpoint, run_training

    options, args, model_args = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_logs()
    resume = resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    if options.heldout_data:
        describe_service(options)  # the held-out rounds need it: fail now, not after the first steps
    coordinates = coordinates_of(model_args.model_name_or_path)
    processor = load_processor(model_args.model_name_or_path, options.min_pixels, options.max_pixels)
    summary = TelemetryCallback(Telemetry(), args.output_dir, [])  # train_summary.json, as GRPO writes it
    callbacks = [summary, NonFiniteGuard(), TimeLimit(options.max_seconds)]
    heldout = heldout_callback(options, processor, args.output_dir, options.question_template, coordinates)
    if heldout is not None:
        # Before the summary: its last round is in train_summary.json, and its rounds (run in
        # on_step_end) come before the summary holds a SIGTERM for the step's log entry.
        callbacks.insert(0, heldout)
    trainer = build_trainer(options, args, model_args, processor, callbacks, resume)
    if heldout is not None:
        heldout.trainer = trainer
    load_weights_here(trainer, resume)
    status = run_training(trainer, summary, resume)
    if status != 0:
        return status
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero():
        save_processor(processor, args.output_dir, model_type(model_args.model_name_or_path))
        print(f"SFT checkpoint: {Path(args.output_dir)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
