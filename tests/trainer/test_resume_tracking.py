"""Multi-day runs: a stopped run resumes to the result of an uninterrupted one (GRPO and SFT), the
reward versions recorded with a checkpoint are checked against the live service, TensorBoard event
files are written, ``trainer.plots`` draws any run, and checkpoints load with AutoProcessor."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from services.reward_api.local import LocalService
from tests.trainer.cli import TINY_GRPO
from trainer import plots, sft, train
from trainer.errors import EXIT_SERVICE_AT_START, EXIT_USAGE

REWARDS = ["format", "od_length", "weighted_sum", "cosine"]  # cosine: length-aware, so GRPO has signal


def grpo(model: Path, data_dir: Path, out: Path, url: str, steps: int, *extra: str) -> list[str]:
    return [
        "--model_name_or_path",
        str(model),
        "--data_files",
        str(data_dir / "train.jsonl"),
        "--image_folders",
        str(data_dir / "images"),
        "--reward_urls",
        url,
        "--rewards",
        *REWARDS,
        "--output_dir",
        str(out),
        "--max_steps",
        str(steps),
        "--save_steps",
        "2",
        "--logging_steps",
        "1",
        *TINY_GRPO,
        # constant: a linear schedule depends on max_steps, which the resumed run changes
        "--lr_scheduler_type",
        "constant",
        "--report_to",
        "none",
        "--use_cpu",
        "true",
        "--seed",
        "0",
        "--metrics_port",
        "0",
        *extra,
    ]


def weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def summary(run: Path) -> dict:
    return json.loads((run / "train_summary.json").read_text())


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=1e-6, msg=name)


def assert_same_tail(a: dict, b: dict, keys: tuple[str, ...]) -> None:
    tail_a = [{k: e[k] for k in ("step", *keys) if k in e} for e in a["log_history"][-2:]]
    tail_b = [{k: e[k] for k in ("step", *keys) if k in e} for e in b["log_history"][-2:]]
    assert len(tail_a) == len(tail_b) == 2
    for entry_a, entry_b in zip(tail_a, tail_b, strict=True):
        assert entry_a == pytest.approx(entry_b)


def test_a_stopped_grpo_run_resumes_to_the_result_of_an_uninterrupted_one(
    tiny_model_dir, synthetic_dir, tmp_path, caplog, capsys
):
    full, part = tmp_path / "full", tmp_path / "part"
    caplog.set_level(logging.INFO)
    with LocalService.start() as server:
        assert train.main(grpo(tiny_model_dir, synthetic_dir, full, server.url, 4, "--report_to", "tensorboard")) == 0
        assert train.main(grpo(tiny_model_dir, synthetic_dir, part, server.url, 2)) == 0
        assert (
            train.main(grpo(tiny_model_dir, synthetic_dir, part, server.url, 4, "--resume_from_checkpoint", "last"))
            == 0
        )

        # A reward whose default version moved since the checkpoint: refused, with the fix.
        record = part / "checkpoint-4" / train.REWARD_SERVICE_FILE
        recorded = json.loads(record.read_text())
        assert recorded["versions_used"]["format"] == "2"
        recorded["versions_used"]["format"] = "1"
        record.write_text(json.dumps(recorded))
        capsys.readouterr()
        code = train.main(grpo(tiny_model_dir, synthetic_dir, part, server.url, 6, "--resume_from_checkpoint", "last"))
    err = capsys.readouterr().err
    assert code == EXIT_SERVICE_AT_START, err
    assert "format was scored with version 1, the service would now use version 2" in err
    assert "--rewards format@1 " in err and "Traceback" not in err

    # The resumed process ran 2 steps from step 2 (not 4 from 0) and ends where the uninterrupted run ends.
    resumed, uninterrupted = summary(part), summary(full)
    assert (resumed["steps"], resumed["global_step"]) == (2, 4)
    assert (uninterrupted["steps"], uninterrupted["global_step"]) == (4, 4)
    assert (
        [e["step"] for e in resumed["log_history"]] == [e["step"] for e in uninterrupted["log_history"]] == [1, 2, 3, 4]
    )
    assert_same_tail(resumed, uninterrupted, ("loss", *(f"rewards/{r}/mean" for r in REWARDS)))
    assert_same_weights(part, full)
    moved = weights(full)
    assert any(not torch.equal(moved[k], v) for k, v in weights(tiny_model_dir).items()), "GRPO changed no weight"

    # cosine's length follows the run's max_completion_length; the record travels with the checkpoint.
    record = json.loads((full / train.REWARD_SERVICE_FILE).read_text())
    assert record["reward_params"] == {"cosine": {"max_length": 24}}
    assert record["coordinates"] == "pixels"
    assert (full / "checkpoint-2" / train.REWARD_SERVICE_FILE).is_file()
    # Quiet: no INFO line per reward request.
    assert not [r for r in caplog.records if "/v1/score" in r.getMessage()]

    # TensorBoard through TRL's report_to.
    events = list(full.rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert {"train/loss", "train/rewards/cosine/mean"} <= set(accumulator.Tags()["scalars"])

    # The curves of the run, and a clear failure when there is nothing to draw.
    assert plots.main([str(full)]) == 0 and (full / "training_curves.png").stat().st_size > 10_000
    (tmp_path / "empty").mkdir()
    assert plots.main([str(tmp_path / "empty")]) == 1
    assert "has no logged step to draw" in capsys.readouterr().err

    # The checkpoint names the standard processor class, so that AutoProcessor loads it.
    assert json.loads((full / "processor_config.json").read_text())["processor_class"] == "Qwen2_5_VLProcessor"
    try:
        import torchvision  # noqa: F401
    except ImportError:  # without torchvision AutoProcessor cannot build Qwen's video processor at all
        return
    from transformers import AutoProcessor

    assert hasattr(AutoProcessor.from_pretrained(str(full)), "image_processor")


def test_a_stopped_lora_run_resumes_its_adapters(tiny_model_dir, synthetic_dir, tmp_path):
    from safetensors.torch import load_file

    lora = ("--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8")
    full, part = tmp_path / "full", tmp_path / "part"
    with LocalService.start() as server:
        assert train.main(grpo(tiny_model_dir, synthetic_dir, full, server.url, 4, *lora)) == 0
        assert train.main(grpo(tiny_model_dir, synthetic_dir, part, server.url, 2, *lora)) == 0
        assert (
            train.main(
                grpo(tiny_model_dir, synthetic_dir, part, server.url, 4, *lora, "--resume_from_checkpoint", "last")
            )
            == 0
        )
    assert (summary(part)["steps"], summary(part)["global_step"]) == (2, 4)
    first, second = (load_file(str(run / "adapter_model.safetensors")) for run in (full, part))
    assert first.keys() == second.keys() and first
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=1e-6, msg=name)
    assert any(value.abs().sum() > 0 for name, value in first.items() if "lora_B" in name)


def test_a_stopped_sft_run_resumes_to_the_result_of_an_uninterrupted_one(tiny_model_dir, synthetic_dir, tmp_path):
    def args(out: Path, steps: int, *extra: str) -> list[str]:
        return [
            "--model_name_or_path",
            str(tiny_model_dir),
            "--data_files",
            str(synthetic_dir / "train.jsonl"),
            "--image_folders",
            str(synthetic_dir / "images"),
            "--output_dir",
            str(out),
            "--max_steps",
            str(steps),
            "--save_steps",
            "2",
            "--logging_steps",
            "1",
            "--per_device_train_batch_size",
            "4",
            "--learning_rate",
            "0.01",
            "--lr_scheduler_type",
            "constant",
            "--report_to",
            "none",
            "--use_cpu",
            "true",
            "--seed",
            "0",
            *extra,
        ]

    full, part = tmp_path / "full", tmp_path / "part"
    assert sft.main(args(full, 4)) == 0
    assert sft.main(args(part, 2)) == 0
    assert sft.main(args(part, 4, "--resume_from_checkpoint", str(part / "checkpoint-2"))) == 0
    resumed, uninterrupted = summary(part), summary(full)
    assert (resumed["steps"], resumed["global_step"]) == (2, 4)
    assert_same_tail(resumed, uninterrupted, ("loss",))
    assert_same_weights(part, full)
    assert plots.main([str(full)]) == 0


def test_resume_from_a_checkpoint_that_does_not_exist_is_refused(tiny_model_dir, synthetic_dir, tmp_path, capsys):
    with LocalService.start() as server:
        for where in ("last", str(tmp_path / "nowhere" / "checkpoint-7")):
            code = train.main(
                grpo(tiny_model_dir, synthetic_dir, tmp_path / "run", server.url, 2, "--resume_from_checkpoint", where)
            )
            err = capsys.readouterr().err
            assert code == EXIT_USAGE, err
            assert (
                ("holds no checkpoint-N folder" in err) if where == "last" else ("is not a Trainer checkpoint" in err)
            )


def test_resumed_versions_are_checked_against_the_catalogue():
    catalogue = {
        "rewards": [
            {"name": "format", "default_version": "2", "versions": {"1": {}, "2": {}}},
            {"name": "cosine", "default_version": "2", "versions": {"2": {}}},
        ]
    }
    recorded = {"versions_used": {"format": "1", "cosine": "2"}}
    train.check_resumed_versions(recorded, catalogue, ["format@1", "cosine"])  # pinned: still served
    train.check_resumed_versions(None, catalogue, ["format"])  # a run without a record
    with pytest.raises(train.UserError, match="format was scored with version 1"):
        train.check_resumed_versions(recorded, catalogue, ["format", "cosine"])
    with pytest.raises(train.UserError, match=r"ap \(version 2\) is no longer served"):
        train.check_resumed_versions({"versions_used": {"ap": "2"}}, catalogue, ["ap"])


def test_cosine_length_follows_max_completion_length_unless_set():
    assert train.tie_cosine_length(None, ["cosine@2"], 32) == {"cosine": {"max_length": 32}}
    assert train.tie_cosine_length({"cosine": {"max_length": 9}}, ["cosine"], 32) == {"cosine": {"max_length": 9}}
    assert train.tie_cosine_length({"weighted_sum": {"alpha": 1}}, ["weighted_sum"], 32) == {
        "weighted_sum": {"alpha": 1}
    }


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
