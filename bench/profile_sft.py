"""Where one SFT step's time goes: ``python -m bench.profile_sft [trainer.sft arguments]``.

Builds the SFT trainer exactly as ``trainer.sft`` does, then measures apart, on the run's device:
the data loader alone (``--dataloader_num_workers`` as given), the training step alone on batches
already loaded, and a profile of a few steps (cProfile for the Python side, torch.profiler for the
kernels). Prints a report and writes it, with the numbers as JSON, to ``PROFILE_OUT`` (default
``profile``). ``PROFILE_STEPS`` (default 8) steps are timed; ``PROFILE_VISION=split`` measures
transformers' own vision attention (one call per image) and rope positions (in the training step)
instead of `trainer.attention`'s.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_loader(loader: Any, batches: int) -> tuple[list, float]:
    """(the first ``batches`` batches, seconds per batch after the first)."""
    iterator = iter(loader)
    loaded = [next(iterator)]
    start = time.perf_counter()
    for _ in range(batches - 1):
        loaded.append(next(iterator))
    return loaded, (time.perf_counter() - start) / max(batches - 1, 1)


def time_steps(trainer: Any, batches: list) -> float:
    """Seconds per optimiser step (forward, backward, step) on batches already loaded."""
    model = trainer.model
    _sync()
    start = time.perf_counter()
    for batch in batches:
        trainer.training_step(model, batch)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
    _sync()
    return (time.perf_counter() - start) / len(batches)


def loss_both_ways(trainer: Any, batch: dict) -> tuple[float, float]:
    """The batch's loss as transformers computes it (per-image vision attention, its own rope positions)
    and as the trainer does (packed vision attention, positions from the collator)."""
    import torch

    from trainer.attention import PACKED_VISION_ATTENTION

    vision = trainer.model.config.vision_config
    current, losses = vision._attn_implementation, []
    for implementation in ("sdpa", PACKED_VISION_ATTENTION):
        vision._attn_implementation = implementation
        with torch.no_grad():  # the model's own rope positions the first time, the collator's the second
            inputs = {k: v for k, v in batch.items() if k != "position_ids" or implementation != "sdpa"}
            losses.append(float(trainer.compute_loss(trainer.model, inputs)))
    vision._attn_implementation = current
    return losses[0], losses[1]


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from trainer.model import load_processor
    from trainer.sft import build_trainer, parse_arguments

    out = Path(os.environ.get("PROFILE_OUT", "profile"))
    out.mkdir(parents=True, exist_ok=True)
    steps = int(os.environ.get("PROFILE_STEPS", "8"))
    options, args, model_args = parse_arguments(argv)
    processor = load_processor(model_args.model_name_or_path, options.min_pixels, options.max_pixels)
    trainer = build_trainer(options, args, model_args, processor)
    if os.environ.get("PROFILE_VISION") == "split":  # transformers' own path: one attention call per image
        trainer.model.config.vision_config._attn_implementation = "sdpa"
        trainer.data_collator = trainer.data_collator.collator  # and rope positions in the training step
    trainer.create_optimizer_and_scheduler(num_training_steps=1000)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by train() otherwise

    batches, loader_seconds = time_loader(trainer.get_train_dataloader(), steps + 2)
    device = trainer.model.device
    batches = [{k: v.to(device) if hasattr(v, "to") else v for k, v in b.items()} for b in batches]
    loss_split, loss_packed = loss_both_ways(trainer, batches[0])
    time_steps(trainer, batches[:2])  # warm-up: allocator, kernels' first calls
    step_seconds = time_steps(trainer, batches[2:])

    report = io.StringIO()
    profiler = cProfile.Profile()
    profiler.enable()
    time_steps(trainer, batches[2:5])
    profiler.disable()
    pstats.Stats(profiler, stream=report).sort_stats("tottime").print_stats(30)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        time_steps(trainer, batches[2:4])
    averages = prof.key_averages()
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    report.write(averages.table(sort_by=sort, row_limit=30))
    report.write(averages.table(sort_by="count", row_limit=15))
    numbers = {
        "batch": args.per_device_train_batch_size,
        "vision_attention": trainer.model.config.vision_config._attn_implementation,
        "dataloader_num_workers": args.dataloader_num_workers,
        "loader_seconds_per_batch": loader_seconds,
        "step_seconds_on_loaded_batches": step_seconds,
        "samples_per_second_loader": args.per_device_train_batch_size / loader_seconds,
        "samples_per_second_steps": args.per_device_train_batch_size / step_seconds,
        "kernel_launches_per_step": sum(e.count for e in averages if e.key.startswith("cuda")) / 2,
        "loss_transformers_own": loss_split,
        "loss_packed_and_collated": loss_packed,
        "input_tokens_per_sample": float(batches[0]["input_ids"].shape[1]),
    }
    text = json.dumps(numbers, indent=1) + "\n" + report.getvalue()
    (out / "profile.txt").write_text(text, encoding="utf-8")
    (out / "profile.json").write_text(json.dumps(numbers, indent=1), encoding="utf-8")
    print(json.dumps(numbers, indent=1), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
