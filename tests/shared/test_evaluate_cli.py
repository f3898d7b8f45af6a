"""python -m shared.evaluate: a completions JSONL in, the metrics table out, through the real service."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shared import evaluate
from services.reward_api.local import REPO_ROOT

CAT = [0, 0, 10, 10]


def line(completion_items, solution, categories=None, **extra) -> str:
    record = {"completion": f"<answer>```json\n{json.dumps(completion_items)}\n```</answer>", "solution": solution, **extra}
    if categories is not None:
        record["categories"] = categories
    return json.dumps(record)


def write(tmp_path, *lines) -> str:
    path = tmp_path / "completions.jsonl"
    path.write_text("\n".join(lines) + "\n\n")
    return str(path)


def test_cli_prints_the_table_and_writes_json(tmp_path, service, capsys):
    path = write(
        tmp_path,
        # the dog is a hard negative asked in image 1; NMS keeps it and loses the cat
        line([{"bbox_2d": CAT, "label": "dog"}, {"bbox_2d": CAT, "label": "cat"}], [{"bbox_2d": CAT, "label": "cat"}],
             ["cat", "dog"], image="a.jpg"),
        line([{"bbox_2d": CAT, "label": "dog"}], [{"bbox_2d": CAT, "label": "dog"}], ["dog", "bird"]),
    )
    out = tmp_path / "metrics.json"
    assert evaluate.main([path, "--url", service.url, "--name", "RL", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| Model | mAP | AP50 | Greedy Precision (IoU=0.5) | Greedy Recall (IoU=0.5) | NMS-AP |" in table
    assert "| RL | 75.00 | 75.00 | 66.67 | 100.00 | 25.00 |" in table
    assert "| bird | 0 | 0 | - | - | - | - | - |" in table
    saved = json.loads(out.read_text())
    assert saved["name"] == "RL"
    assert [row["category"] for row in saved["metrics"]["per_category"]] == ["cat", "dog", "bird"]


def test_categories_option_overrides_the_file(tmp_path, service, capsys):
    path = write(tmp_path, line([{"bbox_2d": CAT, "label": "dog"}, {"bbox_2d": CAT, "label": "cat"}],
                                [{"bbox_2d": CAT, "label": "cat"}], ["cat", "dog"]))
    # With only "cat" as category, the dog label is unknown: it takes no part in NMS.
    assert evaluate.main([path, "--url", service.url, "--categories", "cat"]) == 0
    assert "| model | 100.00 | 100.00 | 50.00 | 100.00 | 100.00 |" in capsys.readouterr().out


def test_read_completions_unions_categories_in_order(tmp_path):
    path = write(tmp_path, line([], "None", ["b", "a"]), line([], "None", ["a", "c"]), line([], "None"))
    images, categories = evaluate.read_completions(path)
    assert len(images) == 3 and set(images[0]) == {"completion", "solution"}
    assert categories == ["b", "a", "c"]
    assert evaluate.read_completions(write(tmp_path, line([], "None")))[1] is None


@pytest.mark.parametrize("bad", ['{"solution": "None"}', "not json", '{"completion": "x", "solution": "None", "categories": "a"}'])
def test_bad_line_is_an_error_naming_the_line(tmp_path, bad, capsys):
    path = write(tmp_path, line([], "None"), bad)
    assert evaluate.main([path, "--url", "http://127.0.0.1:9"]) == 1
    assert "completions.jsonl:2" in capsys.readouterr().err


def test_request_error_from_the_service_is_reported(tmp_path, service, capsys):
    path = write(tmp_path, json.dumps({"completion": "x", "solution": [{"bbox_2d": [1], "label": "cat"}]}))
    assert evaluate.main([path, "--url", service.url]) == 1
    assert "images[0].solution" in capsys.readouterr().err


def test_module_runs_as_a_command(tmp_path, service):
    path = write(tmp_path, line([{"bbox_2d": CAT, "label": "cat"}], [{"bbox_2d": CAT, "label": "cat"}]))
    run = subprocess.run([sys.executable, "-m", "shared.evaluate", path, "--url", service.url],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "| cat | 1 | 1 | 100.00 | 100.00 | 100.00 | 100.00 | 100.00 |" in run.stdout
