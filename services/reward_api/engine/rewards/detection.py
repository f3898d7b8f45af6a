"""ap, ap50 and od_length: single-image COCO AP of the answer's boxes, from ONE evaluation.

reward-spec "ap and ap50" and "od_length", in order:

1. no answer block: 0.0 (all three);
2. ground truth ``None`` and the answer block exactly ``None``: 1.0;
3. predictions = the answer's box list, ground truth = its boxes: both empty 1.0, one empty 0.0;
4. categories = the distinct ground-truth labels (exact match); predictions whose label is not one
   of them, that are not objects, or that have no string label are dropped; none left: 0.0;
5. ``ap``/``ap50`` = pycocotools ``stats[0]``/``stats[1]`` for that image (``coco_ap``), every
   prediction scored 1.0 in order of appearance;
6. a kept prediction without a valid box is a false positive (zero-area, overlaps nothing).

``od_length = ap * min(1, n_gt / n_pred)``, with ``n_pred`` every item of the answer's box list.

Version 2 (the default) differs in one rule, where version 1 misread the reference: a fenced JSON
answer that is not a list is looped over as the reference loops over it (an object gives its keys,
a string its characters: non-empty, unmatched predictions), so ``{"bbox_2d": ..., "label": "cat"}``
against ``None`` scores 0.0, not the 1.0 of a correct "none" (``parsing.non_list_size``).

Departures from the reference (both versions; the registry lists them with examples): pycocotools
matched ``[NaN, NaN, NaN, NaN]`` boxes and ignored inverted boxes; the reference skipped a
prediction whose box raises (missing, 3 numbers, strings, null), scored a 5-number box on its first
four numbers and read ``true``/``false`` as 1/0, and raised on a 10**400 coordinate. Here every such
box is invalid: a false positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..coco_ap import single_image_ap
from ..ground_truth import GroundTruth
from ..parsing import ParsedCompletion
from . import RewardInput

__all__ = [
    "DetectionResult",
    "evaluate_detection",
    "score_ap",
    "score_ap50",
    "score_ap50_v2",
    "score_ap_v2",
    "score_od_length",
    "score_od_length_v2",
    "shared_result",
]

# What happened to each predicted item (explain=True), besides "kept".
NOT_AN_OBJECT, NO_LABEL, UNKNOWN_LABEL, INVALID_BOX = "not_an_object", "no_label", "unknown_label", "invalid_box"


@dataclass(frozen=True)
class DetectionResult:
    """ap, ap50 and od_length of one sample and what they were computed from.

    ``case``: which rule decided ("no_answer", "none_none", "both_empty", "one_empty",
    "no_known_label", "coco"); ``item_status[i]``: "kept", or why item ``i`` was dropped or
    counts as a false positive ("invalid_box").
    """

    ap: float
    ap50: float
    od_length: float
    case: str
    n_pred: int
    n_gt: int
    item_status: tuple[str, ...] = ()

    def details(self) -> dict:
        return {
            "case": self.case,
            "n_pred": self.n_pred,
            "n_gt": self.n_gt,
            "n_evaluated": sum(status in ("kept", INVALID_BOX) for status in self.item_status),
            "ap": self.ap,
            "ap50": self.ap50,
            "od_length": self.od_length,
        }


def _constant(value: float, case: str, n_pred: int, n_gt: int, status: tuple[str, ...] = ()) -> DetectionResult:
    return DetectionResult(value, value, value, case, n_pred, n_gt, status)


def item_statuses(parsed: ParsedCompletion, categories: dict[str, int]) -> tuple[str, ...]:
    """For each answer item: "kept", "invalid_box" (kept, a false positive) or why it is dropped."""
    statuses = []
    for prediction in parsed.answer_predictions:
        if not prediction.is_object:
            statuses.append(NOT_AN_OBJECT)
        elif prediction.label is None:
            statuses.append(NO_LABEL)
        elif prediction.label not in categories:
            statuses.append(UNKNOWN_LABEL)
        elif prediction.box is None:
            statuses.append(INVALID_BOX)
        else:
            statuses.append("kept")
    return tuple(statuses)


def evaluate_detection(parsed: ParsedCompletion, truth: GroundTruth, version: str = "2") -> DetectionResult:
    """ap, ap50 and od_length of one sample at ``version`` ("1" or "2"), with a single COCO evaluation.

    >>> from services.reward_api.engine.parsing import ParsedCompletion
    >>> from services.reward_api.engine.ground_truth import parse_solution
    >>> cat = '```json\\n[{"bbox_2d": [10, 10, 110, 110], "label": "cat"}]\\n```'
    >>> result = evaluate_detection(ParsedCompletion(f"<answer>{cat}</answer>"), parse_solution(cat))
    >>> round(result.ap, 12), round(result.ap50, 12), round(result.od_length, 12)
    (1.0, 1.0, 1.0)
    >>> shifted = cat.replace("[10, 10, 110, 110]", "[20, 20, 120, 120]")
    >>> round(evaluate_detection(ParsedCompletion(f"<answer>{shifted}</answer>"), parse_solution(cat)).ap, 12)
    0.4
    >>> obj = '<answer>```json\\n{"bbox_2d": [10, 10, 110, 110], "label": "cat"}\\n```</answer>'
    >>> evaluate_detection(ParsedCompletion(obj), parse_solution("None")).ap  # version 2
    0.0
    >>> evaluate_detection(ParsedCompletion(obj), parse_solution("None"), version="1").ap
    1.0
    """
    n_gt = truth.n
    if parsed.answer is None:
        return _constant(0.0, "no_answer", 0, n_gt)
    if version != "1" and parsed.answer_non_list_size is not None:
        return _not_a_list(parsed.answer_non_list_size, n_gt)
    predictions = parsed.answer_predictions
    n_pred = len(predictions)
    if truth.is_none and parsed.answer == "None":
        return _constant(1.0, "none_none", n_pred, n_gt)
    if n_pred == 0 and n_gt == 0:
        return _constant(1.0, "both_empty", n_pred, n_gt)
    # Ids in order of first appearance; COCO averages over categories, so any fixed order does.
    categories = {label: index for index, label in enumerate(dict.fromkeys(truth.labels))}
    statuses = item_statuses(parsed, categories)
    if n_pred == 0 or n_gt == 0:
        return _constant(0.0, "one_empty", n_pred, n_gt, statuses)
    kept = [p for p, status in zip(predictions, statuses, strict=True) if status in ("kept", INVALID_BOX)]
    if not kept:
        return _constant(0.0, "no_known_label", n_pred, n_gt, statuses)
    dt_boxes = np.array([p.box if p.box is not None else (0.0, 0.0, 0.0, 0.0) for p in kept], dtype=np.float64)
    dt_cats = np.array([categories[p.label] for p in kept], dtype=np.int64)
    dt_valid = np.array([p.box is not None for p in kept], dtype=bool)
    gt_cats = np.array([categories[label] for label in truth.labels], dtype=np.int64)
    ap, ap50 = single_image_ap(truth.boxes, gt_cats, dt_boxes, dt_cats, dt_valid)
    ap, ap50 = float(ap), float(ap50)
    return DetectionResult(ap, ap50, ap * min(1.0, n_gt / n_pred), "coco", n_pred, n_gt, statuses)


def _not_a_list(n_pred: int, n_gt: int) -> DetectionResult:
    """Version 2, an answer whose fenced JSON is not a list: ``n_pred`` predictions that are not
    objects (an object's keys, a string's characters), which no category keeps."""
    if n_pred == 0 and n_gt == 0:
        return _constant(1.0, "both_empty", 0, 0)
    if n_pred == 0 or n_gt == 0:
        return _constant(0.0, "one_empty", n_pred, n_gt)
    return _constant(0.0, "no_known_label", n_pred, n_gt)


def shared_result(inp: RewardInput, version: str = "2") -> DetectionResult:
    """The sample's detection evaluation, computed once for ap, ap50 and od_length together."""
    return inp.shared(f"detection@{version}", lambda i: evaluate_detection(i.parsed, i.truth, version))


def score_ap(inp: RewardInput) -> float:
    return shared_result(inp, "1").ap


def score_ap50(inp: RewardInput) -> float:
    return shared_result(inp, "1").ap50


def score_od_length(inp: RewardInput) -> float:
    return shared_result(inp, "1").od_length


def score_ap_v2(inp: RewardInput) -> float:
    return shared_result(inp, "2").ap


def score_ap50_v2(inp: RewardInput) -> float:
    return shared_result(inp, "2").ap50


def score_od_length_v2(inp: RewardInput) -> float:
    return shared_result(inp, "2").od_length
