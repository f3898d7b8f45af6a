"""Model families: Qwen2.5-VL answers in pixels of the resized image, Qwen3-VL (and Qwen2-VL) in
0-1000 of the image's width and height. The convention is read from the model's config, the ground
truth sent to the service is in it, and a tiny Qwen3-VL built offline trains (SFT, GRPO) and
evaluates end to end."""

from __future__ import annotations

import json

import pytest

from services.reward_api.local import LocalService
from tests.trainer.cli import CPU_RUN
from trainer import data, evaluate, prompts, sft, train
from trainer.model import load_processor
from trainer.tiny_model import build


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tiny_qwen3_vl"), family="qwen3_vl")


def test_the_convention_comes_from_the_models_config(tiny_model_dir, qwen3_dir, tmp_path):
    assert data.coordinate_convention(tiny_model_dir) == data.PIXELS
    assert data.coordinate_convention(qwen3_dir) == data.NORMALISED
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ValueError, match="no known box convention; supported: qwen2_5_vl"):
        data.coordinate_convention(tmp_path)


def test_qwen3_ground_truth_is_normalised_to_1000(qwen3_dir, tmp_path):
    from PIL import Image

    Image.new("RGB", (200, 100), "white").save(tmp_path / "a.png")
    record = prompts.vlm_r1_record("a.png", "q", [{"bbox_2d": [20, 10, 100, 50], "label": "x"}])
    (tmp_path / "t.jsonl").write_text(json.dumps(record) + "\n")
    processor = load_processor(str(qwen3_dir))
    assert processor.image_processor.patch_size == 16  # Qwen3-VL's patches; merged: 32 pixels
    [example] = data.read_vlm_r1(
        str(tmp_path / "t.jsonl"), str(tmp_path), processor.image_processor, coordinates=data.NORMALISED
    )
    assert example.solution == [{"bbox_2d": pytest.approx([100, 100, 500, 500]), "label": "x"}]
    assert example.resized_size[0] % 32 == 0 and example.resized_size[1] % 32 == 0


def test_tiny_qwen3_vl_trains_and_evaluates_end_to_end(qwen3_dir, synthetic_dir, tmp_path):
    sft_dir, grpo_dir, eval_dir = tmp_path / "sft", tmp_path / "grpo", tmp_path / "eval"
    common = [
        "--data_files",
        str(synthetic_dir / "train.jsonl"),
        "--image_folders",
        str(synthetic_dir / "images"),
        *CPU_RUN,
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "0.01",
    ]
    with LocalService.start() as server:
        assert (
            sft.main(
                ["--model_name_or_path", str(qwen3_dir), "--output_dir", str(sft_dir), "--max_steps", "2", *common]
            )
            == 0
        )
        assert (
            train.main(
                [
                    "--model_name_or_path",
                    str(sft_dir),
                    "--output_dir",
                    str(grpo_dir),
                    "--max_steps",
                    "2",
                    *common,
                    "--reward_urls",
                    server.url,
                    "--rewards",
                    "format",
                    "ap",
                    "cosine",
                    "--num_generations",
                    "2",
                    "--max_completion_length",
                    "16",
                    "--metrics_port",
                    "0",
                ]
            )
            == 0
        )
        assert (
            evaluate.main(
                [
                    "--model_name_or_path",
                    str(grpo_dir),
                    "--data_files",
                    str(synthetic_dir / "train.jsonl"),
                    "--image_folders",
                    str(synthetic_dir / "images"),
                    "--reward_urls",
                    server.url,
                    "--output_dir",
                    str(eval_dir),
                    "--max_samples",
                    "4",
                    "--max_new_tokens",
                    "16",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )

    summary = json.loads((grpo_dir / "train_summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 2
    assert json.loads((grpo_dir / "reward_service.json").read_text())["coordinates"] == data.NORMALISED
    for run in (sft_dir, grpo_dir):
        assert json.loads((run / "config.json").read_text())["model_type"] == "qwen3_vl"
        assert json.loads((run / "processor_config.json").read_text())["processor_class"] == "Qwen3VLProcessor"
    result = json.loads((eval_dir / "metrics.json").read_text())
    assert result["coordinates"] == data.NORMALISED and result["metrics"]["n_images"] == 4
    # What the service scored against: the data's boxes, x by 1000 / width and y by 1000 / height.
    sources = [json.loads(line) for line in (synthetic_dir / "train.jsonl").read_text().splitlines()[:4]]
    saved = [json.loads(line) for line in (eval_dir / "completions.jsonl").read_text().splitlines()]
    for line, source in zip(saved, sources, strict=True):
        width, height = data.image_size(synthetic_dir / "images" / source["image"])
        expected = data.read_solution(source["conversations"][1]["value"])
        assert [item["bbox_2d"] for item in line["solution"]] == [
            pytest.approx(
                [
                    b["bbox_2d"][0] * 1000 / width,
                    b["bbox_2d"][1] * 1000 / height,
                    b["bbox_2d"][2] * 1000 / width,
                    b["bbox_2d"][3] * 1000 / height,
                ]
            )
            for b in expected
        ]
    assert (eval_dir / "per_category.png").is_file()


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
