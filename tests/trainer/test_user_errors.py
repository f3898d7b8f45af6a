"""Every user mistake ends a trainer command at once with one clear message, its documented exit
code and no traceback: a missing model folder (no minutes of model-hub retries), a missing data
file, bad data lines (every one listed), missing images, the service down or refusing the token;
evaluation checks the service before generating and says where the completions are when scoring
fails."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from services.reward_api.local import LocalService, free_port
from trainer import evaluate, sft, train
from trainer.data import MAX_REPORTED_BAD_LINES, DataError, read_vlm_r1
from trainer.errors import EXIT_CODES, EXIT_DATA, EXIT_REWARD_SERVICE, EXIT_SERVICE_AT_START, EXIT_USAGE
from trainer.model import load_processor


def grpo(model, data_file, images, url, out, *extra) -> list[str]:
    return [
        "--model_name_or_path",
        str(model),
        "--data_files",
        str(data_file),
        "--image_folders",
        str(images),
        "--reward_urls",
        url,
        "--output_dir",
        str(out),
        "--max_steps",
        "1",
        "--use_cpu",
        "true",
        "--report_to",
        "none",
        "--metrics_port",
        "0",
        "--reward_max_retries",
        "0",
        *extra,
    ]


def run(command, argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    started = time.monotonic()
    code = command(argv)
    err = capsys.readouterr().err
    assert time.monotonic() - started < 30, "a user mistake must fail at once"
    assert "Traceback" not in err
    assert code in EXIT_CODES and code != 0, (code, err)
    return code, err


@pytest.fixture(scope="module")
def server():
    with LocalService.start(token="right-token") as service:
        yield service


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory, synthetic_dir):
    """A copy of the synthetic set with three bad lines among good ones."""
    lines = (synthetic_dir / "train.jsonl").read_text().splitlines()
    missing_image = json.loads(lines[2])
    missing_image["image"] = "nowhere.png"
    no_turns = json.loads(lines[3])
    del no_turns["conversations"]
    path = tmp_path_factory.mktemp("bad") / "train.jsonl"
    path.write_text(
        "\n".join([lines[0], "{not json", json.dumps(missing_image), json.dumps(no_turns), lines[4]]) + "\n"
    )
    return path


def test_a_model_folder_that_does_not_exist_fails_at_once(synthetic_dir, tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    for command in (train.main, sft.main):
        code, err = run(
            command,
            grpo(
                missing, synthetic_dir / "train.jsonl", synthetic_dir / "images", "http://127.0.0.1:9", tmp_path / "out"
            )[:14],
            capsys,
        )
        assert code == EXIT_USAGE and f"model folder {missing} does not exist" in err and "HF_HUB_OFFLINE=0" in err
    code, err = run(
        evaluate.main,
        [
            "--model_name_or_path",
            str(missing),
            "--data_files",
            "x.jsonl",
            "--output_dir",
            str(tmp_path / "eval"),
            "--reward_urls",
            "http://127.0.0.1:9",
        ],
        capsys,
    )
    assert code == EXIT_USAGE and "does not exist" in err


def test_the_service_down_or_refusing_the_token_fails_before_any_model_is_loaded(
    tiny_model_dir, synthetic_dir, server, tmp_path, capsys
):
    data, images = synthetic_dir / "train.jsonl", synthetic_dir / "images"
    down = f"http://127.0.0.1:{free_port()}"
    code, err = run(train.main, grpo(tiny_model_dir, data, images, down, tmp_path / "a"), capsys)
    assert code == EXIT_SERVICE_AT_START and f"the reward service at {down} is not reachable" in err
    assert "start it" in err
    code, err = run(
        train.main,
        grpo(tiny_model_dir, data, images, server.url, tmp_path / "b", "--reward_token", "wrong-token"),
        capsys,
    )
    assert code == EXIT_SERVICE_AT_START and "refused the token (HTTP 401" in err and "--reward_token" in err
    code, err = run(
        train.main,
        grpo(
            tiny_model_dir,
            data,
            images,
            server.url,
            tmp_path / "c",
            "--reward_token",
            "right-token",
            "--rewards",
            "format",
            "iou",
        ),
        capsys,
    )
    assert code == EXIT_SERVICE_AT_START and "does not serve ['iou']" in err
    # Evaluation checks the service before it loads the model and generates.
    code, err = run(
        evaluate.main,
        [
            "--model_name_or_path",
            str(tiny_model_dir),
            "--data_files",
            str(data),
            "--image_folders",
            str(images),
            "--reward_urls",
            down,
            "--output_dir",
            str(tmp_path / "eval"),
        ],
        capsys,
    )
    assert code == EXIT_SERVICE_AT_START and "not reachable" in err
    assert not (tmp_path / "eval" / "completions.jsonl").exists()


def test_missing_data_and_bad_lines_are_all_named(tiny_model_dir, synthetic_dir, bad_data, server, tmp_path, capsys):
    auth = ("--reward_token", "right-token")
    code, err = run(
        train.main,
        grpo(tiny_model_dir, tmp_path / "absent.jsonl", synthetic_dir / "images", server.url, tmp_path / "a", *auth),
        capsys,
    )
    assert code == EXIT_DATA and f"data file {tmp_path / 'absent.jsonl'} does not exist" in err
    code, err = run(
        train.main, grpo(tiny_model_dir, bad_data, synthetic_dir / "images", server.url, tmp_path / "b", *auth), capsys
    )
    assert code == EXIT_DATA and "3 unusable data line(s)" in err
    assert f"{bad_data}:2: not a JSON object" in err
    assert f"{bad_data}:3: image {synthetic_dir / 'images' / 'nowhere.png'} not found" in err
    assert f"{bad_data}:4: missing field 'conversations'" in err
    code, err = run(
        sft.main, grpo(tiny_model_dir, bad_data, tmp_path / "no-images", server.url, tmp_path / "c")[:14], capsys
    )
    assert code == EXIT_DATA and f"image folder {tmp_path / 'no-images'} does not exist" in err


def test_the_loader_lists_every_bad_line_up_to_a_bound(tiny_model_dir, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("{broken\n" * (MAX_REPORTED_BAD_LINES + 5))
    with pytest.raises(DataError) as caught:
        read_vlm_r1(str(path), str(tmp_path), load_processor(str(tiny_model_dir)).image_processor)
    message = str(caught.value)
    assert f"{MAX_REPORTED_BAD_LINES + 5} unusable data line(s)" in message
    assert f"{path}:{MAX_REPORTED_BAD_LINES}:" in message and "... and 5 more bad lines" in message


def test_evaluation_says_where_the_completions_are_when_scoring_fails(
    tiny_model_dir, synthetic_dir, tmp_path, capsys, monkeypatch
):
    service = LocalService.start()
    generate = evaluate.generate_completions

    def generate_then_lose_the_service(*args, **kwargs):
        completions = generate(*args, **kwargs)
        service.stop()  # the service goes away between generation and scoring
        return completions

    monkeypatch.setattr(evaluate, "generate_completions", generate_then_lose_the_service)
    out = tmp_path / "eval"
    try:
        code, err = run(
            evaluate.main,
            [
                "--model_name_or_path",
                str(tiny_model_dir),
                "--data_files",
                str(synthetic_dir / "train.jsonl"),
                "--image_folders",
                str(synthetic_dir / "images"),
                "--reward_urls",
                service.url,
                "--output_dir",
                str(out),
                "--max_samples",
                "2",
                "--max_new_tokens",
                "8",
                "--device",
                "cpu",
            ],
            capsys,
        )
    finally:
        service.stop()
    assert code == EXIT_REWARD_SERVICE
    assert f"The 2 completions are saved in {out / 'completions.jsonl'}" in err
    assert f"python -m shared.evaluate {out / 'completions.jsonl'}" in err
    assert len((out / "completions.jsonl").read_text().splitlines()) == 2


def test_options_transformers_refuses_are_one_line_too(tiny_model_dir, synthetic_dir, tmp_path, capsys):
    # TRL defaults to bf16, which transformers refuses on a machine without a GPU unless --use_cpu.
    code, err = run(
        train.main,
        grpo(
            tiny_model_dir,
            synthetic_dir / "train.jsonl",
            synthetic_dir / "images",
            "http://127.0.0.1:9",
            tmp_path / "out",
            "--use_cpu",
            "false",
            "--bf16",
            "true",
            "--fp16",
            "true",
        ),
        capsys,
    )
    assert code == EXIT_USAGE and err.startswith("error: invalid arguments: ")


def test_every_exit_code_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Exit codes and errors", 1)[1].split("\n### ", 1)[0]
    for code in EXIT_CODES:
        assert f"\n| {code} | " in section, f"exit code {code} missing from the README's table"


@pytest.mark.parametrize(
    ("command", "prog"), [(train.main, "od-train"), (sft.main, "od-sft"), (evaluate.main, "od-evaluate")]
)
def test_help_names_the_console_script_and_explains_every_option(command, prog, capsys):
    with pytest.raises(SystemExit) as exited:
        command(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {prog} ")
    for option in ("--model_name_or_path", "--data_files", "--image_folders", "--reward_urls", "--output_dir"):
        assert option in out


def test_every_project_option_has_help():
    from dataclasses import fields

    from trainer.sft import SFTArguments
    from trainer.train import ODArguments

    for group in (ODArguments, SFTArguments):
        undocumented = [f.name for f in fields(group) if not f.metadata.get("help")]
        assert not undocumented, f"{group.__name__}: options without help: {undocumented}"
    for action in evaluate_parser_actions():
        assert action.help, f"trainer.evaluate {action.option_strings} has no help"


def evaluate_parser_actions():
    import argparse

    captured = []
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        captured.extend(a for a in self._actions if a.dest != "help")
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture
    try:
        with pytest.raises(SystemExit):
            evaluate.parse_args([])
    finally:
        argparse.ArgumentParser.parse_args = original
    return captured
