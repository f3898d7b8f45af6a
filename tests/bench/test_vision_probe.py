"""bench/vision_probe.py: whether a model looks at its images (image reliance, feature content)."""

from __future__ import annotations

import doctest
import json

import pytest
import torch

from bench import vision_probe


def test_docstring_examples():
    assert doctest.testmod(vision_probe).failed == 0


def test_the_probe_swaps_the_images_and_measures_the_features(tiny_model_dir, synthetic_dir, tmp_path, capsys):
    """On the untrained tiny model: the swapped images change the loss (a swap that silently kept
    each sample's own image would give exactly 0), and the feature numbers are those of its tower."""
    out = tmp_path / "probe.json"
    data = ["--data", str(synthetic_dir / "train.jsonl"), "--images", str(synthetic_dir / "images")]
    assert vision_probe.main([str(tiny_model_dir), *data, "--samples", "6", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result == json.loads(capsys.readouterr().out)
    assert result["samples"] == 6
    assert result["image_reliance"] == result["loss_swapped_images"] - result["loss_own_images"]
    assert result["image_reliance"] != 0.0
    assert 0 < result["feature_content_ratio"] == result["feature_spread"] / result["feature_mean_norm"]


def test_a_model_whose_images_all_look_alike_has_no_reliance(tiny_model_dir, synthetic_dir, tmp_path):
    """The blind case the probe exists to catch: a merger that outputs one vector for every image
    token (its last layer's weights zeroed, its bias kept) has no feature spread (the untrained
    tiny model: about 0.27) and a reliance of about 0."""
    from transformers import AutoModelForImageTextToText

    from trainer.model import load_processor, save_processor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    last = model.model.visual.merger.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.uniform_(-1.0, 1.0)
    blind = tmp_path / "blind"
    model.save_pretrained(blind)
    save_processor(load_processor(str(tiny_model_dir)), blind, "qwen2_5_vl")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_model_dir / name).is_file() and not (blind / name).is_file():
            (blind / name).write_bytes((tiny_model_dir / name).read_bytes())
    result = vision_probe.probe(str(blind), str(synthetic_dir / "train.jsonl"), str(synthetic_dir / "images"), 6, "cpu")
    # not exactly 0: another image of another size moves the answer's positions by a few tokens
    assert abs(result["image_reliance"]) < 1e-4
    assert result["feature_content_ratio"] < 1e-5


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU: --device cuda is valid here")
def test_asking_for_a_gpu_on_a_machine_without_one_is_one_clear_line(tiny_model_dir, synthetic_dir, capsys):
    data = ["--data", str(synthetic_dir / "train.jsonl"), "--images", str(synthetic_dir / "images")]
    assert vision_probe.main([str(tiny_model_dir), *data]) == 2
    error = capsys.readouterr().err
    assert "no CUDA device; give --device cpu" in error and "Traceback" not in error
