"""Ground truth in the pixels the model saw: the one place adapters rescale boxes.

Qwen2.5-VL does not answer in the pixels of the image as stored: its processor resizes the image to
sides that are multiples of 28 with a pixel count within [min_pixels, max_pixels], and the boxes it
writes are in that resized image. A ground truth in original-image pixels then scores wrongly, with
nothing to say so. Give each sample its sizes and the adapters (TRL, verl, slime) rescale it here:

    >>> to_model_pixels([{"bbox_2d": [100, 50, 300, 150], "label": "cat"}], original_size=(1000, 500),
    ...                 input_size=(504, 252))
    [{'bbox_2d': [50.4, 25.2, 151.2, 75.6], 'label': 'cat'}]

``input_size`` is what the processor made of the image; `qwen_input_size` computes it the way
Qwen2-VL's ``smart_resize`` does (the trainer uses the processor's own function, which agrees):

    >>> qwen_input_size(1000, 500)
    (1008, 504)
    >>> qwen_input_size(4000, 3000, max_pixels=1003520)
    (1148, 840)

A ground truth with a box outside the image the model saw is almost always in the wrong pixels:
`warn_outside` says so (a `CoordinateWarning`, once per distinct case).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

# Qwen2-VL / Qwen2.5-VL processor defaults: 14-pixel patches merged 2x2, 4 to 16,384 merged patches.
QWEN_FACTOR = 28
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 28 * 28 * 16384

# Sizes are (width, height). Keys the adapters read per sample (a dataset column in TRL, a key of
# extra_info in verl, of sample.metadata in slime).
ORIGINAL_SIZE_KEY = "original_size"
INPUT_SIZE_KEY = "input_size"

_FENCED_LIST = re.compile(r"\[.*\]", re.DOTALL)


class CoordinateWarning(UserWarning):
    """A ground-truth box lies outside the image the model saw."""


def qwen_input_size(
    width: int,
    height: int,
    *,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
    factor: int = QWEN_FACTOR,
) -> tuple[int, int]:
    """(width, height) of the image a Qwen2-VL-family processor gives the model: each side rounded to
    a multiple of ``factor``, then both scaled (aspect kept) into [min_pixels, max_pixels]."""
    if width <= 0 or height <= 0:
        raise ValueError(f"an image size must be positive, got {width}x{height}")
    if max(width, height) / min(width, height) > 200:
        raise ValueError(f"aspect ratio of {width}x{height} is over 200, which Qwen2-VL refuses")
    h = round(height / factor) * factor  # may be 0 for a thin image: then the min_pixels branch
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return w, h


def boxes_of(solution: str | Sequence[Any]) -> list[dict]:
    """The structured ground truth: a list of ``{"bbox_2d", "label"}`` as given, or the JSON list
    inside a ground-truth text (``<answer>```json [...]```</answer>``)."""
    if isinstance(solution, str):
        found = _FENCED_LIST.search(solution)
        if found is None:
            return []
        try:
            items = json.loads(found.group(0))
        except ValueError:
            raise ValueError(f"the ground truth's box list is not valid JSON: {solution[:200]!r}") from None
    else:
        items = list(solution)
    if not all(isinstance(i, Mapping) and _is_box(i.get("bbox_2d")) for i in items):
        raise ValueError(f"every ground-truth item needs a bbox_2d of four numbers: {str(items)[:200]}")
    return [dict(item) for item in items]


def to_model_pixels(
    solution: str | Sequence[Any], original_size: Sequence[float], input_size: Sequence[float]
) -> list[dict]:
    """The ground truth with x scaled by input_w / original_w and y by input_h / original_h, rounded
    to 0.1 pixel (an IoU does not see less). Sizes are (width, height)."""
    (ow, oh), (iw, ih) = _size(original_size, ORIGINAL_SIZE_KEY), _size(input_size, INPUT_SIZE_KEY)
    sx, sy = iw / ow, ih / oh
    scaled = []
    for item in boxes_of(solution):
        x1, y1, x2, y2 = item["bbox_2d"]
        scaled.append({**item, "bbox_2d": [round(x1 * sx, 1), round(y1 * sy, 1), round(x2 * sx, 1), round(y2 * sy, 1)]})
    return scaled


def warn_outside(solution: str | Sequence[Any], input_size: Sequence[float], where: str = "a sample") -> bool:
    """Warn (CoordinateWarning) and return True if a ground-truth box extends past the image the model
    saw (1 pixel of slack): the ground truth is then most likely in original-image pixels."""
    w, h = _size(input_size, INPUT_SIZE_KEY)
    try:
        items = boxes_of(solution)
    except ValueError:
        return False  # the service reports an unreadable ground truth itself, per sample
    outside = [
        item["bbox_2d"]
        for item in items
        if min(item["bbox_2d"]) < -1
        or max(item["bbox_2d"][0], item["bbox_2d"][2]) > w + 1
        or max(item["bbox_2d"][1], item["bbox_2d"][3]) > h + 1
    ]
    if outside:
        warnings.warn(
            f"{where}: ground-truth box {outside[0]} lies outside the {w:g}x{h:g} image the model saw; "
            f"boxes must be in the model's input pixels: give '{ORIGINAL_SIZE_KEY}' and '{INPUT_SIZE_KEY}' "
            f"per sample to have them rescaled (shared.adapters.coordinates)",
            CoordinateWarning,
            stacklevel=3,
        )
    return bool(outside)


def for_model(solution: Any, sizes: Mapping[str, Any] | None, where: str = "a sample") -> Any:
    """What an adapter sends as the ground truth: rescaled when ``sizes`` holds both sizes, checked
    against the input size when it holds that one, as given otherwise."""
    sizes = sizes or {}
    original, seen = sizes.get(ORIGINAL_SIZE_KEY), sizes.get(INPUT_SIZE_KEY)
    if original is not None and seen is not None:
        solution = to_model_pixels(solution, original, seen)
    if seen is not None:
        warn_outside(solution, seen, where)
    return solution


def _size(size: Sequence[float], name: str) -> tuple[float, float]:
    try:
        w, h = (float(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (width, height), got {size!r}") from None
    if not (w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)):
        raise ValueError(f"{name} must be two positive numbers, got {size!r}")
    return w, h


def _is_box(box: Any) -> bool:
    return (
        isinstance(box, (list, tuple))
        and len(box) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
    )
