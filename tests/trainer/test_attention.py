"""trainer.attention: the packed vision attention and the collated rope positions change the speed of
a training step, never its numbers."""

from __future__ import annotations

import json

import pytest
import torch

from trainer.attention import PACKED_VISION_ATTENTION, WithRopePositions, packed_attention


def test_packed_attention_is_attention_within_each_sequence():
    torch.manual_seed(0)
    lengths = [3, 7, 1, 5, 3, 7, 7]  # repeated lengths are attended together
    q, k, v = (torch.randn(1, 2, sum(lengths), 8, requires_grad=True) for _ in range(3))
    bounds = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    packed, _ = packed_attention(None, q, k, v, scaling=0.3, cu_seq_lens_q=bounds)
    pieces = [
        torch.nn.functional.scaled_dot_product_attention(*(t[:, :, a:b] for t in (q, k, v)), scale=0.3)
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
    ]
    looped = torch.cat(pieces, dim=2).transpose(1, 2)
    assert packed.shape == (1, sum(lengths), 2, 8)
    torch.testing.assert_close(packed, looped)
    grads = torch.autograd.grad(packed.square().sum(), (q, k, v))
    expected = torch.autograd.grad(looped.square().sum(), (q, k, v))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_the_trainers_model_gives_the_loss_and_gradients_of_transformers_own(family, synthetic_dir, tmp_path):
    from trainer import data
    from trainer.model import load_model, load_processor
    from trainer.sft import build_sft_dataset
    from trainer.tiny_model import build

    model_dir = build(tmp_path / family, family=family)
    model = load_model(str(model_dir))
    assert model.config.vision_config._attn_implementation == PACKED_VISION_ATTENTION
    processor = load_processor(str(model_dir))
    examples = data.read_vlm_r1(
        str(synthetic_dir / "train.jsonl"),
        str(synthetic_dir / "images"),
        processor.image_processor,
        None,
        data.coordinate_convention(model_dir),
    )
    dataset = build_sft_dataset(examples[:6], "standard")
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    collate = DataCollatorForVisionLanguageModeling(processor)
    batch = WithRopePositions(collate, model.model.get_rope_index)([dataset[i] for i in range(6)])
    assert batch["position_ids"].shape == (3, *batch["input_ids"].shape)

    def loss_and_grads(inputs: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        loss = model(**inputs).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    ours = loss_and_grads(batch)
    model.config.vision_config._attn_implementation = "sdpa"  # transformers' loop over images
    own = loss_and_grads({k: v for k, v in batch.items() if k != "position_ids"})
    torch.testing.assert_close(ours[0], own[0])
    for got, want in zip(ours[1], own[1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)

    model.config.vision_config._attn_implementation = PACKED_VISION_ATTENTION
    model.save_pretrained(tmp_path / "saved")
    assert PACKED_VISION_ATTENTION not in (tmp_path / "saved" / "config.json").read_text()
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["model_type"] == family


@pytest.mark.parametrize("name", ["trainer.attention", "trainer.model"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), report=True)
    assert result.attempted >= 2 and result.failed == 0
