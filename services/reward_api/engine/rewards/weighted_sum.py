"""weighted_sum: greedy IoU matching of the boxes plus completeness (reward-spec "weighted_sum").

1. Both texts are normalised (``parsing.normalise_for_weighted_sum``: last answer block, lines
   joined, stripped, trailing '.' removed, lower-cased).
2. Ground truth ``none``: 1.0 if the completion is ``none`` too, else 0.0.
3. Boxes come from the FIRST ```json block of each normalised text. No ground-truth boxes: 1.0
   without predictions, else 0.0. No predictions: 0.0.
4. IoU is the reference's inclusive-pixel formula (:func:`iou`); a prediction without a valid box
   (or that is not an object) overlaps nothing but counts in ``n_pred``; a missing or non-string
   label reads as "".
5. Greedy matching (:func:`greedy_match`): repeatedly the pair with the highest IoU (ties: lowest
   prediction index, then lowest ground-truth index) while it reaches ``iou_threshold``; a match
   with different labels is recorded with IoU 0.
6. ``(alpha * position + beta * label + gamma * completeness) / (alpha + beta + gamma)``.

Departure from the reference: a prediction without a label crashed it (or reused the previous
item's label); here the label is "".

Version 2 (the default) reads the boxes as the reference does where version 1 misread it: from the
texts normalised twice (``parsing.normalise_twice_for_weighted_sum``: the reference normalises,
then normalises again, so ``<ANSWER>...</ANSWER>`` becomes an answer block; the ``none`` test of
step 2 still uses one pass, as there), and a fenced JSON value that is not a list is looped over
(``parsing.non_list_size``: an object gives its keys, a string its characters, all unmatched).
Kept as departures: a box is 4 finite numbers (a 5-number box or ``true``/``false`` coordinates
overlap nothing here; the reference used the first four numbers, and ``true`` as 1).

A completion's few boxes (up to ``_PYTHON_PAIRS`` pairs) are matched with :func:`iou`'s own
Python arithmetic, inlined (:func:`_python_candidates`): the reference's values by construction.
More boxes go through :func:`iou_matrix` (NumPy). :func:`weighted_sum` hands both functions
doubles (:func:`as_doubles`), so an IoU that overflows is inf or NaN and reads as 0. Called
directly with Python integers they keep the reference's exact integer arithmetic: iou_matrix
falls back to :func:`iou` pair by pair beyond 2**20, and an overflow raises as :func:`iou` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from ..boxes import valid_box
from ..ground_truth import GroundTruth
from ..matching import greedy_matching
from ..parsing import ParsedCompletion
from . import RewardInput

__all__ = [
    "DEFAULTS",
    "Match",
    "WeightedSumResult",
    "greedy_match",
    "iou",
    "iou_matrix",
    "score",
    "score_v2",
    "shared_result",
    "weighted_sum",
]

DEFAULTS = {"alpha": 0.7, "beta": 0.0, "gamma": 0.3, "iou_threshold": 0.5}
EXACT_FLOAT_INT = 2**20  # |int| up to this: every product and sum of the formula is exact in float64
_FLOAT_SAFE_INT = 2**1023  # an int of smaller magnitude converts to a finite float
_PYTHON_PAIRS = 400  # up to this many (prediction, gt) pairs, plain Python beats NumPy (measured)


class Match(NamedTuple):  # immutable like a frozen dataclass, and several times cheaper to build
    pred: int
    gt: int
    iou: float
    labels_equal: bool


@dataclass(frozen=True)
class WeightedSumResult:
    value: float
    case: str  # "none", "no_gt_boxes", "no_predictions" or "matched"
    n_pred: int = 0
    n_gt: int = 0
    matches: tuple[Match, ...] = ()
    parts: dict = field(default_factory=dict)

    def details(self) -> dict:
        return {
            "case": self.case,
            "value": self.value,
            "n_pred": self.n_pred,
            "n_gt": self.n_gt,
            "matches": [
                {"pred": m.pred, "gt": m.gt, "iou": m.iou, "labels_equal": m.labels_equal} for m in self.matches
            ],
            **self.parts,
        }


def iou(a, b) -> float:
    """The reference's IoU of two valid boxes: inclusive-pixel intersection, exclusive areas."""
    ix1, iy1 = max(a[0], b[0]), max(a[1], b[1])
    ix2, iy2 = min(a[2] - 1, b[2] - 1), min(a[3] - 1, b[3] - 1)
    inter = (ix2 - ix1 + 1) * (iy2 - iy1 + 1) if ix1 < ix2 and iy1 < iy2 else 0
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    if not union > 0:  # also catches a NaN union (overflowed coordinates)
        return 0.0
    value = inter / union
    return float(value) if math.isfinite(value) else 0.0


