"""A full fine-tune in half precision keeps float32 master weights: otherwise AdamW's updates at the
recipes' small learning rates round away and the run silently trains almost nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from trainer.model import master_weights_dtype


def fraction_changed_by_one_adamw_step(model, lr: float) -> float:
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    torch.manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    changed = sum(int((p.detach() != b).sum()) for p, b in zip(model.parameters(), before, strict=True))
    return changed / sum(b.numel() for b in before)


def test_bf16_weights_alone_do_not_learn_at_the_recipes_learning_rate(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    bf16 = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    fp32 = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert fraction_changed_by_one_adamw_step(bf16, 1e-6) < 0.2
    assert fraction_changed_by_one_adamw_step(fp32, 1e-6) > 0.99


@pytest.mark.parametrize(
    ("dtype", "args", "full", "expected"),
    [
        ("bfloat16", SimpleNamespace(deepspeed=None, deepspeed_plugin=None, fsdp=[]), True, "float32"),
        ("float16", SimpleNamespace(deepspeed=None, deepspeed_plugin=None, fsdp=[]), True, "float32"),
        ("bfloat16", SimpleNamespace(deepspeed=None, deepspeed_plugin=None, fsdp=[]), False, "bfloat16"),
        ("bfloat16", SimpleNamespace(deepspeed="zero2.json", deepspeed_plugin=None, fsdp=[]), True, "bfloat16"),
        ("bfloat16", SimpleNamespace(deepspeed=None, deepspeed_plugin=None, fsdp=["full_shard"]), True, "bfloat16"),
        ("float32", SimpleNamespace(deepspeed=None, deepspeed_plugin=None, fsdp=[]), True, "float32"),
        (None, SimpleNamespace(deepspeed=None, deepspeed_plugin=None, fsdp=[]), True, None),
    ],
)
def test_master_weights_dtype(dtype, args, full, expected, monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert master_weights_dtype(dtype, args, full_fine_tuning=full) == expected


def test_accelerate_launched_deepspeed_keeps_the_requested_dtype(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    plain = SimpleNamespace(deepspeed=None, deepspeed_plugin=None, fsdp=[])
    assert master_weights_dtype("bfloat16", plain, full_fine_tuning=True) == "bfloat16"


def test_sft_in_bf16_at_a_small_learning_rate_moves_the_weights(tiny_model_dir, synthetic_dir, tmp_path):
    """End to end: trainer.sft with --dtype bfloat16 --bf16 true at lr 1e-6 trains float32 master
    weights, so one step changes most weights of the checkpoint it saves (over 80%)."""
    from transformers import AutoModelForImageTextToText

    from trainer import sft

    out = tmp_path / "sft"
    status = sft.main(
        [
            "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out),
            "--data_files", str(synthetic_dir / "train.jsonl"), "--image_folders", str(synthetic_dir / "images"),
            "--max_steps", "1", "--per_device_train_batch_size", "4", "--learning_rate", "1e-6",
            "--lr_scheduler_type", "constant", "--dtype", "bfloat16", "--bf16", "true", "--use_cpu", "true",
            "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1",
        ]
    )  # fmt: skip
    assert status == 0
    after = AutoModelForImageTextToText.from_pretrained(out, dtype="auto")  # as saved: float32 master weights
    before = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=after.dtype)
    trained = [(a, b) for (name, a), b in zip(after.named_parameters(), before.parameters(), strict=True)]
    changed = sum(int((a != b).sum()) for a, b in trained)
    # the rest have no gradient in one step (embeddings of tokens absent from the batch); bf16 weights
    # alone change 2-16% at this rate (test above)
    assert changed / sum(b.numel() for _, b in trained) > 0.8


def test_a_checkpoint_saved_in_bf16_loaded_with_auto_gets_float32_master_weights(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForImageTextToText

    from trainer.model import load_model, loaded_dtype

    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert loaded_dtype(None, tmp_path / "bf16") == loaded_dtype("auto", tmp_path / "bf16") == "bfloat16"
    plain = SimpleNamespace(deepspeed=None, deepspeed_plugin=None, fsdp=[], bf16=True)
    for requested in (None, "auto"):
        dtype = master_weights_dtype(requested, plain, full_fine_tuning=True, model_path=tmp_path / "bf16")
        assert load_model(str(tmp_path / "bf16"), dtype).dtype == torch.float32


def test_the_kl_reference_model_gets_the_packed_attention_and_the_requested_dtype(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    from trainer.attention import PACKED_VISION_ATTENTION
    from trainer.model import prepare_reference_model

    reference = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trainer = SimpleNamespace(ref_model=reference, args=SimpleNamespace(deepspeed=None, deepspeed_plugin=None, fsdp=[]))
    prepare_reference_model(trainer, "bfloat16")
    assert reference.dtype == torch.bfloat16
    assert reference.config.vision_config._attn_implementation == PACKED_VISION_ATTENTION
