"""Evaluate a model on an evaluation set the way the research does, with the rewards' parser:

    python -m trainer.evaluate --model DIR --data coco_pos_1_all.jsonl --images val2017/ \\
        --url http://127.0.0.1:8000 --out-dir runs/eval

1. reads the VLM-R1 JSONL (``trainer.data``: ground truth scaled to the pixels the model sees);
2. generates one completion per image, in batches, with greedy decoding (bf16 on a GPU);
3. saves them to ``OUT_DIR/completions.jsonl`` (the input format of ``python -m shared.evaluate``);
4. scores them through the reward service's POST /v1/evaluate and prints the research's table;
   ``OUT_DIR/metrics.json`` holds the table, the per-category breakdown and the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from shared.client import RewardClient
from shared.evaluate import evaluate_images, format_table
from trainer import data, prompts
from trainer import model as model_utils
from trainer.coco_datasets import write_jsonl


def asked_categories(data_file: str, limit: int | None) -> list[str] | None:
    """The union of the lines' ``categories`` (trainer.coco_datasets writes them), over the lines
    that ``data.read_vlm_r1`` reads; None when no line carries any."""
    labels: dict[str, None] = {}
    found = False
    with open(data_file, encoding="utf-8") as handle:
        lines = (line for line in handle if line.strip())
        for count, line in enumerate(lines):
            if limit is not None and count >= limit:
                break
            record = json.loads(line)
            if "categories" in record:
                found = True
                labels.update(dict.fromkeys(record["categories"]))
    return list(labels) if found else None


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def pick_device(requested: str | None) -> str:
    import torch

    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(requested: str | None, device: str) -> str:
    # bf16 where it is native (GPUs); float32 on CPU, where bf16 matmuls are slow or emulated.
    if requested:
        return requested
    return "bfloat16" if device.startswith("cuda") else "float32"


def load_images(paths: Sequence[str]) -> list:
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def generate_completions(
    model,
    processor,
    examples: Sequence[data.Example],
    template: str,
    batch_size: int,
    max_new_tokens: int,
    progress: bool = True,
) -> list[str]:
    """Greedy answers to ``examples``, in batches (the model is put in eval mode for the call)."""
    was_training = model.training
    model.eval()
    completions: list[str] = []
    try:
        for chunk in batches(examples, batch_size):
            questions = [prompts.apply_template(ex.question, template) for ex in chunk]
            images = [load_images(ex.image_paths) for ex in chunk]
            # use_cache: a model in training may have it switched off (gradient checkpointing).
            completions += model_utils.generate(
                model, processor, questions, images, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True
            )
            if progress:
                print(f"generated {len(completions)}/{len(examples)}", file=sys.stderr, flush=True)
    finally:
        model.train(was_training)
    return completions


def completion_records(
    examples: Sequence[data.Example], completions: Sequence[str], template: str, categories: list[str] | None = None
) -> list[dict]:
    """The lines of completions.jsonl: what was asked, what the model said, what it should have said.

    ``categories`` (the set's, hard negatives included) goes on every line, so that
    ``python -m shared.evaluate completions.jsonl`` scores the file exactly as this run did.
    """
    asked = {} if categories is None else {"categories": list(categories)}
    return [
        {
            "source": ex.source,
            "image": list(ex.image_paths),
            "question": prompts.apply_template(ex.question, template),
            "completion": completion,
            "solution": ex.solution,  # in the resized image's pixels, like the completion
            "resized_size": list(ex.resized_size),
            **asked,
        }
        for ex, completion in zip(examples, completions, strict=True)
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainer.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder (Qwen2.5-VL or the tiny model)")
    parser.add_argument("--data", required=True, help="evaluation set, VLM-R1 JSONL (trainer.coco_datasets)")
    parser.add_argument("--images", default="", help="folder the JSONL's image paths are relative to")
    parser.add_argument(
        "--url",
        action="append",
        default=None,
        help="reward service base URL (repeat for failover; default $REWARD_API_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument("--token", default=os.environ.get("REWARD_API_TOKEN"), help="bearer token ($REWARD_API_TOKEN)")
    parser.add_argument("--out-dir", required=True, help="completions.jsonl and metrics.json go here")
    parser.add_argument("--name", default=None, help="row name in the table (default: the model folder's name)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--max-samples", type=int, default=None, help="evaluate the first N lines only")
    parser.add_argument("--template", default="standard", choices=sorted(prompts.QUESTION_TEMPLATES))
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="bfloat16, float16, float32 (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--min-pixels", type=int, default=None)
    parser.add_argument("--max-pixels", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    processor = model_utils.load_processor(args.model, args.min_pixels, args.max_pixels)
    examples = data.read_vlm_r1(args.data, args.images, processor.image_processor, args.max_samples)
    categories = asked_categories(args.data, args.max_samples)

    started = time.perf_counter()
    model = model_utils.load_model(args.model, dtype).to(device).eval()
    loaded = time.perf_counter()
    completions = generate_completions(model, processor, examples, args.template, args.batch_size, args.max_new_tokens)
    generated = time.perf_counter()
    records = completion_records(examples, completions, args.template, categories)
    write_jsonl(records, out_dir / "completions.jsonl")

    urls = args.url or [os.environ.get("REWARD_API_URL", "http://127.0.0.1:8000")]
    images = [{"completion": r["completion"], "solution": r["solution"]} for r in records]
    with RewardClient(urls, token=args.token, timeout=600.0) as client:
        metrics = evaluate_images(client, images, categories)
    scored = time.perf_counter()

    name = args.name or Path(args.model).name
    table = format_table(metrics, name)
    print(table)
    timing = {
        "device": device,
        "dtype": dtype,
        "batch_size": args.batch_size,
        "images": len(examples),
        "load_seconds": loaded - started,
        "generate_seconds": generated - loaded,
        "images_per_second": len(examples) / max(generated - loaded, 1e-9),
        "score_seconds": scored - generated,
    }
    result = {
        "name": name,
        "model": args.model,
        "data": args.data,
        "template": args.template,
        "metrics": metrics,
        "timing": timing,
        "table": table,
    }
    with open(out_dir / "metrics.json", "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    print(f"completions: {out_dir / 'completions.jsonl'}; metrics: {out_dir / 'metrics.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
