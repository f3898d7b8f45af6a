"""The model presets: the small one is the miniature bench/efficacy.sh trains (real Qwen2.5-VL
classes, tens of millions of parameters, digits spelt one by one, images large enough to see)."""

from __future__ import annotations

import json
import math

from trainer import synthetic
from trainer.tiny_model import PRESETS, build, parameter_count


def test_the_small_preset_is_the_research_architecture_in_miniature(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    out = build(tmp_path / "small", preset="small", eos_rate=None)
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert 10_000_000 <= parameter_count(model) <= 100_000_000
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.tokenize("[123, 45]")[:4] == ["[", "1", "2", "3"], "every digit its own token"
    # One vision window per image: the largest synthetic image fits in it.
    largest = max(max(size) for size in synthetic.SIZE_PRESETS["small"])
    side = math.isqrt(PRESETS["small"].max_pixels)
    window = json.loads((out / "config.json").read_text())["vision_config"]["window_size"]
    assert largest <= side <= window


def test_the_tiny_preset_is_unchanged_and_small():
    tiny = PRESETS["tiny"]
    assert (tiny.hidden_size, tiny.layers, tiny.split_digits, tiny.vision_window) == (64, 2, False, 112)
