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


def test_the_published_presets_are_the_published_architectures_with_this_tokenizers_ids():
    """qwen2_5_vl_3b and qwen3_vl_4b (bench/fullsize.sh) are Qwen2.5-VL-3B-Instruct's and
    Qwen3-VL-4B-Instruct's published configurations: their parameter counts (built on the meta
    device: no memory), tied embeddings and vocabulary, with the special tokens of our tokenizer."""
    import torch
    from transformers import AutoModelForImageTextToText

    from trainer.tiny_model import PUBLISHED, build_published_config, build_tokenizer

    tokenizer = build_tokenizer(PRESETS["small"].vocab_size, PRESETS["small"].split_digits)
    expected = {
        "qwen2_5_vl_3b": ("Qwen2_5_VLForConditionalGeneration", 3_754_622_976, 2048, 36),
        "qwen3_vl_4b": ("Qwen3VLForConditionalGeneration", 4_437_815_808, 2560, 36),
    }
    for name, (model_class, parameters, hidden, layers) in expected.items():
        config = build_published_config(tokenizer, name)
        assert config.model_type == PUBLISHED[name].family
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config)
        assert type(model).__name__ == model_class and parameter_count(model) == parameters
        assert model.get_input_embeddings().weight is model.get_output_embeddings().weight  # tied, as published
        text = config.text_config
        assert (text.hidden_size, text.num_hidden_layers, text.vocab_size) == (hidden, layers, 151_936)
        assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert text.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    vision = build_published_config(tokenizer, "qwen2_5_vl_3b").vision_config
    assert (vision.depth, vision.hidden_size, vision.window_size, list(vision.fullatt_block_indexes)) == (
        32,
        1280,
        112,
        [7, 15, 23, 31],
    )
    assert list(build_published_config(tokenizer, "qwen3_vl_4b").vision_config.deepstack_visual_indexes) == [5, 11, 17]


def test_a_published_preset_keeps_its_family(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="qwen3_vl model, not qwen2_5_vl"):
        build(tmp_path / "x", preset="qwen3_vl_4b", family="qwen2_5_vl")
    assert not (tmp_path / "x").exists(), "refused before anything is written"
