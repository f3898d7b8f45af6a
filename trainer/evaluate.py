"""Evaluate a model on an evaluation set the way the research does, with the rewards' parser:

    python -m trainer.evaluate --model_name_or_path DIR --data_files coco_pos_1_all.jsonl \\
        --image_folders val2017/ --reward_urls http://127.0.0.1:8000 --output_dir runs/eval

The options are named as trainer.train's and trainer.sft's (the old ``--model``, ``--data``,
``--images``, ``--url``, ``--token``, ``--out-dir``... still work as aliases).

1. checks that the reward service answers (before any model is loaded);
2. reads the VLM-R1 JSONL (``trainer.data``: ground truth in the model's coordinate convention);
3. generates one completion per image, in batches, with greedy decoding (bf16 on a GPU);
4. saves them to ``OUTPUT_DIR/completions.jsonl`` (the input format of ``python -m shared.evaluate``);
5. scores them through the reward service's POST /v1/evaluate and prints the research's table;
   ``OUTPUT_DIR/metrics.json`` holds the table, the per-category breakdown and the timings, and
   ``OUTPUT_DIR/per_category.png`` draws the per-category AP. If scoring fails, the message says
   where the completions are and how to score them again without generating.
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

from shared.client import RewardClient, RewardServiceError
from shared.evaluate import evaluate_images, format_table
from trainer import data, prompts
from trainer import model as model_utils
from trainer.coco_datasets import write_jsonl
from trainer.errors import (
    EXIT_REWARD_SERVICE,
    UserError,
    check_model_folder,
    offline_by_default,
    quiet_logs,
    reward_catalogue,
    run_command,
)

offline_by_default()  # before transformers is imported (none of the imports above import it)


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
    parser = argparse.ArgumentParser(prog="od-evaluate", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add(
        "--model_name_or_path",
        "--model",
        dest="model",
        required=True,
        help="model folder (Qwen2.5-VL, Qwen3-VL, a trainer.sft/train output or trainer.tiny_model)",
    )
    add(
        "--data_files",
        "--data",
        dest="data",
        required=True,
        help="evaluation set, VLM-R1 JSONL (trainer.coco_datasets)",
    )
    add("--image_folders", "--images", dest="images", default="", help="folder the JSONL's image paths are relative to")
    add(
        "--reward_urls",
        "--url",
        dest="urls",
        action="append",
        default=None,
        help="reward service base URLs, separated by ',' or repeated (failover; default $REWARD_API_URL or "
        "http://127.0.0.1:8000)",
    )
    add(
        "--reward_token",
        "--token",
        dest="token",
        default=None,
        help="bearer token of the reward service (default: env REWARD_API_TOKEN)",
    )
    add(
        "--output_dir",
        "--out-dir",
        dest="output_dir",
        required=True,
        help="completions.jsonl, metrics.json and per_category.png go here",
    )
    add("--name", default=None, help="row name in the table (default: the model folder's name)")
    add("--batch_size", "--batch-size", dest="batch_size", type=int, default=8, help="generation batch size")
    add(
        "--max_new_tokens",
        "--max-new-tokens",
        dest="max_new_tokens",
        type=int,
        default=1024,
        help="longest answer, in tokens",
    )
    add(
        "--max_samples",
        "--max-samples",
        dest="max_samples",
        type=int,
        default=None,
        help="evaluate the first N lines only",
    )
    add(
        "--question_template",
        "--template",
        dest="template",
        default="standard",
        choices=sorted(prompts.QUESTION_TEMPLATES),
        help="question template of the research (as in training)",
    )
    add("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    add("--dtype", default=None, help="bfloat16, float16, float32 (default: bf16 on GPU, fp32 on CPU)")
    add(
        "--min_pixels",
        "--min-pixels",
        dest="min_pixels",
        type=int,
        default=None,
        help="smallest image area after resizing (default: as saved with the model)",
    )
    add(
        "--max_pixels",
        "--max-pixels",
        dest="max_pixels",
        type=int,
        default=None,
        help="largest image area after resizing (default: as saved with the model)",
    )
    add("--reward_timeout", type=float, default=600.0, help="seconds for the one /v1/evaluate call")
    return parser.parse_args(argv)


def service_urls(values: Sequence[str] | None) -> list[str]:
    given = values or [os.environ.get("REWARD_API_URL", "http://127.0.0.1:8000")]
    return [url.strip() for value in given for url in value.split(",") if url.strip()]


def check_service(client: RewardClient, urls: Sequence[str]) -> None:
    """GET /v1/rewards before any model is loaded: a service that is down, or refuses the token,
    fails the command at once (not after generating every completion)."""
    reward_catalogue(client, urls)


def plot_per_category(metrics: dict, name: str, path: Path) -> Path | None:
    """Bar chart of each category's AP, AP50 and NMS-AP (None when the answer has no breakdown)."""
    rows = metrics.get("per_category") or []
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [row["category"] for row in rows]
    keys = [("ap", "AP"), ("ap50", "AP50"), ("nms_ap", "NMS-AP")]
    width = 0.8 / len(keys)
    figure, axis = plt.subplots(figsize=(max(5.0, 0.6 * len(labels) + 2), 3.8))
    for index, (key, title) in enumerate(keys):
        values = [100 * (row.get(key) or 0.0) for row in rows]
        axis.bar([i + index * width for i in range(len(labels))], values, width, label=title)
    axis.set_xticks([i + width for i in range(len(labels))], labels, rotation=45, ha="right", fontsize=8)
    axis.set_ylabel("%")
    axis.set_title(f"{name}: per category (mAP {100 * (metrics.get('ap') or 0.0):.1f})")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    quiet_logs()
    check_model_folder(args.model)
    urls = service_urls(args.urls)
    token = args.token or os.environ.get("REWARD_API_TOKEN") or None
    out_dir = Path(args.output_dir)
    with RewardClient(urls, token=token, timeout=args.reward_timeout) as client:
        check_service(client, urls)
        try:
            coordinates = data.coordinate_convention(args.model)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        processor = model_utils.load_processor(args.model, args.min_pixels, args.max_pixels)
        examples = data.read_vlm_r1(args.data, args.images, processor.image_processor, args.max_samples, coordinates)
        categories = asked_categories(args.data, args.max_samples)
        out_dir.mkdir(parents=True, exist_ok=True)
        device = pick_device(args.device)
        dtype = pick_dtype(args.dtype, device)

        started = time.perf_counter()
        model = model_utils.load_model(args.model, dtype).to(device).eval()
        loaded = time.perf_counter()
        completions = generate_completions(
            model, processor, examples, args.template, args.batch_size, args.max_new_tokens
        )
        generated = time.perf_counter()
        records = completion_records(examples, completions, args.template, categories)
        saved = out_dir / "completions.jsonl"
        write_jsonl(records, saved)

        images = [{"completion": r["completion"], "solution": r["solution"]} for r in records]
        try:
            metrics = evaluate_images(client, images, categories)
        except RewardServiceError as exc:
            raise UserError(
                f"scoring failed ({exc}). The {len(records)} completions are saved in {saved}: once the service "
                f"answers, score them without generating again: python -m shared.evaluate {saved} --url URL",
                EXIT_REWARD_SERVICE,
            ) from None
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
        "coordinates": coordinates,
        "metrics": metrics,
        "timing": timing,
        "table": table,
    }
    with open(out_dir / "metrics.json", "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    picture = plot_per_category(metrics, name, out_dir / "per_category.png")
    print(
        f"completions: {saved}; metrics: {out_dir / 'metrics.json'}"
        + (f"; per-category picture: {picture}" if picture else ""),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
