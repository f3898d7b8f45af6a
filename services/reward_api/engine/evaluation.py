"""Dataset-level detection metrics of the research (POST /v1/evaluate); pure, no HTTP.

Completions are read exactly as the rewards read them (``parsing.ParsedCompletion``: the last
answer block, the last ```json fence in it) and ground truth exactly as ``ground_truth`` reads it.
What is computed, over a whole evaluation set (README "Evaluation" is the user's version):

* **COCO mAP@[.5:.95] and AP50**: one pycocotools ``COCOeval(..., "bbox")`` over every image
  (``coco_ap.dataset_ap``): every predicted box scores 1.0, so the ranking is image order, then
  order of appearance in the answer. Only predictions whose label is one of the set's categories
  take part (COCO cannot evaluate a category it does not have); an invalid box with a known label
  is a false positive, as in the ``ap`` reward.
* **Greedy precision and recall at IoU 0.5**: per image, candidate pairs are (prediction, ground
  truth) with the same label, a valid predicted box and IoU >= 0.5; the pair with the highest IoU
  is matched first (ties: lower prediction index, then lower ground-truth index), both leave the
  pool, and so on. Micro-averaged: precision = matches / predictions, recall = matches /
  ground-truth boxes, over the whole set. Every item of an answer's box list is a prediction,
  whatever its label or box: an invented label or a broken box is a false alarm.
* **NMS-AP** (OVDEval): per image, around every ground-truth box (any label) only the
  highest-scoring prediction with IoU > 0.5 to it is kept, whatever its label; then COCO mAP as
  above. Scores follow the answer order (earlier = higher, as in the AP reward), so the kept one is
  the first such prediction that is itself kept (see :func:`nms_keep`). Negative labels
  (categories of the set with no box in that image) take part, so a hard-negative label on the
  same object as a right one removes whichever comes later. Labels outside the categories do not.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import coco_ap
from .ground_truth import SolutionError, parse_solution
from .matching import greedy_matching
from .parsing import ParsedCompletion

MATCH_IOU = 0.5  # greedy precision/recall: a match needs IoU >= 0.5 (COCO's convention)
NMS_IOU = 0.5  # NMS-AP: a prediction belongs to a ground truth when IoU > 0.5 (OVDEval's algorithm)
MAX_UNKNOWN_LABELS = 50  # the response lists at most this many unknown labels, the most frequent


class EvaluationInputError(ValueError):
    """An evaluation request that cannot be scored; the message names the image and field."""


@dataclass(frozen=True)
class Predictions:
    """The box list of one completion's answer, every item kept in order.

    ``labels[i]`` is None for an item that is not an object or has no string label;
    ``valid[i]`` is False where ``boxes[i]`` is not a valid box (the row is then zeros).
    """

    answered: bool
    labels: tuple[str | None, ...]
    boxes: np.ndarray  # (D, 4) xyxy
    valid: np.ndarray  # (D,) bool


@dataclass(frozen=True)
class GroundTruthBoxes:
    labels: tuple[str, ...]
    boxes: np.ndarray  # (G, 4) xyxy


@dataclass
class CategoryMetrics:
    category: str
    n_gt: int = 0
    n_pred: int = 0
    matches: int = 0
    ap: float | None = None
    ap50: float | None = None
    nms_ap: float | None = None
    nms_ap50: float | None = None
    precision: float | None = None
    recall: float | None = None


@dataclass
class EvaluationResult:
    """Fractions in [0, 1]; None where a value is undefined (no ground truth, no prediction)."""

    n_images: int
    n_answered: int  # images whose completion has an answer block
    n_gt: int
    n_pred: int  # every item of every answer's box list
    matches: int
    n_invalid_box: int  # labelled predictions whose bbox_2d is not a valid box
    n_unknown_label: int  # predictions whose label is a string outside the categories
    n_no_label: int  # items that are not objects or have no string label
    ap: float | None
    ap50: float | None
    precision: float | None
    recall: float | None
    nms_ap: float | None
    nms_ap50: float | None
    per_category: list[CategoryMetrics]
    unknown_labels: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------- reading


def read_predictions(completion: str) -> Predictions:
    """The completion's predictions, parsed (and each item checked) exactly as the rewards do."""
    parsed = ParsedCompletion(completion)
    predictions = parsed.answer_predictions  # () without an answer block
    boxes = np.array([p.box if p.box is not None else (0.0,) * 4 for p in predictions], dtype=np.float64).reshape(-1, 4)
    valid = np.array([p.box is not None for p in predictions], dtype=bool)
    return Predictions(parsed.answer is not None, tuple(p.label for p in predictions), boxes, valid)


