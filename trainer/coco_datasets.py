"""Evaluation sets of the research, built from a COCO-format annotation file.

    python -m trainer.coco_datasets instances_val2017.json --subset pos_1 --mode all \\
        --images val2017/ --out coco_pos_1_all.jsonl

Subsets (the exact rules; the README's "Evaluation" repeats them):

* Every subset first reads an image's annotations into *boxes*: non-crowd annotations whose box has
  a positive width and height, converted from COCO ``[x, y, w, h]`` to corners ``[x1, y1, x2, y2]``.
  A category with a crowd annotation (``iscrowd=1``) in an image is *uncountable* there: a crowd box
  stands for an unknown number of objects, so no subset can ask for that category in that image.
* ``pos_1`` ("COCO_filtered"): in each image, a category with more than 10 boxes, or uncountable, is
  left out of that image (its boxes are dropped and it is never asked for there); images with no
  box left are skipped.
* ``pos_2``: images with at least one box, no uncountable category, and exactly one box for every
  category present.
* ``pos_3``: images with 1 to 10 boxes in all and no uncountable category.

Prompt modes:

* ``all``: the question lists every category of the file (in category-id order) except those left
  out of that image; absent categories are the hard negatives.
* ``positive``: only the categories with a box in the image.
* ``one_box``: the categories with a box, with the research's "one box per category" wording; the
  ground truth keeps one box per category, the largest (first annotation on ties), so a model that
  follows the prompt can reach a perfect score.

Each line is the JSON the trainer reads (``trainer.prompts.vlm_r1_record``), plus ``categories``:
the labels the question asks for, which the evaluation uses (``trainer.evaluate``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trainer import prompts

SUBSETS = ("pos_1", "pos_2", "pos_3")
MODES = ("all", "positive", "one_box")
MAX_BOXES_PER_CATEGORY = 10  # pos_1: "categories with more than 10 boxes in an image are left out"
MAX_BOXES_PER_IMAGE = 10  # pos_3: "at most 10 boxes in all"


@dataclass(frozen=True)
class Box:
    corners: tuple[float, float, float, float]
    category_id: int
    annotation_id: int

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.corners
        return (x2 - x1) * (y2 - y1)


@dataclass
class ImageAnnotations:
    """One image of the annotation file: its countable boxes and its uncountable categories."""

    image_id: int
    file_name: str
    boxes: list[Box] = field(default_factory=list)
    uncountable: set[int] = field(default_factory=set)

    def boxes_per_category(self) -> dict[int, list[Box]]:
        grouped: dict[int, list[Box]] = {}
        for box in self.boxes:
            grouped.setdefault(box.category_id, []).append(box)
        return grouped


@dataclass(frozen=True)
class EvalImage:
    """One image of a subset: the boxes to find and the categories that may not be asked for."""

    image_id: int
    file_name: str
    boxes: tuple[Box, ...]
    excluded_categories: frozenset[int]


def coco_corners(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    # Rounded to COCO's own precision (2 decimals) so that x + w prints without float noise.
    x, y, w, h = (float(v) for v in bbox)
    return (round(x, 2), round(y, 2), round(x + w, 2), round(y + h, 2))


def read_images(coco: dict) -> list[ImageAnnotations]:
    """The images of a COCO annotation dict in file order, each with its boxes in annotation order."""
    images = {img["id"]: ImageAnnotations(img["id"], img["file_name"]) for img in coco["images"]}
    for ann in coco.get("annotations", []):
        image = images.get(ann["image_id"])
        if image is None:
            continue
        if ann.get("iscrowd", 0):
            image.uncountable.add(ann["category_id"])
            continue
        w, h = ann["bbox"][2], ann["bbox"][3]
        if w > 0 and h > 0:
            image.boxes.append(Box(coco_corners(ann["bbox"]), ann["category_id"], ann["id"]))
    return list(images.values())


def select_pos_1(image: ImageAnnotations) -> EvalImage | None:
    too_many = {cat for cat, boxes in image.boxes_per_category().items() if len(boxes) > MAX_BOXES_PER_CATEGORY}
    excluded = too_many | image.uncountable
    kept = tuple(box for box in image.boxes if box.category_id not in excluded)
    return EvalImage(image.image_id, image.file_name, kept, frozenset(excluded)) if kept else None


def select_pos_2(image: ImageAnnotations) -> EvalImage | None:
    one_each = all(len(boxes) == 1 for boxes in image.boxes_per_category().values())
    if not image.boxes or image.uncountable or not one_each:
        return None
    return EvalImage(image.image_id, image.file_name, tuple(image.boxes), frozenset())


def select_pos_3(image: ImageAnnotations) -> EvalImage | None:
    if not 1 <= len(image.boxes) <= MAX_BOXES_PER_IMAGE or image.uncountable:
        return None
    return EvalImage(image.image_id, image.file_name, tuple(image.boxes), frozenset())


SELECTORS = {"pos_1": select_pos_1, "pos_2": select_pos_2, "pos_3": select_pos_3}


def largest_box_per_category(boxes: Sequence[Box]) -> tuple[Box, ...]:
    best: dict[int, Box] = {}
    for box in boxes:  # strict ">" keeps the first annotation on equal areas
        if box.category_id not in best or box.area > best[box.category_id].area:
            best[box.category_id] = box
    return tuple(box for box in boxes if best[box.category_id] is box)


def asked_category_ids(image: EvalImage, mode: str, all_category_ids: Sequence[int]) -> list[int]:
    if mode == "all":
        return [cat for cat in all_category_ids if cat not in image.excluded_categories]
    present = {box.category_id for box in image.boxes}
    return [cat for cat in all_category_ids if cat in present]


def solution_items(boxes: Sequence[Box], names: dict[int, str]) -> list[dict]:
    return [{"bbox_2d": list(box.corners), "label": names[box.category_id]} for box in boxes]


def build_records(coco: dict, subset: str, mode: str, images_dir: str | os.PathLike = "") -> Iterator[dict]:
    """The subset's samples in the annotation file's image order, as trainer records."""
    if subset not in SELECTORS:
        raise ValueError(f"unknown subset {subset!r}; choose one of {', '.join(SUBSETS)}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    categories = sorted(coco["categories"], key=lambda cat: cat["id"])
    names = {cat["id"]: cat["name"] for cat in categories}
    all_ids = [cat["id"] for cat in categories]
    for image_annotations in read_images(coco):
        image = SELECTORS[subset](image_annotations)
        if image is None:
            continue
        boxes = largest_box_per_category(image.boxes) if mode == "one_box" else image.boxes
        labels = [names[cat] for cat in asked_category_ids(image, mode, all_ids)]
        record = prompts.vlm_r1_record(
            record_id=image.image_id,
            image=str(Path(images_dir) / image.file_name) if images_dir else image.file_name,
            question=prompts.detection_question(labels, one_box_per_category=mode == "one_box"),
            solution=solution_items(boxes, names),
        )
        # The asked labels, for the evaluation: they are the categories whose predictions take part
        # in NMS-AP (the hard negatives of "all" mode included). The trainer ignores the field.
        record["categories"] = labels
        yield record


def write_jsonl(records: Iterable[dict], out: str | os.PathLike) -> int:
    count = 0
    with open(out, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.coco_datasets", description=__doc__.split("\n\n")[0])
    parser.add_argument("annotations", help="COCO-format annotation file, e.g. instances_val2017.json")
    parser.add_argument("--subset", choices=SUBSETS, required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--images", default="", help="folder of the images; prefixed to each file_name")
    parser.add_argument("--out", required=True, help="JSONL file to write")
    args = parser.parse_args(argv)
    with open(args.annotations, encoding="utf-8") as handle:
        coco = json.load(handle)
    count = write_jsonl(build_records(coco, args.subset, args.mode, args.images), args.out)
    print(f"wrote {count} samples ({args.subset}, mode {args.mode}) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
