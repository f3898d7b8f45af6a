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


class TwoPartModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.visual, self.head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)


class PlainTrainer:
    """What `train_vision_at` uses of Trainer: ``model`` and ``create_optimizer``."""

    def __init__(self, model):
        self.model, self.optimizer = model, None

    def create_optimizer(self):
        if self.optimizer is None:  # as Trainer: built once, returned again afterwards
            trainable = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.1)
        return self.optimizer


def test_the_vision_groups_keep_weight_decay_and_follow_the_schedule():
    from trainer.model import train_vision_at

    trainer = PlainTrainer(TwoPartModel())
    train_vision_at(trainer, 1e-4)
    optimizer = trainer.create_optimizer()
    assert trainer.create_optimizer() is optimizer and len(optimizer.param_groups) == 2  # asked twice, split once
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    optimizer.step()
    schedule.step()
    rates = sorted((group["lr"], group["weight_decay"]) for group in optimizer.param_groups)
    assert rates == [(5e-5, 0.1), (5e-4, 0.1)]


@pytest.mark.parametrize("rate", [-1e-4, float("nan"), float("inf")])
def test_a_rate_that_is_not_a_rate_is_refused(rate):
    from trainer.errors import UserError
    from trainer.model import train_vision_at

    with pytest.raises(UserError, match="finite rate of 0 or more"):
        train_vision_at(PlainTrainer(TwoPartModel()), rate)


def test_an_optimizer_without_the_vision_tower_is_refused_not_trained_at_one_rate():
    """A frozen tower, or LoRA adapters on the language model only: the option would do nothing."""
    from trainer.errors import UserError
    from trainer.model import train_vision_at

    model = TwoPartModel()
    model.visual.requires_grad_(False)
    trainer = PlainTrainer(model)
    train_vision_at(trainer, 1e-4)
    with pytest.raises(UserError, match="no vision parameter is trained"):
        trainer.create_optimizer()


def test_freezing_the_tower_and_giving_it_a_rate_is_a_usage_error(tiny_model_dir, synthetic_dir, tmp_path, capsys):
    from trainer import sft
    from trainer.errors import EXIT_USAGE

    status = sft.main(
        [
            "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "out"),
            "--data_files", str(synthetic_dir / "train.jsonl"), "--image_folders", str(synthetic_dir / "images"),
            "--freeze_vision_modules", "true", "--vision_learning_rate", "1e-4", *CPU_RUN,
        ]
    )  # fmt: skip
    assert status == EXIT_USAGE
    error = capsys.readouterr().err
    assert "a frozen tower has no rate" in error and "Traceback" not in error
