"""Score completions produced anywhere (vLLM, an API, ``trainer.evaluate``) with the research's
metrics, through the reward service's POST /v1/evaluate:

    python -m shared.evaluate completions.jsonl --url http://127.0.0.1:8000 [--out metrics.json]

Each line of the JSONL: ``{"completion": str, "solution": str | list, "categories": [str]?}``;
other fields are ignored. ``solution`` is the ground truth in either of the forms /v1/score takes,
in the pixel space the model answered in. ``categories`` (optional) lists the labels that image's
question asked for; the set's categories are the union over the file (first appearance order),
unless ``--categories`` names them. Prints the table and, with ``--out``, writes it as JSON.

Client side only: nothing here imports the service.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shared.client import ClientSettings, RewardClient, RewardServiceError

# The summary columns, in the research's order: (response key, column title).
SUMMARY_COLUMNS = (
    ("ap", "mAP"),
    ("ap50", "AP50"),
    ("precision", "Greedy Precision (IoU=0.5)"),
    ("recall", "Greedy Recall (IoU=0.5)"),
    ("nms_ap", "NMS-AP"),
)
CATEGORY_COLUMNS = (
    ("ap", "AP"),
    ("ap50", "AP50"),
    ("nms_ap", "NMS-AP"),
    ("precision", "Precision"),
    ("recall", "Recall"),
)


class CompletionsFileError(ValueError):
    """A line of the completions file that cannot be sent; the message names file and line."""


def read_completions(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[str] | None]:
    """(images for /v1/evaluate, the union of the lines' ``categories`` or None when no line has any)."""
    images: list[dict[str, Any]] = []
    categories: dict[str, None] = {}  # insertion-ordered set
    any_categories = False
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            record = _record(line, f"{path}:{number}")
            images.append({"completion": record["completion"], "solution": record["solution"]})
            if "categories" in record:
                any_categories = True
                categories.update(dict.fromkeys(record["categories"]))
    return images, (list(categories) if any_categories else None)


def _record(line: str, source: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CompletionsFileError(f"{source}: not JSON ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("completion"), str) or "solution" not in record:
        raise CompletionsFileError(f"{source}: needs a string 'completion' and a 'solution'")
    labels = record.get("categories", [])
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise CompletionsFileError(f"{source}: 'categories' must be a list of strings")
    return record


def evaluate_images(
    client: RewardClient, images: Sequence[Mapping[str, Any]], categories: Sequence[str] | None = None
) -> dict[str, Any]:
    """POST /v1/evaluate for one evaluation set (never split: dataset AP cannot be merged)."""
    payload: dict[str, Any] = {"images": list(images)}
    if categories is not None:
        payload["categories"] = list(categories)
    return client.evaluate(payload)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def format_table(metrics: Mapping[str, Any], name: str = "model") -> str:
    """The research's table (percentages), the counts behind it, and the per-category breakdown."""
    summary = _markdown(
        ["Model", *(title for _, title in SUMMARY_COLUMNS)],
        [[name, *(_percent(metrics[key]) for key, _ in SUMMARY_COLUMNS)]],
    )
    counts = (
        f"images {metrics['n_images']} (answered {metrics['n_answered']}), ground-truth boxes {metrics['n_gt']}, "
        f"predictions {metrics['n_pred']} (matched {metrics['matches']}, invalid box {metrics['n_invalid_box']}, "
        f"label not a category {metrics['n_unknown_label']}, no label {metrics['n_no_label']}); "
        f"AP50 after NMS {_percent(metrics['nms_ap50'])}"
    )
    per_category = _markdown(
        ["Category", "GT", "Pred", *(title for _, title in CATEGORY_COLUMNS)],
        (
            [
                row["category"],
                str(row["n_gt"]),
                str(row["n_pred"]),
                *(_percent(row[key]) for key, _ in CATEGORY_COLUMNS),
            ]
            for row in metrics["per_category"]
        ),
    )
    return "\n".join([*summary, "", counts, "", *per_category])


def parse_categories(value: str | None) -> list[str] | None:
    """``--categories``: a file with one label per line (``@labels.txt``) or comma-separated labels."""
    if value is None:
        return None
    if value.startswith("@"):
        with open(value[1:], encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.strip()]
    return [label.strip() for label in value.split(",") if label.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("completions", help="JSONL: one {completion, solution, categories?} per image")
    parser.add_argument(
        "--url",
        action="append",
        default=None,
        help="reward service base URL (repeat for failover; default $REWARD_API_URL or http://127.0.0.1:8000)",
    )
    env = ClientSettings.from_env()
    parser.add_argument("--token", default=env.token, help="bearer token ($REWARD_API_TOKEN)")
    parser.add_argument("--categories", help="the set's categories: 'a,b,c' or @file (one per line)")
    parser.add_argument("--name", default="model", help="row name in the table")
    parser.add_argument("--out", help="write the metrics (the service's answer) as JSON here")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per attempt (default 600)")
    args = parser.parse_args(argv)
    urls = args.url or env.urls
    try:
        images, file_categories = read_completions(args.completions)
        categories = parse_categories(args.categories) or file_categories
        with RewardClient(urls, token=args.token, timeout=args.timeout) as client:
            metrics = evaluate_images(client, images, categories)
    except (OSError, CompletionsFileError, RewardServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_table(metrics, args.name))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump({"name": args.name, "completions": str(args.completions), "metrics": metrics}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
