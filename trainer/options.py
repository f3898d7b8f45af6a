"""Command-line options shared by GRPO (``trainer.train``) and SFT (``trainer.sft``).

Each dataclass is a group of TRL-style arguments (``TrlParser`` reads them from the YAML file and
the command line, which wins). Both trainers take the same data, reward-service, held-out and
time-limit options, so that an SFT warm start and the GRPO run after it read the same data the
same way, and are evaluated the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DataArguments:
    """The training data and how the images are resized."""

    data_files: str = field(default="", metadata={"help": "VLM-R1 JSONL training files, several separated by ':'."})
    image_folders: str = field(
        default="", metadata={"help": "Image folder of each data file, separated by ':' (one for all is fine)."}
    )
    question_template: str = field(
        default="standard", metadata={"help": "Question template of the research: 'standard', 'enhanced' or 'none'."}
    )
    max_samples: int | None = field(default=None, metadata={"help": "Read at most this many training lines."})
    min_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Smallest image area the processor resizes to (default: as saved with the model; the "
            "value used is saved with the checkpoint, so evaluation sees the same)."
        },
    )
    max_pixels: int | None = field(
        default=None,
        metadata={"help": "Largest image area the processor resizes to (default: as saved with the model)."},
    )


@dataclass
class ServiceArguments:
    """Where the reward service is and how hard to try."""

    reward_urls: str = field(
        default="http://127.0.0.1:8000",
        metadata={"help": "Reward service base URLs, separated by ','; requests are spread and fail over."},
    )
    reward_token: str | None = field(
        default=None, metadata={"help": "Bearer token of the reward service (default: env REWARD_API_TOKEN)."}
    )
    reward_timeout: float = field(default=60.0, metadata={"help": "Seconds per reward request attempt."})
    reward_max_retries: int = field(default=5, metadata={"help": "Retries per reward request before training stops."})
    reward_backoff_base: float = field(default=0.25, metadata={"help": "Backoff base (s), full jitter, doubling."})
    reward_backoff_max: float = field(default=10.0, metadata={"help": "Longest backoff (s) between retries."})

    def client_settings(self) -> dict:
        """The reward client's retry budget, as the client takes it (and as the run records it)."""
        return {
            "timeout": self.reward_timeout,
            "max_retries": self.reward_max_retries,
            "backoff_base": self.reward_backoff_base,
            "backoff_max": self.reward_backoff_max,
        }

    def token(self) -> str | None:
        # The environment serves containers: compose cannot add a flag only when a secret is set.
        return self.reward_token or os.environ.get("REWARD_API_TOKEN") or None

    def urls(self) -> list[str]:
        return [url.strip() for url in self.reward_urls.split(",") if url.strip()]


@dataclass
class VisionArguments:
    """How the vision tower (and its merger) trains."""

    freeze_vision_modules: bool = field(default=False, metadata={"help": "Train the language model only."})
    vision_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate of the vision tower and its merger (default: --learning_rate); the "
            "schedule scales it as it scales the rest. A model trained from scratch at a high rate needs a "
            "lower one here (README 'Does GRPO teach the detector?'). A resumed run keeps the rate it started with."
        },
    )

    def __post_init__(self) -> None:
        from trainer.errors import UserError

        if self.freeze_vision_modules and self.vision_learning_rate is not None:
            raise UserError("--freeze_vision_modules and --vision_learning_rate: a frozen tower has no rate; give one")


@dataclass
class HeldOutArguments:
    """Held-out evaluation during training, and a wall-clock budget."""

    heldout_data: str = field(
        default="",
        metadata={
            "help": "VLM-R1 JSONL held-out set: greedy answers scored through the service's /v1/evaluate at the "
            "start, every --heldout_every_steps steps and at the end (heldout/* metrics, heldout.jsonl)."
        },
    )
    heldout_images: str = field(default="", metadata={"help": "Image folder of the held-out set."})
    heldout_every_steps: int = field(default=0, metadata={"help": "Evaluate every N steps (0: start and end only)."})
    heldout_max_samples: int | None = field(default=None, metadata={"help": "Use the first N held-out lines."})
    heldout_batch_size: int = field(default=64, metadata={"help": "Held-out generation batch size."})
    heldout_max_new_tokens: int = field(default=256, metadata={"help": "Longest held-out answer, in tokens."})
    max_seconds: float | None = field(
        default=None, metadata={"help": "Stop training after this many seconds of wall time (with max_steps as a cap)."}
    )


def heldout_callback(
    options: Any,
    processor: Any,
    output_dir: str | Path,
    template: str,
    coordinates: str = "pixels",
):
    """The `HeldOutEvaluation` the options (`HeldOutArguments` and `ServiceArguments`) ask for, or
    None without ``--heldout_data``; ground truth in the model's ``coordinates``
    (`trainer.data.coordinate_convention`)."""
    if not options.heldout_data:
        return None
    from shared.client import RewardClient
    from trainer import data
    from trainer.callbacks import HeldOutEvaluation
    from trainer.evaluate import asked_categories

    examples = data.read_vlm_r1(
        options.heldout_data,
        options.heldout_images,
        processor.image_processor,
        options.heldout_max_samples,
        coordinates,
    )
    settings = options.client_settings()
    settings["timeout"] = max(settings["timeout"], 600.0)  # one /v1/evaluate call scores the whole set
    client = RewardClient(options.urls(), token=options.token(), **settings)
    return HeldOutEvaluation(
        examples,
        processor,
        client,
        output_dir,
        options.heldout_every_steps,
        template,
        asked_categories(options.heldout_data, options.heldout_max_samples),
        options.heldout_batch_size,
        options.heldout_max_new_tokens,
    )


def parse_run_arguments(options_class: type, config_class: type, prog: str, description: str, argv: Any):
    """(options, config, model config) of a trainer's command line, parsed by TRL's ``TrlParser`` and
    checked: a TrainingArguments refusal, a missing model folder or no data are one `UserError`."""
    from trl import ModelConfig, TrlParser

    from trainer.errors import UserError, check_model_folder, quiet_logs

    # transformers types the dataclasses as a NewType of Any, which no class satisfies
    dataclasses: Any = (options_class, config_class, ModelConfig)
    parser = TrlParser(dataclasses, prog=prog, description=description)
    quiet_logs()
    try:
        options, args, model_args = parser.parse_args_and_config(argv)
    except ValueError as exc:  # TrainingArguments' own checks, e.g. bf16 (TRL's default) on a CPU-only machine
        raise UserError(f"invalid arguments: {exc}") from None
    if not model_args.model_name_or_path:
        raise UserError("--model_name_or_path (a local model directory) is required")
    check_model_folder(model_args.model_name_or_path)
    if not options.data_files:
        raise UserError("--data_files is required")
    return options, args, model_args
