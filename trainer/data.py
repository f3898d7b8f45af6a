"""VLM-R1 JSONL -> the dataset GRPOTrainer reads, with ground truth in the coordinates the model sees.

A line: ``{"image": "a.jpg" | ["a.jpg", "b.jpg"], "conversations": [{"from": "human", "value":
"<image>question"}, {"from": "gpt", "value": "<answer text>"}], "accu_reward_method": "od_ap"?}``.
Several files are given as ``a.jsonl:b.jsonl`` with their image folders as ``imgs_a:imgs_b`` (one
folder per file, or one folder for all), as in the reference implementation.

Coordinates. Qwen2.5-VL does not see the image as stored: its processor resizes it to multiples of
28 pixels with a pixel count within [min_pixels, max_pixels] (``smart_resize``), and the model
answers in the pixels of that resized image. Ground-truth boxes in the data are in the original
image's pixels. So each sample's boxes are scaled here, x by new_w/orig_w and y by new_h/orig_h,
with the resized size computed by the processor's own ``smart_resize`` from its own settings; the
service then compares like with like. The original text stays in the ``solution_original`` column.
For a line with several images, boxes refer to the first image.

Each model family has its own coordinate convention, read from the model's ``config.json``
(`coordinate_convention`): Qwen2.5-VL answers in absolute pixels of the resized input (above);
Qwen2-VL and Qwen3-VL answer in coordinates normalised to 0-1000 of the image's width and height,
so their ground truth is scaled x by 1000/orig_w and y by 1000/orig_h. IoU, and so every
detection reward, is unchanged by such per-axis scaling; what matters is that the completion and
the ground truth are in the same frame.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.reward_api.engine.ground_truth import parse_solution
from services.reward_api.engine.parsing import ParsedCompletion
from trainer import prompts

# The reference's per-line accuracy methods, mapped to the service's reward names. A sample whose
# line names no method (or "default") is scored with the run's default accuracy reward.
ACCU_REWARD_METHODS: dict[str, str] = {
    "od_ap": "ap",
    "ap": "ap",
    "od_ap50": "ap50",
    "ap50": "ap50",
    "odLength": "od_length",
    "od_length": "od_length",
    "weighted_sum": "weighted_sum",
}


PIXELS = "pixels"  # absolute pixels of the resized image the model sees (Qwen2.5-VL)
NORMALISED = "0-1000"  # 0-1000 of the image's width and height (Qwen2-VL, Qwen3-VL)
COORDINATES_BY_MODEL_TYPE: dict[str, str] = {
    "qwen2_5_vl": PIXELS,
    "qwen2_vl": NORMALISED,
    "qwen3_vl": NORMALISED,
    "qwen3_vl_moe": NORMALISED,
}
NORMALISED_SIDE = 1000


def coordinate_convention(model_path: str | os.PathLike) -> str:
    """The box convention of the model saved in ``model_path``, from its config's ``model_type``;
    ValueError naming the supported families otherwise."""
    config = Path(model_path) / "config.json"
    model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type") if config.is_file() else None
    if model_type not in COORDINATES_BY_MODEL_TYPE:
        raise ValueError(
            f"{model_path}: model type {model_type!r} has no known box convention; supported: "
            f"{', '.join(COORDINATES_BY_MODEL_TYPE)}"
        )
    return COORDINATES_BY_MODEL_TYPE[model_type]


class DataError(ValueError):
    """A training line that cannot be used; the message names the file and line."""


# ----------------------------------------------------------------------------------------------
# Ground truth: read by the reward service's own reader, so that a line the service would refuse is
# refused here, at load time, with its file and line (not trained on, nor turned into null rewards)


def read_solution(text: str) -> list[dict]:
    """The ground-truth text of a line as a list of ``{"bbox_2d": [x1, y1, x2, y2], "label": str}``.

    The research's answer format (reward-spec.md, "Ground truth"), read by the service's reader
    (``services/reward_api/engine/ground_truth.py``): optionally inside ``<answer>...</answer>``,
    the literal ``None`` (returns ``[]``) or exactly one fenced ```` ```json [...] ``` ```` list of
    valid boxes. Raises ValueError (SolutionError) saying what is wrong otherwise: two ```json
    blocks, an inverted or non-finite box, a missing label, ...
    """
    truth = parse_solution(text)
    return [
        {"bbox_2d": [float(v) for v in box], "label": label}
        for label, box in zip(truth.labels, truth.raw_boxes, strict=True)
    ]


def check_as_sent(items: list[dict]) -> None:
    """Refuse the structured ground truth the service would refuse (after scaling, say an area
    beyond COCO's range); ValueError saying why."""
    parse_solution(items)


def count_boxes(completion: str) -> int:
    """How many items a completion's answer lists (0 without a readable list), as the service's
    parser reads it: for the training curves only; every reward comes from the service."""
    return len(ParsedCompletion(completion).answer_items)


# ----------------------------------------------------------------------------------------------
# Coordinates


def resize_factor(image_processor: Any) -> int:
    """The side multiple the Qwen2-VL image processor resizes to (patch_size * merge_size, 28)."""
    return int(image_processor.patch_size) * int(image_processor.merge_size)


def pixel_bounds(image_processor: Any) -> tuple[int, int]:
    """(min_pixels, max_pixels) as the processor will use them."""
    size = image_processor.size
    get = size.get if isinstance(size, Mapping) else lambda key: getattr(size, key, None)
    smallest, largest = get("shortest_edge"), get("longest_edge")
    if smallest is None or largest is None:
        raise ValueError(f"the image processor's size {size!r} has no shortest_edge/longest_edge (pixel bounds)")
    return int(smallest), int(largest)


def resized_size(image_processor: Any, width: int, height: int) -> tuple[int, int]:
    """(width, height) of the image the model sees, by the processor's own ``smart_resize``."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    min_pixels, max_pixels = pixel_bounds(image_processor)
    new_h, new_w = smart_resize(
        height, width, factor=resize_factor(image_processor), min_pixels=min_pixels, max_pixels=max_pixels
    )
    return new_w, new_h


def scale_boxes(items: Sequence[Mapping[str, Any]], original: tuple[int, int], resized: tuple[int, int]) -> list[dict]:
    """Boxes from original-image pixels to resized-image pixels (x by new_w/orig_w, y by new_h/orig_h)."""
    sx = resized[0] / original[0]
    sy = resized[1] / original[1]
    return [
        {
            "bbox_2d": [
                item["bbox_2d"][0] * sx,
                item["bbox_2d"][1] * sy,
                item["bbox_2d"][2] * sx,
                item["bbox_2d"][3] * sy,
            ],
            "label": item["label"],
        }
        for item in items
    ]


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file; reads the header only."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size


# ----------------------------------------------------------------------------------------------
# Reading VLM-R1 JSONL


@dataclass(frozen=True)
class Example:
    """One training line, resolved: image paths, question, ground truth in both coordinate spaces."""

    image_paths: tuple[str, ...]
    question: str  # without the <image> markers and without the question template
    solution_original: str  # the line's answer text, original-image pixels
    solution: list[dict]  # structured ground truth in the model's convention (what the service gets)
    original_size: tuple[int, int]  # (w, h) of the first image
    resized_size: tuple[int, int]
    accu_reward: str | None  # the service reward named by the line's accu_reward_method, if any
    source: str  # "file:line"


def split_paths(value: str | Sequence[str]) -> list[str]:
    """``a:b`` (the reference's separator) or a list, as a list of paths."""
    if isinstance(value, str):
        return [part for part in value.split(":") if part]
    return [str(part) for part in value]


MAX_REPORTED_BAD_LINES = 20  # as shared.cli: the first ones, and how many more


def read_vlm_r1(
    data_files: str | Sequence[str],
    image_folders: str | Sequence[str],
    image_processor: Any,
    max_samples: int | None = None,
    coordinates: str = PIXELS,
) -> list[Example]:
    """Every usable line of ``data_files``; DataError listing EVERY bad line (file:line: why, the
    first `MAX_REPORTED_BAD_LINES` and a count), a missing file or image folder, before anything
    trains. ``coordinates``: the model's convention (`coordinate_convention`)."""
    files = split_paths(data_files)
    folders = split_paths(image_folders) if image_folders else [""]
    if len(folders) == 1:
        folders = folders * len(files)
    if len(folders) != len(files):
        raise DataError(f"{len(files)} data files but {len(folders)} image folders: give one folder per file, or one")
    missing = [f"data file {path} does not exist" for path in files if not Path(path).is_file()]
    missing += [
        f"image folder {folder} does not exist"
        for folder in dict.fromkeys(folders)
        if folder and not Path(folder).is_dir()
    ]
    if missing:
        raise DataError("; ".join(missing) + " (check --data_files and --image_folders)")
    examples: list[Example] = []
    problems: list[str] = []
    for path, folder in zip(files, folders, strict=True):
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                source = f"{path}:{number}"
                try:
                    examples.append(_example(json.loads(line), folder, image_processor, source, coordinates))
                except DataError as exc:
                    problems.append(str(exc))
                except FileNotFoundError as exc:
                    problems.append(f"{source}: image {exc.filename} not found (is --image_folders right?)")
                except (ValueError, KeyError, TypeError, OSError) as exc:
                    problems.append(f"{source}: {_describe(exc)}")
                if max_samples is not None and len(examples) >= max_samples:
                    break
        if max_samples is not None and len(examples) >= max_samples:
            break
    if problems:
        shown = problems[:MAX_REPORTED_BAD_LINES]
        more = len(problems) - len(shown)
        raise DataError(
            f"{len(problems)} unusable data line(s); fix or remove them:\n"
            + "\n".join(shown + ([f"... and {more} more bad lines"] if more else []))
        )
    if not examples:
        raise DataError(f"no training lines in {', '.join(files)}")
    return examples


def _describe(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not a JSON object ({exc.msg} at column {exc.colno})"
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r} (a line needs 'image' and 'conversations' with 'human' and 'gpt' turns)"
    return f"{type(exc).__name__}: {exc}"


def _example(record: dict, folder: str, image_processor: Any, source: str, coordinates: str = PIXELS) -> Example:
    images = record["image"]
    images = [images] if isinstance(images, str) else list(images)
    if not images:
        raise DataError(f"{source}: no image")
    paths = tuple(str(Path(folder) / name) for name in images)
    absent = [path for path in paths if not Path(path).is_file()]
    if absent:
        raise DataError(f"{source}: image {', '.join(absent)} not found (is --image_folders right?)")
    turns = {turn["from"]: turn["value"] for turn in record["conversations"]}
    question = prompts.strip_image_placeholders(turns["human"])
    answer = turns["gpt"]
    method = record.get("accu_reward_method")
    accu = None
    if method not in (None, "default"):
        if method not in ACCU_REWARD_METHODS:
            raise DataError(
                f"{source}: accu_reward_method {method!r} has no reward here; known: {', '.join(ACCU_REWARD_METHODS)}"
            )
        accu = ACCU_REWARD_METHODS[method]
    try:
        items = read_solution(answer)
    except ValueError as exc:
        raise DataError(f"{source}: unreadable ground truth ({exc}): {answer[:200]!r}") from exc
    original = image_size(paths[0])
    resized = resized_size(image_processor, *original)
    frame = resized if coordinates == PIXELS else (NORMALISED_SIDE, NORMALISED_SIDE)
    scaled = scale_boxes(items, original, frame)
    try:
        check_as_sent(scaled)
    except ValueError as exc:
        raise DataError(
            f"{source}: ground truth the reward service would refuse once scaled to the "
            f"{frame[0]}x{frame[1]} frame of the model's answers ({exc})"
        ) from exc
    return Example(paths, question, answer, scaled, original, resized, accu, source)


def build_dataset(examples: Sequence[Example], template: str = "standard", extra_columns: dict | None = None):
    """A ``datasets.Dataset`` for GRPOTrainer: ``prompt`` (conversational, text only: TRL inserts the
    image parts), ``images`` (PIL, opened on access), ``solution`` (structured, resized pixels) and
    the bookkeeping columns ``solution_original``, ``accu_reward``, ``original_size``, ``resized_size``;
    plus ``extra_columns`` (name: one value per example), e.g. SFT's ``completion``."""
    from datasets import Dataset

    table = {
        "prompt": [[{"role": "user", "content": prompts.apply_template(ex.question, template)}] for ex in examples],
        "image_paths": [list(ex.image_paths) for ex in examples],
        "solution_json": [json.dumps(ex.solution) for ex in examples],
        "solution_original": [ex.solution_original for ex in examples],
        "accu_reward": [ex.accu_reward or "" for ex in examples],
        "original_size": [list(ex.original_size) for ex in examples],
        "resized_size": [list(ex.resized_size) for ex in examples],
        **(extra_columns or {}),
    }
    dataset = Dataset.from_dict(table)
    dataset.set_transform(_load_images)
    return dataset


def _load_images(batch: dict[str, list]) -> dict[str, list]:
    from PIL import Image

    out = {key: value for key, value in batch.items() if key not in ("image_paths", "solution_json")}
    out["images"] = [[_open_rgb(path, Image) for path in paths] for paths in batch["image_paths"]]
    out["solution"] = [json.loads(text) for text in batch["solution_json"]]
    out["accu_reward"] = [name or None for name in batch["accu_reward"]]
    return out


def _open_rgb(path: str, image_module: Any):
    with image_module.open(path) as image:
        return image.convert("RGB")
