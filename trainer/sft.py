"""Supervised warm start with TRL's SFTTrainer: ``python -m trainer.sft --model_name_or_path DIR --data_files F ...``.

The same VLM-R1 JSONL, image resizing and question templates as GRPO (``trainer.train``): each
line becomes a prompt (its question with the template, its images) and a completion built from its
ground truth (`trainer.prompts.sft_completion`: a short ``<think>`` and the answer, in the pixels of
the resized image the model sees). Only the completion is learnt. The checkpoint in
``--output_dir`` (model, processor with the resize bounds used) is what ``trainer.train`` and
``trainer.evaluate`` load as they are.

Arguments are TRL's ``SFTConfig`` and ``ModelConfig`` plus the shared data, held-out and time-limit
options (`trainer.options`). With ``--heldout_data`` the reward service (``--reward_urls``) scores
the held-out answers during training, exactly as in GRPO.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.options import DataArguments, HeldOutArguments, ServiceArguments

logger = logging.getLogger("trainer.sft")


@dataclass
class SFTArguments(DataArguments, ServiceArguments, HeldOutArguments):
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


def parse_arguments(argv: Sequence[str] | None) -> tuple[SFTArguments, Any, Any]:
    from trl import ModelConfig, SFTConfig, TrlParser

    options, args, model_args = TrlParser((SFTArguments, SFTConfig, ModelConfig)).parse_args_and_config(argv)
    if not model_args.model_name_or_path:
        raise SystemExit("--model_name_or_path (a local model directory) is required")
    if not options.data_files:
        raise SystemExit("--data_files is required")
    # Images are opened on access (the dataset's transform) and the columns the collator reads are
    # not the model's arguments: Trainer must keep them.
    args.remove_unused_columns = False
    args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    args.completion_only_loss = True
    return options, args, model_args


def main(argv: Sequence[str] | None = None) -> int:
    from trl import SFTTrainer

    from trainer.callbacks import NonFiniteGuard, TimeLimit
    from trainer.model import load_model, load_processor
    from trainer.options import heldout_callback
    from trainer.telemetry import Telemetry, TelemetryCallback
    from trainer.train import load_training_data, run_training

    options, args, model_args = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per reward request otherwise
    processor = load_processor(model_args.model_name_or_path, options.min_pixels, options.max_pixels)
    examples, _ = load_training_data(options, processor)
    dataset = build_sft_dataset(examples, options.question_template, options.thinking)
    model = load_model(model_args.model_name_or_path, model_args.dtype, model_args.attn_implementation)

    summary = TelemetryCallback(Telemetry(), args.output_dir, [])  # train_summary.json, as GRPO writes it
    callbacks = [summary, NonFiniteGuard(), TimeLimit(options.max_seconds)]
    heldout = heldout_callback(options, processor, args.output_dir, options.question_template)
    if heldout is not None:
        callbacks.insert(0, heldout)  # before the summary: its last round is in train_summary.json
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor, callbacks=callbacks)
    if heldout is not None:
        heldout.trainer = trainer
    status = run_training(trainer, summary)
    if status != 0:
        return status
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(args.output_dir)
        print(f"SFT checkpoint: {Path(args.output_dir)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
