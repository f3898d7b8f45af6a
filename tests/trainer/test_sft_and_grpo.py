"""SFT warm start -> GRPO -> evaluation on the tiny model, and the defects that silently corrupt a
GRPO run: image-token flags on the wrong tokens, a crash without a record, resize bounds that
differ between training and evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from services.reward_api.local import LocalService
from tests.trainer.cli import CPU_RUN, TINY_GRPO
from trainer import evaluate, sft, train
from trainer.model import load_processor


def data_args(data_dir: Path) -> list[str]:
    return ["--data_files", str(data_dir / "train.jsonl"), "--image_folders", str(data_dir / "images")]


def heldout_args(data_dir: Path, every: int) -> list[str]:
    return [
        "--heldout_data",
        str(data_dir / "train.jsonl"),
        "--heldout_images",
        str(data_dir / "images"),
        "--heldout_every_steps",
        str(every),
        "--heldout_max_new_tokens",
        "24",
        "--heldout_max_samples",
        "8",
    ]


def common(out: Path, url: str, steps: int) -> list[str]:
    return [
        "--output_dir",
        str(out),
        "--max_steps",
        str(steps),
        *CPU_RUN,
        "--reward_urls",
        url,
    ]


def grpo_args(model: Path, data_dir: Path, out: Path, url: str, steps: int) -> list[str]:
    return [
        "--model_name_or_path",
        str(model),
        *data_args(data_dir),
        *common(out, url, steps),
        "--rewards",
        "format",
        "ap",
        *TINY_GRPO,
        "--metrics_port",
        "0",
    ]


def heldout_rounds(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "heldout.jsonl").read_text().splitlines()]


def test_sft_then_grpo_then_evaluation_end_to_end(tiny_model_dir, synthetic_dir, tmp_path):
    sft_dir, grpo_dir, eval_dir = tmp_path / "sft", tmp_path / "grpo", tmp_path / "eval"
    with LocalService.start() as server:
        assert (
            sft.main(
                [
                    "--model_name_or_path",
                    str(tiny_model_dir),
                    *data_args(synthetic_dir),
                    *common(sft_dir, server.url, 4),
                    "--per_device_train_batch_size",
                    "4",
                    "--learning_rate",
                    "0.01",
                    *heldout_args(synthetic_dir, 2),
                ]
            )
            == 0
        )
        assert (
            train.main([*grpo_args(sft_dir, synthetic_dir, grpo_dir, server.url, 2), *heldout_args(synthetic_dir, 1)])
            == 0
        )
        assert (
            evaluate.main(
                [
                    "--model",
                    str(grpo_dir),
                    "--data",
                    str(synthetic_dir / "train.jsonl"),
                    "--images",
                    str(synthetic_dir / "images"),
                    "--url",
                    server.url,
                    "--out-dir",
                    str(eval_dir),
                    "--max-samples",
                    "8",
                    "--max-new-tokens",
                    "24",
                ]
            )
            == 0
        )

    # SFT learnt (its loss fell) and its checkpoint is what GRPO and evaluation loaded.
    summary = json.loads((sft_dir / "train_summary.json").read_text())
    losses = [entry["loss"] for entry in summary["log_history"] if "loss" in entry]
    assert summary["status"] == "completed" and len(losses) == 4 and losses[-1] < losses[0]
    # Held-out rounds at the start, every N steps and at the end, each scored by /v1/evaluate.
    assert [r["step"] for r in heldout_rounds(sft_dir)] == [0, 2, 4]
    assert [r["step"] for r in heldout_rounds(grpo_dir)] == [0, 1, 2]
    for run in (sft_dir, grpo_dir):
        for record in heldout_rounds(run):
            assert record["evaluate"]["n_images"] == 8 and "heldout/map" in record
        assert len((run / "heldout_completions.jsonl").read_text().splitlines()) == 8
    logged = json.loads((grpo_dir / "train_summary.json").read_text())["log_history"]
    assert sum("heldout/map" in entry for entry in logged) == 3
    assert json.loads((eval_dir / "metrics.json").read_text())["metrics"]["n_images"] == 8


def test_grpo_flags_image_tokens_where_the_prompt_has_them_in_every_forward_pass(
    tiny_model_dir, synthetic_dir, tmp_path, monkeypatch
):
    """TRL re-tokenises the prompts for its training forward pass and lines the image-token flags
    up with LEFT-padded prompt ids: with a right-padding processor, prompts of different lengths
    got image features on the wrong tokens. Every forward pass, generation and training alike,
    must flag exactly the image tokens."""
    import trainer.model as model_module

    calls: list[tuple[torch.Tensor, torch.Tensor, bool]] = []
    load_model = model_module.load_model

    def recording_load_model(*args, **kwargs):
        model = load_model(*args, **kwargs)

        def record(module, positional, keywords):
            ids, flags = keywords.get("input_ids"), keywords.get("mm_token_type_ids")
            if ids is not None and flags is not None:
                calls.append((ids.detach().clone(), flags.detach().clone(), torch.is_grad_enabled()))

        model.register_forward_pre_hook(record, with_kwargs=True)
        return model

    monkeypatch.setattr(model_module, "load_model", recording_load_model)
    with LocalService.start() as server:
        assert train.main(grpo_args(tiny_model_dir, synthetic_dir, tmp_path / "run", server.url, 2)) == 0

    image_token = load_processor(str(tiny_model_dir)).image_token_id
    training = [call for call in calls if call[2]]
    assert training, "no training forward pass carried image-token flags"
    for ids, flags, _ in calls:
        assert torch.equal(flags == 1, ids == image_token), "image features placed on the wrong tokens"
    # The check means something only if the prompts were padded (different lengths in one batch).
    assert any(
        (ids[:, 0] != ids[0, 0]).any() or (ids == load_processor(str(tiny_model_dir)).tokenizer.pad_token_id).any()
        for ids, _, _ in training
    )


def test_a_run_that_crashes_still_writes_its_summary_with_the_error(
    tiny_model_dir, synthetic_dir, tmp_path, monkeypatch
):
    from trl import GRPOTrainer

    def crash(self, *args, **kwargs):
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(GRPOTrainer, "train", crash)
    out = tmp_path / "run"
    with LocalService.start() as server, pytest.raises(RuntimeError, match="device-side assert"):
        train.main(grpo_args(tiny_model_dir, synthetic_dir, out, server.url, 2))
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == "RuntimeError: CUDA error: device-side assert triggered"


def test_training_and_evaluation_resize_images_with_the_bounds_saved_with_the_model(tmp_path, synthetic_dir):
    """One source of truth: without --min_pixels/--max_pixels both read the model's saved bounds,
    and the checkpoint GRPO writes carries the bounds it trained with."""
    from trainer.tiny_model import build

    model = build(tmp_path / "model", min_pixels=28 * 28 * 2, max_pixels=28 * 28 * 9)
    od, _, model_args = train.parse_arguments(
        [
            "--model_name_or_path",
            str(model),
            *data_args(synthetic_dir),
            "--output_dir",
            str(tmp_path / "run"),
            "--use_cpu",
            "true",
        ]
    )
    assert (od.min_pixels, od.max_pixels) == (None, None)
    assert model_args.attn_implementation == train.DEFAULT_ATTENTION
    trained = load_processor(str(model), od.min_pixels, od.max_pixels, padding_side="left")
    with LocalService.start() as server:
        assert train.main(grpo_args(model, synthetic_dir, tmp_path / "run", server.url, 1)) == 0
    evaluated = load_processor(str(tmp_path / "run"))
    for processor in (trained, evaluated):
        assert (processor.image_processor.size["shortest_edge"], processor.image_processor.size["longest_edge"]) == (
            28 * 28 * 2,
            28 * 28 * 9,
        )


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_a_nan_loss_stops_training_with_a_record_and_exit_status_4(tiny_model_dir, synthetic_dir, tmp_path):
    """The NaN guard: an absurd learning rate blows the weights up after the first step; the run
    stops at the first non-finite loss or gradient norm instead of training on garbage."""
    from trainer.errors import EXIT_STOPPED

    out = tmp_path / "sft"
    with LocalService.start() as server:
        status = sft.main([
            "--model_name_or_path", str(tiny_model_dir), *data_args(synthetic_dir), *common(out, server.url, 6),
            "--per_device_train_batch_size", "4", "--learning_rate", "1e30", "--max_grad_norm", "0",
        ])  # fmt: skip
    assert status == EXIT_STOPPED
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["status"] == "failed" and "TrainingStopped" in summary["error"]
    assert "--attn_implementation eager" in summary["error"] and summary["steps"] < 6