def read_ground_truth(solution, index: int, max_boxes: int | None = None) -> GroundTruthBoxes:
    try:
        truth = parse_solution(solution)
    except SolutionError as exc:
        raise EvaluationInputError(f"images[{index}].solution: {exc}") from None
    if max_boxes is not None and truth.n > max_boxes:
        raise EvaluationInputError(
            f"images[{index}].solution: {truth.n} boxes, more than the limit of {max_boxes} "
            "per ground truth (REWARD_API_MAX_GT_BOXES)"
        )
    boxes = np.asarray(truth.boxes, dtype=np.float64).reshape(-1, 4)
    return GroundTruthBoxes(tuple(truth.labels), boxes)


def resolve_categories(
    truths: Sequence[GroundTruthBoxes], categories: Sequence[str] | None, max_categories: int | None = None
) -> list[str]:
    """The set's categories: as given (every ground-truth label must be one), else the ground-truth
    labels in order of first appearance. More than ``max_categories`` is an error: the answer
    holds a row per category, and the COCO tables a column."""
    seen = list(dict.fromkeys(label for truth in truths for label in truth.labels))
    count = len(seen) if categories is None else len(categories)
    if max_categories is not None and count > max_categories:
        where = "ground-truth labels" if categories is None else "categories"
        raise EvaluationInputError(
            f"categories: the set has {count} {where}, more than the limit of {max_categories} per evaluation; "
            "evaluate the categories in groups"
        )
    if categories is None:
        return seen
    doubled = sorted(c for c, n in Counter(categories).items() if n > 1)
    if doubled:
        raise EvaluationInputError(f"categories: {', '.join(map(repr, doubled))} listed more than once")
    known = set(categories)
    missing = [label for label in seen if label not in known]
    if missing:
        raise EvaluationInputError(
            f"categories: ground-truth label(s) {', '.join(map(repr, missing[:20]))} are not among the categories"
        )
    return list(categories)


# ---------------------------------------------------------------- metrics


def xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def iou_matrix(preds: Predictions, truth: GroundTruthBoxes) -> np.ndarray:
    """(D, G) COCO IoU; 0 for invalid predicted boxes (their rows are zero-area)."""
    return coco_ap.bbox_iou(xywh(preds.boxes), xywh(truth.boxes))


class IouRows:
    """The (D, G) IoU of one image, a row at a time: a policy may answer thousands of boxes, and
    the whole matrix of thousands of predictions by thousands of ground truths would take
    gigabytes. ``rows`` (default all) picks the predictions, in order."""

    def __init__(self, preds: Predictions, truth: GroundTruthBoxes, rows: np.ndarray | None = None) -> None:
        self._dt = xywh(preds.boxes) if rows is None else xywh(preds.boxes)[rows]
        self._gt = xywh(truth.boxes)
        self.shape = (len(self._dt), len(self._gt))

    def row(self, p: int) -> np.ndarray:
        return coco_ap.bbox_iou(self._dt[p : p + 1], self._gt)[0]

    def rows(self, ps: Sequence[int]) -> np.ndarray:
        return coco_ap.bbox_iou(self._dt[np.asarray(ps, dtype=np.int64)], self._gt)


_MATRIX_CELLS = 1 << 16  # images up to this many (prediction, ground truth) pairs get the whole matrix


def image_iou(preds: Predictions, truth: GroundTruthBoxes) -> np.ndarray | IouRows:
    """The image's IoU: the matrix when small (fast), else rows on demand (bounded memory)."""
    if len(preds.labels) * truth.boxes.shape[0] <= _MATRIX_CELLS:
        return iou_matrix(preds, truth)
    return IouRows(preds, truth)


