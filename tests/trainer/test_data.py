"""Prompts, VLM-R1 JSONL reading and the coordinate conversion (no service, no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from trainer import data, prompts
from trainer.model import load_processor


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_processor(str(tiny_model_dir), min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)


def test_processor_has_an_image_processor_without_torchvision(processor):
    # AutoProcessor alone would give the bare tokenizer here (no video processor without torchvision).
    assert hasattr(processor, "image_processor") and hasattr(processor, "tokenizer")
    out = processor.apply_chat_template(
        [
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "image": Image.new("RGB", (100, 75))},
                        {"type": "text", "text": "hi"},
                    ],
                }
            ]
        ],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )
    assert "pixel_values" in out and list(out["image_grid_thw"][0]) == [1, 6, 8]  # 84 x 112 after resize


def test_boxes_are_scaled_to_the_image_the_model_sees(processor, tmp_path):
    # 100 x 75 is off the 28 grid: smart_resize makes it 112 x 84 (w x h).
    Image.new("RGB", (100, 75), "white").save(tmp_path / "a.png")
    record = prompts.vlm_r1_record(
        "a.png", prompts.detection_question(["red square"]), [{"bbox_2d": [10, 15, 50, 60], "label": "red square"}]
    )
    (tmp_path / "train.jsonl").write_text(json.dumps(record) + "\n")
    [example] = data.read_vlm_r1(str(tmp_path / "train.jsonl"), str(tmp_path), processor.image_processor)
    assert example.original_size == (100, 75)
    assert example.resized_size == (112, 84)
    # The processor's own output agrees on the resized size (grid of 14-pixel patches).
    grid = processor.image_processor(images=[Image.new("RGB", (100, 75))])["image_grid_thw"][0]
    assert (int(grid[2]) * 14, int(grid[1]) * 14) == example.resized_size
    sx, sy = 112 / 100, 84 / 75
    assert example.solution == [{"bbox_2d": pytest.approx([10 * sx, 15 * sy, 50 * sx, 60 * sy]), "label": "red square"}]
    assert "[10, 15, 50, 60]" in example.solution_original  # the original stays in the data


def test_max_pixels_shrinks_and_boxes_follow(tmp_path, tiny_model_dir):
    small = load_processor(str(tiny_model_dir), min_pixels=28 * 28, max_pixels=28 * 28 * 4)
    Image.new("RGB", (400, 300), "white").save(tmp_path / "big.png")
    record = prompts.vlm_r1_record("big.png", "q", [{"bbox_2d": [0, 0, 400, 300], "label": "x"}])
    (tmp_path / "t.jsonl").write_text(json.dumps(record) + "\n")
    [example] = data.read_vlm_r1(str(tmp_path / "t.jsonl"), str(tmp_path), small.image_processor)
    w, h = example.resized_size
    assert w % 28 == 0 and h % 28 == 0 and w * h <= 28 * 28 * 4 and (w, h) != (400, 300)
    assert example.solution[0]["bbox_2d"] == pytest.approx([0, 0, w, h])


def test_none_answers_multi_image_and_several_files(processor, tmp_path):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (90, 90)).save(tmp_path / name)
    other = tmp_path / "other"
    other.mkdir()
    Image.new("RGB", (70, 110)).save(other / "c.png")
    first = prompts.vlm_r1_record(["a.png", "b.png"], "q", [], accu_reward_method="odLength")
    second = prompts.vlm_r1_record("c.png", "q", [{"bbox_2d": [1, 2, 3, 4], "label": "y"}])
    (tmp_path / "one.jsonl").write_text(json.dumps(first) + "\n")
    (tmp_path / "two.jsonl").write_text(json.dumps(second) + "\n")
    examples = data.read_vlm_r1(
        f"{tmp_path}/one.jsonl:{tmp_path}/two.jsonl", f"{tmp_path}:{other}", processor.image_processor
    )
    assert [len(ex.image_paths) for ex in examples] == [2, 1]
    assert first["conversations"][0]["value"].startswith("<image><image>")
    assert examples[0].question == "q" and examples[0].solution == [] and examples[0].solution_original == "None"
    assert examples[0].accu_reward == "od_length" and examples[1].accu_reward is None
    dataset = data.build_dataset(examples, "enhanced")
    row = dataset[0]
    assert len(row["images"]) == 2 and row["images"][0].size == (90, 90)
    assert row["prompt"][0]["content"].startswith("q First thinks about the reasoning process")
    assert row["solution"] == []


BAD_SOLUTIONS = [
    "[1, 2]",
    '```json\n{"a": 1}\n```',
    '```json\n[{"bbox_2d": [1, 2, 3], "label": "x"}]\n```',
    # what the trainer's own reader used to accept and the service refused (issue 10)
    '```json\n[]\n``` ```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "x"}]\n```',  # two blocks
    '```json\n[{"bbox_2d": [30, 2, 3, 4], "label": "x"}]\n```',  # inverted
    '```json\n[{"bbox_2d": [NaN, 2, 3, 4], "label": "x"}]\n```',  # NaN
    '```json\n[{"bbox_2d": [true, 2, 3, 4], "label": "x"}]\n```',  # a boolean
]
GOOD_SOLUTIONS = [
    "None",
    "<answer> None </answer>",
    "```json\n[]\n```",
    '<answer>```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "x"}]\n```</answer>',
]


def test_the_loader_refuses_exactly_what_the_service_refuses():
    from services.reward_api.engine.scoring import INVALID_SOLUTION, score_batch

    for text in BAD_SOLUTIONS + GOOD_SOLUTIONS:
        scores = score_batch([{"completion": "x", "solution": text}], ["format"])
        refused_by_service = scores.error_reasons[0] == INVALID_SOLUTION
        try:
            data.read_solution(text)
            refused_here = False
        except ValueError as exc:
            refused_here = True
            assert str(exc) == scores.errors[0]  # the same reader, the same message
        assert refused_here == refused_by_service == (text in BAD_SOLUTIONS), text


def test_a_box_the_service_would_refuse_once_scaled_is_refused_at_load(processor, tmp_path):
    Image.new("RGB", (28, 28)).save(tmp_path / "a.png")  # scaled up to 56 x 56: the area grows 4 times
    record = prompts.vlm_r1_record("a.png", "q", [{"bbox_2d": [0, 0, 90_000, 90_000], "label": "x"}])
    (tmp_path / "t.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(data.DataError, match=r"t\.jsonl:1: ground truth the reward service would refuse once scaled"):
        data.read_vlm_r1(str(tmp_path / "t.jsonl"), str(tmp_path), processor.image_processor)


@pytest.mark.parametrize("bad", BAD_SOLUTIONS)
def test_unreadable_ground_truth_is_refused_with_its_line(processor, tmp_path, bad):
    Image.new("RGB", (90, 90)).save(tmp_path / "a.png")
    record = {
        "image": "a.png",
        "conversations": [{"from": "human", "value": "<image>q"}, {"from": "gpt", "value": bad}],
    }
    (tmp_path / "t.jsonl").write_text("\n" + json.dumps(record) + "\n")
    with pytest.raises(data.DataError, match=r"t\.jsonl:2: unreadable ground truth"):
        data.read_vlm_r1(str(tmp_path / "t.jsonl"), str(tmp_path), processor.image_processor)


def test_research_prompts():
    q = prompts.ovd_question(["person sit on motorcycle", "motorcycle is sat on by person"])
    assert "motorcycle is sat on by person. Output each" in q  # the findings' missing-space fix
    assert prompts.apply_template("Q", "standard") == (
        "Q Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    )
    assert prompts.apply_template("Q", "enhanced").endswith(
        "<think> reasoning process here </think><answer> answer here </answer>"
    )
    assert "['a', 'b']" in prompts.detection_question(["a", "b"])
    assert prompts.answer_text([]) == "None"
    assert data.read_solution(
        "<answer>" + prompts.answer_text([{"bbox_2d": [1, 2, 3, 4], "label": "a"}]) + "</answer>"
    ) == [{"bbox_2d": [1.0, 2.0, 3.0, 4.0], "label": "a"}]
    with pytest.raises(ValueError):
        prompts.apply_template("Q", "fancy")


def test_synthetic_data_has_absent_objects_and_resized_images(synthetic_dir, processor):
    lines = [json.loads(line) for line in (synthetic_dir / "train.jsonl").read_text().splitlines()]
    answers = [line["conversations"][1]["value"] for line in lines]
    assert "None" in answers and any(a.startswith("```json") for a in answers)
    examples = data.read_vlm_r1(
        str(synthetic_dir / "train.jsonl"), str(synthetic_dir / "images"), processor.image_processor
    )
    assert all(ex.original_size != ex.resized_size for ex in examples)
    # Every asked-for label that has a box is named in the question.
    for ex in examples:
        assert all(item["label"] in ex.question for item in ex.solution)


@pytest.mark.parametrize("config", sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")))
def test_recipe_configs_parse(config):
    import yaml
    from trl import GRPOConfig, ModelConfig, TrlParser

    from trainer.train import ODArguments, parse_reward

    recipe = yaml.safe_load(config.read_text())
    assert recipe["bf16"] is True and recipe["gradient_checkpointing"] is True
    # Every key is an argument of the trainer (bf16 is refused on a machine without a GPU: off here).
    od, args, model = TrlParser((ODArguments, GRPOConfig, ModelConfig)).parse_args_and_config(
        ["--config", str(config), "--output_dir", "/tmp/unused", "--bf16", "false", "--use_cpu", "true"]
    )
    assert model.model_name_or_path.endswith("Qwen2.5-VL-3B-Instruct") and model.dtype == "bfloat16"
    assert args.num_generations == 8 and args.max_completion_length == 1024
    assert args.gradient_checkpointing and args.beta == float(config.stem.rsplit("kl", 1)[1])
    assert [parse_reward(r)[0] for r in od.rewards][0] == "format" and od.question_template == "enhanced"
    assert ("weighted_sum" in (od.params() or {})) == ("wsum" in config.stem)


def test_prometheus_metrics_of_the_trainer():
    import httpx

    from services.reward_api.local import free_port
    from trainer.telemetry import Telemetry

    telemetry = Telemetry(port := free_port(), ["format", "od_length"])
    try:
        telemetry.step.set(3)
        telemetry.reward_mean.labels(reward="format").set(0.5)
        telemetry.observe_request(0.2)
        telemetry.observe_retry()
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        telemetry.close()
    assert "trainer_step 3.0" in text
    assert 'trainer_reward_mean{reward="format"} 0.5' in text and 'trainer_reward_mean{reward="od_length"}' in text
    assert "trainer_reward_request_seconds_count 1.0" in text
    assert "trainer_reward_retries_total 1.0" in text


def test_reward_token_defaults_to_the_environment(monkeypatch):
    from trainer.train import ODArguments

    monkeypatch.setenv("REWARD_API_TOKEN", "from-env")
    assert ODArguments(data_files="x").token() == "from-env"
    assert ODArguments(data_files="x", reward_token="flag").token() == "flag"
    monkeypatch.delenv("REWARD_API_TOKEN")
    assert ODArguments(data_files="x").token() is None


def test_the_run_record_counts_unscored_samples_and_the_versions_used(tmp_path):
    from shared.contract import ScoreResponse
    from trainer.train import RunRecord

    record = RunRecord(tmp_path / "reward_service.json", {"urls": ["http://rm:8000"]})
    answer = ScoreResponse(
        rewards={"ap": [0.5, None, None]},
        total=[0.5, None, None],
        versions={"ap": "1"},
        errors=[None, "solution item 0: bbox_2d is missing", "solution: not a list"],
        ids=[None, None, None],
    )
    record.on_scored(answer)
    record.on_scored(answer)
    written = json.loads((tmp_path / "reward_service.json").read_text())
    assert written["unscored_samples"] == 4 and written["versions_used"] == {"ap": "1"}
    assert written["urls"] == ["http://rm:8000"]


def test_the_tiny_model_is_a_few_hundred_thousand_parameters(tiny_model_dir):
    from trainer.model import load_model

    model = load_model(str(tiny_model_dir), "float32")
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 1_000_000
