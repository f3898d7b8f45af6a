"""An evaluation run end to end on CPU: the tiny model, a handful of synthetic images, a real
service subprocess; then the scoring-only command on the saved completions gives the same table."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from shared import evaluate as scoring_cli
from services.reward_api.local import LocalService
from trainer import evaluate, synthetic, tiny_model
from trainer.data import read_solution

N_IMAGES = 5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_run")
    model_dir = tiny_model.build(root / "tiny")
    data_file = synthetic.generate(root / "data", N_IMAGES, seed=3)
    out_dir = root / "out"
    with LocalService.start(env={"REWARD_API_LOG_LEVEL": "warning"}) as server:
        code = evaluate.main(
            [
                "--model",
                str(model_dir),
                "--data",
                str(data_file),
                "--images",
                str(data_file.parent / "images"),
                "--url",
                server.url,
                "--out-dir",
                str(out_dir),
                "--batch-size",
                "2",
                "--max-new-tokens",
                "24",
                "--device",
                "cpu",
            ]
        )
        rescored = out_dir / "rescored.json"
        cli_code = scoring_cli.main([str(out_dir / "completions.jsonl"), "--url", server.url, "--out", str(rescored)])
    return {"code": code, "cli_code": cli_code, "out_dir": out_dir, "data": data_file, "rescored": rescored}


def test_run_saves_one_completion_per_image(run):
    assert run["code"] == 0
    lines = [json.loads(line) for line in (run["out_dir"] / "completions.jsonl").read_text().splitlines()]
    assert len(lines) == N_IMAGES
    sources = [json.loads(line) for line in run["data"].read_text().splitlines()]
    for saved, source in zip(lines, sources):
        assert isinstance(saved["completion"], str)
        assert saved["image"][0].endswith(source["image"])
        # the ground truth is scaled into the resized image the model saw; labels are unchanged
        expected = read_solution(source["conversations"][1]["value"])
        assert [item["label"] for item in saved["solution"]] == [item["label"] for item in expected]
        width, height = saved["resized_size"]
        assert all(item["bbox_2d"][2] <= width and item["bbox_2d"][3] <= height for item in saved["solution"])


def test_run_writes_the_table_metrics_and_timing(run):
    result = json.loads((run["out_dir"] / "metrics.json").read_text())
    metrics = result["metrics"]
    assert metrics["n_images"] == N_IMAGES
    assert metrics["n_gt"] == sum(
        len(json.loads(line)["solution"]) for line in (run["out_dir"] / "completions.jsonl").read_text().splitlines()
    )
    assert result["timing"]["device"] == "cpu" and result["timing"]["dtype"] == "float32"
    assert result["timing"]["generate_seconds"] > 0
    assert "| Model | mAP |" in result["table"] and "| tiny |" in result["table"]


def test_scoring_only_command_reproduces_the_run(run):
    assert run["cli_code"] == 0
    rescored = json.loads(run["rescored"].read_text())["metrics"]
    assert rescored == json.loads((run["out_dir"] / "metrics.json").read_text())["metrics"]


def test_asked_categories_come_from_the_lines(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps({"categories": c}) for c in (["a", "b"], ["c", "a"], ["d"])) + "\n")
    assert evaluate.asked_categories(str(path), None) == ["a", "b", "c", "d"]
    assert evaluate.asked_categories(str(path), 2) == ["a", "b", "c"]
    path.write_text(json.dumps({"image": "x"}) + "\n")
    assert evaluate.asked_categories(str(path), None) is None


def test_completions_carry_the_sets_categories_so_a_rescore_matches(tmp_path):
    example = SimpleNamespace(
        source="set.jsonl", image_paths=("a.png",), question="find the cat", solution="None", resized_size=(56, 56)
    )
    lines = evaluate.completion_records([example], ["<answer>None</answer>"], "standard", ["cat", "zebra"])
    assert lines[0]["categories"] == ["cat", "zebra"]  # hard negatives included
    assert "categories" not in evaluate.completion_records([example], ["x"], "standard")[0]