def _label_codes(preds: Predictions, truth: GroundTruthBoxes) -> tuple[np.ndarray, np.ndarray]:
    """Labels as integers: equal labels, equal codes; a prediction whose label no ground truth of
    the image has gets -1 (it can match nothing), as does a missing label."""
    code = {label: k for k, label in enumerate(dict.fromkeys(truth.labels))}
    gt = np.array([code[label] for label in truth.labels], dtype=np.int64)
    pred = np.array([code.get(label, -1) if label is not None else -1 for label in preds.labels], dtype=np.int64)
    return pred, gt


def greedy_matches(preds: Predictions, truth: GroundTruthBoxes, iou: np.ndarray | IouRows) -> list[tuple[int, int]]:
    """Label-aware greedy matching at IoU >= 0.5: best IoU first, ties to the lower indexes."""
    pred_code, gt_code = _label_codes(preds, truth)
    if isinstance(iou, IouRows):
        takers = np.flatnonzero(preds.valid & (pred_code >= 0)).tolist()

        def row(p: int) -> np.ndarray:
            return np.where(gt_code == pred_code[p], iou.row(p), np.nan)

        def rows(ps: Sequence[int]) -> np.ndarray:
            same = gt_code[None, :] == pred_code[np.asarray(ps, dtype=np.int64)][:, None]
            return np.where(same, iou.rows(ps), np.nan)

        return [(p, g) for p, g, _ in greedy_matching(takers, row, len(gt_code), MATCH_IOU, rows)]
    same_label = (pred_code[:, None] == gt_code[None, :]) & (pred_code[:, None] >= 0)
    candidate = same_label & preds.valid[:, None] & (iou >= MATCH_IOU)
    pred_index, gt_index = np.nonzero(candidate)
    order = np.lexsort((gt_index, pred_index, -iou[pred_index, gt_index]))
    taken_pred: set[int] = set()
    taken_gt: set[int] = set()
    matches = []
    for p, g in zip(pred_index[order].tolist(), gt_index[order].tolist(), strict=True):
        if p not in taken_pred and g not in taken_gt:
            taken_pred.add(p)
            taken_gt.add(g)
            matches.append((p, g))
    return matches


def nms_keep(iou: np.ndarray | IouRows) -> np.ndarray:
    """(D,) bool: which predictions OVDEval's NMS keeps. ``iou`` (D, G) holds only the predictions
    taking part (known labels), in score order (= answer order).

    Like any NMS, only kept predictions suppress: going down the list, a prediction is kept unless
    it overlaps (IoU > 0.5) a ground truth already held by a kept one; once kept, it holds every
    ground truth it overlaps. So each ground truth keeps at most one prediction around it, the
    highest-scoring survivor, whatever the labels.
    """
    row = iou.row if isinstance(iou, IouRows) else iou.__getitem__
    held = np.zeros(iou.shape[1], dtype=bool)
    keep = np.ones(iou.shape[0], dtype=bool)
    for p in range(iou.shape[0]):
        over = row(p) > NMS_IOU
        if (over & held).any():
            keep[p] = False
        else:
            held |= over
    return keep


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _ap_or_none(value: float) -> float | None:
    return None if value < 0 or math.isnan(value) else value


@dataclass
class _Tally:
    """Running counts over the set, per category index."""

    n_gt: np.ndarray
    n_pred: np.ndarray
    matches: np.ndarray
    n_invalid_box: int = 0
    n_no_label: int = 0
    unknown: Counter = field(default_factory=Counter)