def _exact_in_float64(boxes) -> bool:
    return all(not isinstance(v, int) or -EXACT_FLOAT_INT <= v <= EXACT_FLOAT_INT for box in boxes for v in box)


def iou_matrix(pred_boxes: list, gt_boxes: list) -> np.ndarray:
    """IoU of every (prediction, ground truth) pair, each equal to :func:`iou`."""
    if not _exact_in_float64(pred_boxes) or not _exact_in_float64(gt_boxes):
        return np.array([[iou(p, g) for g in gt_boxes] for p in pred_boxes], dtype=np.float64).reshape(
            len(pred_boxes), len(gt_boxes)
        )
    return _vectorised_iou(
        np.array(pred_boxes, dtype=np.float64).reshape(-1, 4), np.array(gt_boxes, dtype=np.float64).reshape(-1, 4)
    )


def _vectorised_iou(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """:func:`iou` over arrays, the same operations in the same order (contiguous columns: fast)."""
    px1, py1, px2, py2 = (np.ascontiguousarray(p[:, k])[:, None] for k in range(4))
    gx1, gy1, gx2, gy2 = (np.ascontiguousarray(g[:, k])[None, :] for k in range(4))
    with np.errstate(all="ignore"):
        ix1, iy1 = np.maximum(px1, gx1), np.maximum(py1, gy1)
        ix2, iy2 = np.minimum(px2 - 1, gx2 - 1), np.minimum(py2 - 1, gy2 - 1)
        overlaps = (ix1 < ix2) & (iy1 < iy2)
        ix2 -= ix1
        ix2 += 1
        iy2 -= iy1
        iy2 += 1
        inter = ix2 * iy2
        inter[~overlaps] = 0.0
        union = (px2 - px1) * (py2 - py1) + (gx2 - gx1) * (gy2 - gy1)
        union -= inter
        positive = union > 0
        value = np.zeros_like(inter)
        np.divide(inter, union, out=value, where=positive)
    value[~np.isfinite(value)] = 0.0
    return value


def _python_candidates(pred_boxes: list, valid: list[int], gt_boxes: list, threshold: float) -> list[tuple]:
    """``(iou, pred, gt)`` of every pair with ``iou >= threshold``, in (pred, gt) order.

    :func:`iou`'s Python arithmetic, inlined (a call per pair costs more than the arithmetic; on
    the few boxes of a completion this beats NumPy, whose per-call cost dominates tiny arrays).
    Each box's own terms are computed once, but every operation has the same operands as in
    :func:`iou`, so every value is the same, type included; ``y if y > x else x`` is what
    ``max(x, y)`` returns, and ``y if y < x else x`` what ``min(x, y)`` returns.
    """
    gts = [(b[0], b[1], b[2] - 1, b[3] - 1, (b[2] - b[0]) * (b[3] - b[1])) for b in gt_boxes]
    preds = [
        (p, a[0], a[1], a[2] - 1, a[3] - 1, (a[2] - a[0]) * (a[3] - a[1]))
        for p, a in ((p, pred_boxes[p]) for p in valid)
    ]
    # Most pairs do not overlap: their intersection is 0, so their IoU is exactly 0.0 (0 / union,
    # or the 0.0 of a non-positive union), which a positive threshold rejects. Skipping them also
    # skips their area_a + area_b, which could only raise for an int area too large for a float.
    skip_apart = threshold > 0 and all(_float_safe(g[4]) for g in gts) and all(_float_safe(p[5]) for p in preds)
    out = []
    for p, ax1, ay1, ax2, ay2, area_a in preds:
        for g, (bx1, by1, bx2, by2, area_b) in enumerate(gts):
            ix1 = bx1 if bx1 > ax1 else ax1
            iy1 = by1 if by1 > ay1 else ay1
            ix2 = bx2 if bx2 < ax2 else ax2
            iy2 = by2 if by2 < ay2 else ay2
            if ix1 < ix2 and iy1 < iy2:
                inter = (ix2 - ix1 + 1) * (iy2 - iy1 + 1)
            elif skip_apart:
                continue
            else:
                inter = 0
            union = area_a + area_b - inter
            value = inter / union if union > 0 else 0.0
            if not math.isfinite(value):
                value = 0.0
            if value >= threshold:
                out.append((value, p, g))
    return out


def _float_safe(area) -> bool:
    """Whether adding ``area`` to a float cannot raise (only an int beyond the double range can)."""
    return type(area) is not int or -_FLOAT_SAFE_INT < area < _FLOAT_SAFE_INT


def _iou_rows(pred_boxes: list, gt_boxes: list):
    """``rows(ps)``: the IoU of predictions ``ps`` with every ground truth, each equal to :func:`iou`."""
    if not _exact_in_float64(gt_boxes) or not _exact_in_float64(b for b in pred_boxes if b is not None):
        return lambda ps: iou_matrix([pred_boxes[p] for p in ps], gt_boxes)
    gts = np.array(gt_boxes, dtype=np.float64).reshape(-1, 4)
    return lambda ps: _vectorised_iou(np.array([pred_boxes[p] for p in ps], dtype=np.float64).reshape(-1, 4), gts)


def greedy_match(pred_boxes: list, gt_boxes: list, threshold: float) -> list[tuple[int, int, float]]:
    """Greedy matching: ``(pred, gt, iou)`` in the order the pairs are taken.

    ``pred_boxes[i]`` is None for a prediction without a valid box (it matches nothing, as
    ``threshold > 0``). Taking repeatedly the best remaining pair is the same as walking all pairs
    at or above the threshold sorted by (-IoU, pred, gt) and keeping those whose ends are both
    still free; pairs below the threshold are never taken. Many boxes go through
    ``matching.greedy_matching``, row by row, in memory linear in the boxes.
    """
    valid = [i for i, box in enumerate(pred_boxes) if box is not None]
    if not valid or not gt_boxes:
        return []
    if len(valid) * len(gt_boxes) > _PYTHON_PAIRS:
        rows = _iou_rows(pred_boxes, gt_boxes)
        return greedy_matching(valid, lambda p: rows([p])[0], len(gt_boxes), threshold, rows)
    candidates = _python_candidates(pred_boxes, valid, gt_boxes, threshold)
    # Python's sort is stable, with reverse=True too: equal IoUs keep their (pred, gt) order.
    candidates.sort(key=itemgetter(0), reverse=True)
    matched_pred, matched_gt, matches = set(), set(), []
    limit = min(len(valid), len(gt_boxes))
    for value, p, g in candidates:
        if p in matched_pred or g in matched_gt:
            continue
        matched_pred.add(p)
        matched_gt.add(g)
        matches.append((p, g, value))
        if len(matches) == limit:
            break
    return matches


def as_doubles(box) -> tuple[float, float, float, float]:
    """The box's numbers as IEEE doubles, the arithmetic the spec means by "finite numbers".

    A valid box's integers all fit in a double, but Python would multiply them exactly: a policy
    answering ``[0, 0, 10**155, 10**155]`` would then get an area of 1e310 that overflows when it
    meets a float area, and lose every reward of the sample. In doubles the area is inf and the
    IoU 0, as for any box that overlaps nothing. Below 2**53 the two arithmetics agree.
    """
    x1, y1, x2, y2 = map(float, box)
    return x1, y1, x2, y2


def _box_and_label(item) -> tuple:
    if not isinstance(item, dict):
        return None, ""
    label = item.get("label")
    box = valid_box(item.get("bbox_2d"))
    return (None if box is None else as_doubles(box)), label if isinstance(label, str) else ""


def weighted_sum(
    parsed: ParsedCompletion,
    truth: GroundTruth,
    alpha: float = DEFAULTS["alpha"],
    beta: float = DEFAULTS["beta"],
    gamma: float = DEFAULTS["gamma"],
    iou_threshold: float = DEFAULTS["iou_threshold"],
    version: str = "2",
) -> WeightedSumResult:
    """weighted_sum of one sample at ``version`` ("1" or "2"), with the matches that produced it.

    >>> from services.reward_api.engine.parsing import ParsedCompletion
    >>> from services.reward_api.engine.ground_truth import parse_solution
    >>> truth = parse_solution([{"bbox_2d": [10, 10, 110, 110], "label": "cat"}])
    >>> def answer(box): return '<answer>```json\\n[{"bbox_2d": %s, "label": "cat"}]\\n```</answer>' % box
    >>> weighted_sum(ParsedCompletion(answer("[10, 10, 110, 110]")), truth).value
    1.0
    >>> round(weighted_sum(ParsedCompletion(answer("[20, 20, 120, 120]")), truth).value, 6)
    0.776471
    >>> guess = answer("[300, 300, 400, 400]").replace("<answer>", "<think>").replace("</answer>", "</think>")
    >>> upper = guess + answer("[10, 10, 110, 110]").replace("answer>", "ANSWER>")  # read on the second pass
    >>> weighted_sum(ParsedCompletion(upper), truth).value
    1.0
    >>> weighted_sum(ParsedCompletion(upper), truth, version="1").value
    0.0
    """
    if truth.ws_is_none:
        return WeightedSumResult(1.0 if parsed.ws_normalised == "none" else 0.0, "none")
    if version == "1":
        preds, gts = parsed.ws_items, truth.ws_items
    else:
        preds, gts = parsed.ws_items_v2, truth.weighted_sum_items_v2()
        if parsed.ws_non_list_size_v2 is not None:
            return _not_a_list(parsed.ws_non_list_size_v2, len(gts), alpha, beta, gamma)
    if not gts:
        return WeightedSumResult(0.0 if preds else 1.0, "no_gt_boxes", len(preds), 0)
    if not preds:
        return WeightedSumResult(0.0, "no_predictions", 0, len(gts))
    pred_boxes, pred_labels = zip(*(_box_and_label(item) for item in preds), strict=True)
    gt_boxes = [as_doubles(item["bbox_2d"]) for item in gts]  # validated by ground_truth
    gt_labels = [item["label"] for item in gts]
    matches = tuple(
        Match(p, g, value, pred_labels[p] == gt_labels[g])
        for p, g, value in greedy_match(list(pred_boxes), gt_boxes, iou_threshold)
    )
    n_pred, n_gt = len(preds), len(gts)
    position = sum(m.iou if m.labels_equal else 0.0 for m in matches) / n_gt
    label = sum(1 for m in matches if m.labels_equal) / n_gt
    miss = (n_gt - len(matches)) / n_gt
    false_alarm = (n_pred - len(matches)) / n_pred
    completeness = 1 - (miss + false_alarm) / 2
    value = (alpha * position + beta * label + gamma * completeness) / (alpha + beta + gamma)
    if not math.isfinite(value) or not math.isfinite(alpha + beta + gamma):
        # Weights near the double range (1e308) overflow the sums: the same weighted mean, with
        # the weights scaled down first. Only reached where the plain formula gives inf or NaN.
        scale = max(alpha, beta, gamma)
        a, b, c = alpha / scale, beta / scale, gamma / scale
        value = (a * position + b * label + c * completeness) / (a + b + c)
    parts = {
        "position": position,
        "label": label,
        "miss": miss,
        "false_alarm": false_alarm,
        "completeness": completeness,
    }
    return WeightedSumResult(value, "matched", n_pred, n_gt, matches, parts)


def _not_a_list(n_pred: int, n_gt: int, alpha: float, beta: float, gamma: float) -> WeightedSumResult:
    """Version 2, a fenced JSON value that is not a list: ``n_pred`` predictions that match nothing."""
    if not n_gt:
        return WeightedSumResult(0.0 if n_pred else 1.0, "no_gt_boxes", n_pred, 0)
    if not n_pred:
        return WeightedSumResult(0.0, "no_predictions", 0, n_gt)
    parts = {"position": 0.0, "label": 0.0, "miss": 1.0, "false_alarm": 1.0, "completeness": 0.0}
    value = (alpha * 0.0 + beta * 0.0 + gamma * 0.0) / (alpha + beta + gamma)
    return WeightedSumResult(value, "matched", n_pred, n_gt, (), parts)


def shared_result(inp: RewardInput, version: str = "2") -> WeightedSumResult:
    """The sample's weighted_sum with the request's parameters, computed once (cosine reuses it)."""
    params = {**DEFAULTS, **inp.params_of("weighted_sum")}
    return inp.shared(f"weighted_sum@{version}", lambda i: weighted_sum(i.parsed, i.truth, **params, version=version))


def score(inp: RewardInput) -> float:
    return shared_result(inp, "1").value


def score_v2(inp: RewardInput) -> float:
    return shared_result(inp, "2").value
