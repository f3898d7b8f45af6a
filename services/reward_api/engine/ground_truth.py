"""Reading a sample's ground truth (``solution``), text or structured, into one validated form.

The two forms of reward-spec "Ground truth" mean the same thing:

* text: optionally wrapped in ``<answer> ... </answer>``, holding one ```` ```json [...] ``` ````
  block or the literal ``None``;
* structured: a list of ``{"bbox_2d": [x1, y1, x2, y2], "label": str}``; ``[]`` is ``None``.

A structured list is turned into its canonical text (``None``, or one ```json block written by
``json.dumps``) and read by the text reader, so both forms go through the same code and give the
same rewards, weighted_sum's lower-cased view included. Ground truth that cannot be read raises
:class:`SolutionError` with a message saying what is wrong: the caller's data is broken, and a
silent 0 would train on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from .boxes import Box, box_problem
from .parsing import (
    FENCE,
    JSON_FENCE_OPEN,
    box_list,
    iter_blocks,
    last_answer_span,
    normalise_for_weighted_sum,
    normalise_twice_for_weighted_sum,
)

__all__ = ["GroundTruth", "SolutionError", "canonical_text", "parse_solution"]

NONE_TEXT = "None"
# Valid items whose canonical text reads back differently: only a label holding ``` or an answer tag.
_NO_TEXT_FORM = "solution: a label holds ``` or an <answer> tag, so the ground truth has no text form"


class SolutionError(ValueError):
    """The ground truth of a sample cannot be read; the message names the problem."""


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """A validated ground truth.

    ``labels``/``raw_boxes``: the items in order, boxes with their numbers as parsed;
    ``boxes``: the same as a (G, 4) float64 array of xyxy corners (for COCO AP);
    ``ws_normalised``/``ws_items``: the text normalised as weighted_sum step 1 says and the items of
    its first ```json block (labels lower-cased by that normalisation);
    ``ws_items_v2``: the same items read from the text normalised twice (weighted_sum version 2),
    or None with ``ws_v2_problem`` saying why they cannot be (only a label that holds an upper-case
    answer tag can make the second pass read other boxes; version 1 does not need them).
    """

    is_none: bool
    labels: tuple[str, ...]
    raw_boxes: tuple[Box, ...]
    boxes: np.ndarray
    ws_normalised: str
    ws_items: list
    ws_items_v2: list | None = None
    ws_v2_problem: str | None = None

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def ws_is_none(self) -> bool:
        return self.ws_normalised == "none"

    def weighted_sum_items_v2(self) -> list:
        """``ws_items_v2``, or SolutionError when the twice-normalised text reads other boxes."""
        if self.ws_items_v2 is None:
            raise SolutionError(self.ws_v2_problem or "solution cannot be read for weighted_sum version 2")
        return self.ws_items_v2


def parse_solution(solution: str | list) -> GroundTruth:
    """The ground truth of one sample, or SolutionError naming what cannot be read."""
    if isinstance(solution, list):
        text = canonical_text(solution)  # validates the items
        try:
            return _read_text(text, structured=solution)
        except SolutionError:
            raise SolutionError(_NO_TEXT_FORM) from None
    if isinstance(solution, str):
        return _read_text(solution)
    raise SolutionError(f"solution must be a string or a list of boxes, not {_json_type(solution)}")


def canonical_text(items: list) -> str:
    """The text form of a structured ground truth: ``None`` for ``[]``, else one ```json block."""
    _check_items(items)
    if not items:
        return NONE_TEXT
    try:
        dumped = json.dumps(items, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SolutionError(f"solution cannot be written as JSON: {exc}") from None
    return f"{JSON_FENCE_OPEN}\n{dumped}\n{FENCE}"


def _read_text(text: str, structured: list | None = None) -> GroundTruth:
    span = last_answer_span(text)
    body = (text if span is None else text[span[0] : span[1]]).strip()
    if body == NONE_TEXT:
        items, is_none = [], True
    else:
        items, is_none = _fenced_items(body), False
    _check_items(items)
    labels = tuple(item["label"] for item in items)
    raw_boxes = tuple(tuple(item["bbox_2d"]) for item in items)
    if structured is not None and (labels, raw_boxes) != _labels_and_boxes(structured):
        # Only a label that breaks its own text form (holding ``` or an answer tag) gets here.
        raise SolutionError(_NO_TEXT_FORM)
    ws_normalised = normalise_for_weighted_sum(text)
    ws_items_v2, ws_v2_problem = None, None
    try:
        ws_items_v2 = _weighted_sum_items(is_none, normalise_twice_for_weighted_sum(text), raw_boxes)
    except SolutionError as exc:
        ws_v2_problem = f"{exc} (normalised twice, as weighted_sum version 2 reads it)"
    return GroundTruth(
        is_none=is_none,
        labels=labels,
        raw_boxes=raw_boxes,
        boxes=np.array(raw_boxes, dtype=np.float64).reshape(-1, 4),
        ws_normalised=ws_normalised,
        ws_items=_weighted_sum_items(is_none, ws_normalised, raw_boxes),
        ws_items_v2=ws_items_v2,
        ws_v2_problem=ws_v2_problem,
    )


def _labels_and_boxes(items: list) -> tuple[tuple, tuple]:
    return tuple(item["label"] for item in items), tuple(tuple(item["bbox_2d"]) for item in items)


def _fenced_items(body: str) -> list:
    blocks = list(_first_two_blocks(body))
    if not blocks:
        raise SolutionError("solution holds no ```json block and is not None")
    if len(blocks) > 1:
        # ap reads the last block and weighted_sum the first: with two they would disagree.
        raise SolutionError("solution holds more than one ```json block")
    start, end = blocks[0]
    try:
        value = json.loads(body[start:end].strip())
    except (ValueError, RecursionError) as exc:
        raise SolutionError(f"solution's ```json block is not valid JSON: {_short(exc)}") from None
    if not isinstance(value, list):
        raise SolutionError(f"solution's ```json block holds {_json_type(value)}, not a list of boxes")
    return value


def _first_two_blocks(body: str):
    for count, span in enumerate(iter_blocks(body, JSON_FENCE_OPEN, FENCE)):
        if count == 2:
            return
        yield span


def _check_items(items: list) -> None:
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise SolutionError(f"solution item {index} is {_json_type(item)}, not an object")
        if not isinstance(item.get("label"), str):
            label_problem = "is missing" if "label" not in item else f"is {_json_type(item['label'])}, not a string"
            raise SolutionError(f"solution item {index}: label {label_problem}")
        problem = box_problem(item.get("bbox_2d")) or _area_problem(item["bbox_2d"])
        if problem is not None:
            raise SolutionError(f"solution item {index}: bbox_2d {problem}")


# COCO's area range "all" is [0, 1e5**2]: pycocotools ignores a ground-truth box beyond it, and with
# only such boxes its AP is -1 ("undefined"), which would reach training as a reward. No image is
# 100,000 pixels on a side, so such a box is broken data, refused like any other.
MAX_GT_AREA = 1e5**2


def _area_problem(box: Box) -> str | None:
    x1, y1, x2, y2 = map(float, box)
    area = (x2 - x1) * (y2 - y1)
    return None if area <= MAX_GT_AREA else f"has an area of {area:.3g} px², beyond COCO's area range (1e10)"


def _weighted_sum_items(is_none: bool, normalised: str, raw_boxes: tuple) -> list:
    """The items of the first ```json block of the normalised text, checked to be the same boxes.

    Normalisation lower-cases the text (labels, as intended) and joins lines; it must not change
    what the ground truth says, or weighted_sum would score against something else.
    """
    if is_none:
        return []  # "None" (or []) always normalises to "none"
    items = box_list(normalised, "first").items
    same = len(items) == len(raw_boxes) and all(
        isinstance(item, dict)
        and isinstance(item.get("label"), str)
        and isinstance(item.get("bbox_2d"), list)
        and tuple(item["bbox_2d"]) == box
        for item, box in zip(items, raw_boxes, strict=True)
    )
    if not same:
        raise SolutionError("solution reads differently once lower-cased for weighted_sum (check the ```json block)")
    return items


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _short(exc: Exception, limit: int = 200) -> str:
    message = str(exc)
    return message if len(message) <= limit else message[:limit] + "..."