def evaluate_dataset(
    images: Sequence[tuple[str, object]],
    categories: Sequence[str] | None = None,
    max_categories: int | None = None,
    max_gt_boxes: int | None = None,
    max_box_pairs: int | None = None,
) -> EvaluationResult:
    """Every metric of the set. images: (completion, solution) pairs in image order. The limits
    (None: none) bound the work: categories of the set, boxes of one image's ground truth,
    predicted x ground-truth boxes summed over the set."""
    truths = [read_ground_truth(solution, i, max_gt_boxes) for i, (_, solution) in enumerate(images)]
    names = resolve_categories(truths, categories, max_categories)
    index = {name: k for k, name in enumerate(names)}
    preds = [read_predictions(completion) for completion, _ in images]
    pairs = sum(len(p.labels) * len(t.labels) for p, t in zip(preds, truths, strict=True))
    if max_box_pairs is not None and pairs > max_box_pairs:
        raise EvaluationInputError(
            f"images: {pairs} (prediction, ground truth) box pairs to match, more than the "
            f"limit of {max_box_pairs} (REWARD_API_MAX_BOX_PAIRS); evaluate in parts"
        )
    k = len(names)
    tally = _Tally(np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k, np.int64))
    coco_images, nms_images = [], []
    for pred, truth in zip(preds, truths, strict=True):
        iou = image_iou(pred, truth)
        _count(tally, pred, truth, index, greedy_matches(pred, truth, iou))
        coco_input, known = _coco_input(pred, truth, index)
        coco_images.append(coco_input)
        keep = nms_keep(IouRows(pred, truth, known) if isinstance(iou, IouRows) else iou[known])
        nms_images.append(
            coco_input._replace(
                dt_boxes=coco_input.dt_boxes[keep], dt_cats=coco_input.dt_cats[keep], dt_valid=coco_input.dt_valid[keep]
            )
        )
    return _result(images, preds, names, tally, coco_images, nms_images)


def _coco_input(pred: Predictions, truth: GroundTruthBoxes, index: dict[str, int]):
    """The image as coco_ap sees it: predictions of known categories only, in answer order."""
    known = np.array([label in index for label in pred.labels], dtype=bool).reshape(-1)
    dt_cats = np.array([index[label] for label in pred.labels if label in index], dtype=np.int64)
    gt_cats = np.array([index[label] for label in truth.labels], dtype=np.int64)
    return coco_ap.ImageInput(truth.boxes, gt_cats, pred.boxes[known], dt_cats, pred.valid[known]), known


def _count(tally: _Tally, pred: Predictions, truth: GroundTruthBoxes, index: dict[str, int], matches) -> None:
    for gt_label in truth.labels:
        tally.n_gt[index[gt_label]] += 1
    for label in pred.labels:
        if label is None:
            tally.n_no_label += 1
        elif label in index:
            tally.n_pred[index[label]] += 1
        else:
            tally.unknown[label] += 1
    tally.n_invalid_box += sum(
        1 for label, ok in zip(pred.labels, pred.valid, strict=True) if label is not None and not ok
    )
    for _, g in matches:
        tally.matches[index[truth.labels[g]]] += 1


def _result(images, preds, names, tally: _Tally, coco_images, nms_images) -> EvaluationResult:
    cat_ids = np.arange(len(names))
    coco = coco_ap.dataset_ap(coco_images, cat_ids)
    nms = coco_ap.dataset_ap(nms_images, cat_ids)
    per_category = [
        CategoryMetrics(
            category=name,
            n_gt=int(tally.n_gt[k]),
            n_pred=int(tally.n_pred[k]),
            matches=int(tally.matches[k]),
            ap=_ap_or_none(coco.per_category[k][0]),
            ap50=_ap_or_none(coco.per_category[k][1]),
            nms_ap=_ap_or_none(nms.per_category[k][0]),
            nms_ap50=_ap_or_none(nms.per_category[k][1]),
            precision=_ratio(int(tally.matches[k]), int(tally.n_pred[k])),
            recall=_ratio(int(tally.matches[k]), int(tally.n_gt[k])),
        )
        for k, name in enumerate(names)
    ]
    n_pred = sum(len(p.labels) for p in preds)
    matches = int(tally.matches.sum())
    n_gt = int(tally.n_gt.sum())
    return EvaluationResult(
        n_images=len(images),
        n_answered=sum(p.answered for p in preds),
        n_gt=n_gt,
        n_pred=n_pred,
        matches=matches,
        n_invalid_box=tally.n_invalid_box,
        n_unknown_label=sum(tally.unknown.values()),
        n_no_label=tally.n_no_label,
        ap=_ap_or_none(coco.ap),
        ap50=_ap_or_none(coco.ap50),
        precision=_ratio(matches, n_pred),
        recall=_ratio(matches, n_gt),
        nms_ap=_ap_or_none(nms.ap),
        nms_ap50=_ap_or_none(nms.ap50),
        per_category=per_category,
        unknown_labels=dict(tally.unknown.most_common(MAX_UNKNOWN_LABELS)),
    )
