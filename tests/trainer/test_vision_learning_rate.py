"""--vision_learning_rate gives the vision tower (and its merger) its own rate, in SFT and GRPO.

Why it exists: trained from scratch at the language model's rate, the merger's output grew into one
large vector shared by every image token and the model learnt to answer blind (README "Does GRPO
teach the detector?"). The check here: at a vision rate of 0 the vision weights stay exactly as
they were while the rest trains, so the rate really reaches only those parameters, through
Trainer's own optimizer and scheduler."""

from __future__ import annotations

import pytest
import torch

from services.reward_api.local import LocalService
from tests.trainer.cli import CPU_RUN, TINY_GRPO


def changed(before_dir, after_dir) -> tuple[bool, bool]:
    """(any vision weight changed, any other weight changed) between two saved models."""
    from transformers import AutoModelForImageTextToText

    after = AutoModelForImageTextToText.from_pretrained(after_dir, dtype=torch.float32)
    before = AutoModelForImageTextToText.from_pretrained(before_dir, dtype=torch.float32)
    vision = other = False
    for (name, a), b in zip(after.named_parameters(), before.parameters(), strict=True):
        moved = not torch.equal(a, b)
        if ".visual." in f".{name}":
            vision |= moved
        else:
            other |= moved
    return vision, other


@pytest.mark.parametrize("trainer_module", ["sft", "train"])
def test_a_vision_rate_of_zero_trains_everything_but_the_vision_tower(
    trainer_module, tiny_model_dir, synthetic_dir, tmp_path
):
    import importlib

    main = importlib.import_module(f"trainer.{trainer_module}").main
    out = tmp_path / trainer_module
    common = [
        "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out),
        "--data_files", str(synthetic_dir / "train.jsonl"), "--image_folders", str(synthetic_dir / "images"),
        "--max_steps", "2", "--vision_learning_rate", "0", *CPU_RUN,
    ]  # fmt: skip
    with LocalService.start() as server:
        if trainer_module == "sft":
            extra = ["--per_device_train_batch_size", "4", "--learning_rate", "1e-3"]
        else:
            # An untrained tiny model's completions often tie on reward (no gradient): weight decay,
            # which AdamW applies at each group's own rate, moves the weights regardless.
            extra = [*TINY_GRPO, "--weight_decay", "0.1", "--reward_urls", server.url, "--rewards", "format", "ap"]
            extra += ["--metrics_port", "0"]
        assert main([*common, *extra]) == 0
    vision, other = changed(tiny_model_dir, out)
    assert other, "the language model did not train"
    assert not vision, "the vision tower moved at a vision learning rate of 0"


def test_without_the_option_the_vision_tower_trains_too(tiny_model_dir, synthetic_dir, tmp_path):
    from trainer import sft

    out = tmp_path / "sft"
    status = sft.main(
        [
            "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out),
            "--data_files", str(synthetic_dir / "train.jsonl"), "--image_folders", str(synthetic_dir / "images"),
            "--max_steps", "2", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", *CPU_RUN,
        ]
    )  # fmt: skip
    assert status == 0
    assert changed(tiny_model_dir, out) == (True, True)
