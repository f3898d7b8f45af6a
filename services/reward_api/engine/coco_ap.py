"""Exact, vectorised NumPy re-implementation of pycocotools' ``COCOeval(..., "bbox")``.

Only the setting the rewards use is implemented: area range "all" ([0, 1e10]), ``maxDets`` 100,
``iscrowd`` 0, ``useCats`` 1, the default IoU and recall thresholds. Within that setting every
result equals pycocotools (the tests compare to within 1e-12; in practice bit for bit).

The pipeline mirrors pycocotools, one function per stage:

* :func:`evaluate_image`  = ``COCOeval.evaluateImg`` for every category of one image at once;
* :func:`accumulate`      = ``COCOeval.accumulate`` over any number of images;
* :func:`summarize`       = ``stats[0]`` and ``stats[1]`` of ``COCOeval.summarize``;
* :func:`single_image_ap` and :func:`dataset_ap` chain the three.

A completion's image is tiny (a handful of boxes), and there NumPy's per-call cost outweighs the
arithmetic: :func:`single_image_ap` evaluates such images with plain Python floats instead
(:func:`_small_image_ap`, the same IEEE operations in the same order, so the same bits; the tests
compare both paths on random images) and keeps NumPy for the final mean only.

Deliberate departure: a detection flagged invalid (``dt_valid`` False) is a zero-area box that
overlaps nothing, so it is always a false positive (pycocotools would match NaN boxes and
ignore inverted ones, which a policy can exploit).

Not covered: coordinates so large that ``w*h`` overflows to inf (IoU becomes NaN in pycocotools,
whose loop then treats NaN as a match); pixel coordinates never get there.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

__all__ = [
    "AREA_RNG",
    "IOU_THRS",
    "MAX_DETS",
    "REC_THRS",
    "Accumulated",
    "DatasetAP",
    "ImageEval",
    "ImageInput",
    "accumulate",
    "bbox_iou",
    "dataset_ap",
    "evaluate_image",
    "single_image_ap",
    "summarize",
]

# Built exactly as pycocotools' Params.setDetParams builds them: linspace, not arange, so that the
# thresholds are the same doubles (0.55 from linspace is not the literal 0.55, and a box whose
# IoU lands on the literal must be judged the same way).
IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = 100
AREA_RNG = (0.0**2, 1e5**2)  # area range "all"
# evaluateImg starts each search at min(t, 1 - 1e-10): a match needs IoU >= that.
_MATCH_THRS = np.minimum(IOU_THRS, 1 - 1e-10)
_T = len(IOU_THRS)
_R = len(REC_THRS)
_EPS = np.spacing(1)  # pycocotools' guard in tp / (tp + fp + eps)
# Upper bound on the cells (categories x longest detection list) of one padded accumulate batch;
# a dataset with very uneven categories is processed in several batches instead.
_BATCH_CELLS = 1 << 16
_TIER_BIT = np.int64(1 << 62)
# An image with more (detection, gt) pairs than this and several categories is matched one
# category at a time, so memory stays linear in the boxes.
_SPLIT_CELLS = 1 << 16
_T_RANGE = np.arange(_T)


class ImageEval(NamedTuple):
    """Per-category match records of one image (pycocotools' evalImgs for area "all").

    Detections are the kept ones (known category, at most ``MAX_DETS`` per category, best score
    first within a category, ties in input order); columns of ``matched``/``ignored`` follow them.
    """

    dt_cats: np.ndarray  # (D,) int64 category id of each kept detection
    dt_scores: np.ndarray  # (D,) float64
    matched: np.ndarray  # (T, D) bool: matched to a ground truth at IoU threshold t
    ignored: np.ndarray  # (T, D) bool: neither true nor false positive at threshold t
    gt_cats: np.ndarray  # (G',) int64 category of every non-ignored ground truth (recall denominators)


class Accumulated(NamedTuple):
    """pycocotools' ``eval['precision']``/``eval['recall']`` for area "all", maxDets 100."""

    cat_ids: np.ndarray  # (K,) sorted category ids
    precision: np.ndarray  # (T, R, K); -1 for a category without non-ignored ground truth
    recall: np.ndarray  # (T, K); -1 likewise


@dataclass(frozen=True, slots=True)
class DatasetAP:
    """Dataset-level result: ``ap`` = stats[0], ``ap50`` = stats[1], and per category the same two
    numbers over that category alone (-1.0 for a category without ground truth)."""

    ap: float
    ap50: float
    per_category: dict[int, tuple[float, float]]


class ImageInput(NamedTuple):
    """One image of :func:`dataset_ap`; a plain tuple in this order works too."""

    gt_boxes: object
    gt_cats: object
    dt_boxes: object
    dt_cats: object
    dt_valid: object = None
    dt_scores: object = None


def _xyxy(boxes) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def _ids(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(-1)


def _sorted_ids(values) -> np.ndarray:
    # sorted(set()) beats np.unique several times over on the handful of ids of one image.
    return np.array(sorted(set(_ids(values).tolist())), dtype=np.int64)


def _member(values: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """values in sorted_ids (cheaper than np.isin on small arrays)."""
    if not len(sorted_ids):
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
    return sorted_ids[pos] == values


def bbox_iou(dt_xywh, gt_xywh) -> np.ndarray:
    """(D, G) IoU of [x, y, w, h] boxes, operation for operation as maskApi.c ``bbIou`` (iscrowd 0)."""
    d = np.asarray(dt_xywh, dtype=np.float64).reshape(-1, 4).T
    g = np.asarray(gt_xywh, dtype=np.float64).reshape(-1, 4).T
    return _iou(d[0], d[1], d[2], d[3], d[2] * d[3], g[0], g[1], g[2], g[3], g[2] * g[3])


# Boxes near the double range (a policy may answer 1e300) make inf areas and inf - inf = NaN
# overlaps; pycocotools computes the same and so do we, so the warnings would only fill the logs.
_QUIET_OVERFLOW = np.errstate(over="ignore", invalid="ignore")


@_QUIET_OVERFLOW
def _iou(dx, dy, dw, dh, da, gx, gy, gw, gh, ga) -> np.ndarray:
    # The far edge is x + w, not the x2 it came from: that is what pycocotools computes with, and
    # it can differ from x2 in the last bit.
    w = np.minimum((dx + dw)[:, None], gx + gw) - np.maximum(dx[:, None], gx)
    h = np.minimum((dy + dh)[:, None], gy + gh) - np.maximum(dy[:, None], gy)
    inter = w * h
    union = da[:, None] + ga - inter  # da + ga - i, in that order
    # bbIou leaves 0 unless both overlaps are positive; `where` also keeps 0/0 from being evaluated.
    return np.divide(inter, union, out=np.zeros_like(inter), where=(w > 0) & (h > 0))


def evaluate_image(
    gt_boxes,
    gt_cats,
    dt_boxes,
    dt_cats,
    dt_valid=None,
    dt_scores=None,
    cat_ids=None,
) -> ImageEval:
    """Match one image's detections to its ground truth, every category and IoU threshold at once.

    gt_boxes (G, 4) / dt_boxes (D, 4): xyxy corners; gt_cats / dt_cats: int category ids;
    dt_valid (D,) bool (default all True): False rows are false positives whatever their box;
    dt_scores (D,) (default all 1.0); cat_ids: the categories evaluated (default: this image's gt
    categories). Ground truths and detections of other categories are dropped, as pycocotools
    drops annotations whose category is not in ``params.catIds``.
    """
    return _evaluate(*_prepare(gt_boxes, gt_cats, dt_boxes, dt_cats, dt_valid, dt_scores, cat_ids))


def _prepare(gt_boxes, gt_cats, dt_boxes, dt_cats, dt_valid, dt_scores, cat_ids):
    """Inputs as arrays, checked; ground truth of other categories dropped; sorted category ids."""
    gt, gc, dt, dc = _xyxy(gt_boxes), _ids(gt_cats), _xyxy(dt_boxes), _ids(dt_cats)
    valid = np.ones(len(dt), dtype=bool) if dt_valid is None else np.asarray(dt_valid, dtype=bool).reshape(-1)
    scores = None if dt_scores is None else np.asarray(dt_scores, dtype=np.float64).reshape(-1)
    if len(gc) != len(gt) or not len(dc) == len(valid) == len(dt) or (scores is not None and len(scores) != len(dt)):
        raise ValueError("boxes, categories, validity and scores must have matching lengths")
    cats = _sorted_ids(gc if cat_ids is None else cat_ids)
    if cat_ids is not None and len(gc):
        keep = _member(gc, cats)
        if not keep.all():
            gt, gc = gt[keep], gc[keep]
    return gt, gc, dt, dc, valid, scores, cats


@_QUIET_OVERFLOW
def _evaluate(gt, gc, dt, dc, valid, scores, cats) -> ImageEval:
    """evaluate_image on prepared arrays (every gt is of a category in ``cats``)."""
    # Detections: known categories only, best score first (stable: equal scores keep input order,
    # as pycocotools' mergesort does), at most MAX_DETS per category. `order` None = as given.
    order = None
    n = len(dc)
    # A set test is cheaper than array ops for the few detections of a completion.
    if n and not set(dc.tolist()).issubset(cats.tolist()):
        order = np.flatnonzero(_member(dc, cats))
    if n:
        if scores is not None:
            base = np.arange(n) if order is None else order
            order = base[np.argsort(-scores[base], kind="stable")]
        if (n if order is None else len(order)) > MAX_DETS:
            base = np.arange(n) if order is None else order
            order = base[_rank_within(dc[base]) < MAX_DETS]
    if order is not None:
        dt, dc, valid = dt[order], dc[order], valid[order]
        scores = None if scores is None else scores[order]
    n_dt, n_gt = len(dc), len(gc)
    if scores is None:
        scores = np.ones(n_dt)
    all_valid = np.count_nonzero(valid) == n_dt
    if not all_valid:
        dt = np.where(valid[:, None], dt, 0.0)  # invalid: a zero-area box, matched to nothing below

    # Boxes as pycocotools stores them: [x, y, w, h] with w = x2 - x1, area = w * h.
    dx, dy, dx2, dy2 = dt.T
    dw, dh = dx2 - dx, dy2 - dy
    gx, gy, gx2, gy2 = gt.T
    gw, gh = gx2 - gx, gy2 - gy
    dt_area, gt_area = dw * dh, gw * gh
    gt_ignored = (gt_area < AREA_RNG[0]) | (gt_area > AREA_RNG[1])
    any_gt_ignored = np.count_nonzero(gt_ignored) > 0

    matched = ignored = np.zeros((_T, n_dt), dtype=bool)
    if n_dt and n_gt:
        dt_geom, gt_geom = (dx, dy, dw, dh, dt_area), (gx, gy, gw, gh, gt_area)
        ignored_or_none = gt_ignored if any_gt_ignored else None
        if len(cats) > 1 and n_dt * n_gt > _SPLIT_CELLS:
            match = _match_per_category(dt_geom, gt_geom, dc, gc, valid, ignored_or_none)
        else:
            match = _match(dt_geom, gt_geom, dc, gc, valid, ignored_or_none, len(cats) > 1)
        if match is not None:
            matched = match >= 0
            if any_gt_ignored:  # a detection matched to an ignored gt is ignored
                ignored = matched & gt_ignored[match]
    out_of_range = (dt_area < AREA_RNG[0]) | (dt_area > AREA_RNG[1])
    if np.count_nonzero(out_of_range):  # unmatched detections outside the area range are ignored
        ignored = ignored | (~matched & out_of_range)
    return ImageEval(
        dt_cats=dc,
        dt_scores=scores,
        matched=matched,
        ignored=ignored,
        gt_cats=gc[~gt_ignored] if any_gt_ignored else gc,
    )


def _match(dt_geom, gt_geom, dc, gc, valid, gt_ignored, by_category: bool) -> np.ndarray | None:
    """(T, D) matched gt index or -1 (None: no candidate at all) over the whole IoU matrix."""
    iou = _iou(*dt_geom, *gt_geom)
    allowed = iou >= _MATCH_THRS[0]  # thresholds only rise: the loosest candidate set
    if by_category:
        allowed &= dc[:, None] == gc
    if not valid.all():
        allowed &= valid[:, None]
    if not np.count_nonzero(allowed):
        return None
    return _greedy_match(iou, allowed, gt_ignored)


def _match_per_category(dt_geom, gt_geom, dc, gc, valid, gt_ignored) -> np.ndarray | None:
    """:func:`_match`, one category at a time: matches never cross categories, and the IoU of
    every detection with every gt is quadratic (6,000 boxes of 6,000 labels: 1.4 GB), while the
    per-category blocks hold at most MAX_DETS detections each."""
    match = np.full((_T, len(dc)), -1, dtype=np.int64)
    found = False
    gt_by_cat: dict[int, list[int]] = {}
    for g, c in enumerate(gc.tolist()):
        gt_by_cat.setdefault(c, []).append(g)
    dt_order = np.argsort(dc, kind="stable")  # within a category: detection order kept
    bounds = np.flatnonzero(np.diff(dc[dt_order])) + 1
    for d_idx in np.split(dt_order, bounds):
        g_list = gt_by_cat.get(int(dc[d_idx[0]]))
        if not g_list:
            continue
        g_idx = np.array(g_list, dtype=np.int64)
        sub = _match(
            tuple(a[d_idx] for a in dt_geom),
            tuple(a[g_idx] for a in gt_geom),
            dc[d_idx],
            gc[g_idx],
            valid[d_idx],
            None if gt_ignored is None else gt_ignored[g_idx],
            False,
        )
        if sub is not None:
            found = True
            match[:, d_idx] = np.where(sub >= 0, g_idx[sub], -1)
    return match if found else None


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """0-based position of each element among the earlier elements of its own group."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    first = np.searchsorted(sorted_groups, sorted_groups, side="left")
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups)) - first
    return rank


def _greedy_match(iou: np.ndarray, cand0: np.ndarray, gt_ignored: np.ndarray | None) -> np.ndarray:
    """pycocotools' greedy matching at every IoU threshold at once; (T, D) matched gt index or -1.

    iou (D, G); cand0 (D, G): may match at the lowest threshold (same category, valid, IoU >= .5);
    gt_ignored (G,) or None when no gt is ignored. evaluateImg lets each detection in turn take,
    among its still-free candidates, a non-ignored gt before an ignored one (it sorts ignored gts
    last and stops there once it holds a match), then the highest IoU, then the later gt (it
    replaces its running match when ``iou >= best``).
    """
    n_g = iou.shape[1]
    # Work with the gts reversed: argmax returns the first maximum, which is then the later gt.
    masked = np.where(cand0, iou, -1.0)[:, ::-1]
    fav = masked.argmax(axis=1)
    best = masked[np.arange(len(fav)), fav]
    # A detection whose candidates nobody else wants gets, at every threshold, its highest-IoU
    # candidate if that clears the threshold (with no ignored gt, IoU alone ranks the gts).
    match = np.where(best >= _MATCH_THRS[:, None], n_g - 1 - fav, -1)
    wanted = np.add.reduce(cand0, axis=0)  # how many detections could take each gt
    if gt_ignored is None:
        if wanted.max() <= 1:
            return match
        # Only detections that share a candidate compete; they go one by one, in order.
        queue = np.flatnonzero(np.logical_or.reduce(cand0 & (wanted > 1), axis=1))
        key = masked
    else:
        # Ignored gts make the favourite depend on the threshold: everyone with a candidate queues.
        # The preference as one exact integer: IoUs here are >= 0 and < 2, so their IEEE bit
        # patterns order like the values and stay below 2**62, leaving bit 62 for "not ignored".
        queue = np.flatnonzero(best >= 0)
        key = np.where(cand0, iou.view(np.int64) + np.where(gt_ignored, 0, _TIER_BIT), -1)[:, ::-1]
    iou_rev = iou[:, ::-1]
    free = np.ones((_T, n_g), dtype=bool)  # (T, G reversed)
    for d in queue.tolist():
        options = np.where(free & (iou_rev[d] >= _MATCH_THRS[:, None]), key[d], -1)  # -1: not a candidate
        pick = options.argmax(axis=1)
        taken = options[_T_RANGE, pick] >= 0
        match[:, d] = np.where(taken, n_g - 1 - pick, -1)
        free[_T_RANGE, pick] &= ~taken
    return match


def _recall_gather(n_gts: tuple[int, ...]) -> np.ndarray:
    """Flat indices (T, R, K) into the (T, K, J) table of _precision_recall, J = max(n_gts) + 1,
    that read, for each category's gt count n and recall threshold x, the entry of the least
    true-positive count j with j / n >= x, stored at position J - 1 - j (the table is reversed).

    accumulate takes ``np.searchsorted(rc, recThrs, 'left')`` with rc = tp / n. Division by a
    positive constant is monotone, so the first position with rc >= x is the first with tp >= j:
    for j >= 1 the j-th true positive, for j = 0 the first detection.
    """
    n_k, n_j = len(n_gts), max(n_gts) + 1
    steps = np.stack([np.searchsorted(np.arange(n + 1) / n, REC_THRS, side="left") for n in n_gts])  # (K, R)
    flat = (n_j - 1 - steps).T + np.arange(0, n_k * n_j, n_j)  # (R, K)
    flat = flat + np.arange(0, _T * n_k * n_j, n_k * n_j)[:, None, None]  # (T, R, K)
    flat.flags.writeable = False
    return flat


# The few categories of one completion repeat the same gt counts over and over: worth caching,
# but only small keys, so the cache stays a few megabytes.
_recall_gather_small = lru_cache(maxsize=256)(_recall_gather)


def accumulate(images: Sequence[ImageEval], cat_ids) -> Accumulated:
    """pycocotools ``accumulate`` (area "all", maxDets 100) over the records of any number of images.

    images: the :func:`evaluate_image` results, in image-id order (equal scores keep that order,
    as pycocotools' mergesort does); cat_ids: the categories to report, e.g. every gt category of
    the dataset. A category without non-ignored ground truth gets -1, as in pycocotools.
    """
    return _accumulate(list(images), _sorted_ids(cat_ids), trusted=False)


def _accumulate(images: list[ImageEval], cats: np.ndarray, trusted: bool = True) -> Accumulated:
    """accumulate on sorted unique ``cats``; trusted: the records were made with these categories."""
    n_cat = len(cats)
    if len(images) == 1:
        im = images[0]
        dt_cats, scores, matched, ignored, gt_cats = im.dt_cats, im.dt_scores, im.matched, im.ignored, im.gt_cats
    elif images:
        dt_cats = np.concatenate([im.dt_cats for im in images])
        scores = np.concatenate([im.dt_scores for im in images])
        matched = np.concatenate([im.matched for im in images], axis=1)
        ignored = np.concatenate([im.ignored for im in images], axis=1)
        gt_cats = np.concatenate([im.gt_cats for im in images])
    else:
        dt_cats, scores, gt_cats = np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
        matched = ignored = np.zeros((_T, 0), dtype=bool)
    if not trusted:  # records of other categories are not ours to count
        known = _member(gt_cats, cats)
        gt_cats = gt_cats[known]
        known = _member(dt_cats, cats)
        dt_cats, scores, matched, ignored = dt_cats[known], scores[known], matched[:, known], ignored[:, known]

    n_gt = np.bincount(np.searchsorted(cats, gt_cats), minlength=n_cat)
    k_of = np.searchsorted(cats, dt_cats)
    # Group by category; within one, best score first and ties in concatenation order (lexsort is
    # stable): the order of pycocotools' mergesort over the concatenated per-image lists.
    if len(k_of) > 1:
        # One image's records are score-ordered within each category already.
        if len(images) > 1:
            order = np.lexsort((-scores, k_of))
        elif n_cat > 1:
            order = np.argsort(k_of, kind="stable")
        else:
            order = None
        if order is not None:
            k_of, matched, ignored = k_of[order], matched[:, order], ignored[:, order]
    if np.count_nonzero(ignored):
        tps = matched & ~ignored
        fps = ~(matched | ignored)
    else:  # the common case: every detection is a true or a false positive
        tps, fps = matched, None
    n_dt = np.bincount(k_of, minlength=n_cat)
    pos = np.arange(len(k_of))  # index within its category
    if n_cat > 1:
        pos = pos - (np.add.accumulate(n_dt) - n_dt)[k_of]

    batches = _batches(n_dt.tolist(), n_gt.tolist())
    if batches is None:  # every category in one padded batch
        precision, recall = _precision_recall(n_dt, n_gt, k_of, pos, tps, fps)
    else:
        precision = np.full((_T, _R, n_cat), -1.0)
        recall = np.full((_T, n_cat), -1.0)
        for batch in batches:
            slot = np.full(n_cat, -1)
            slot[batch] = np.arange(len(batch))
            sel = slot[k_of] >= 0
            fps_b = None if fps is None else fps[:, sel]
            q, rec = _precision_recall(n_dt[batch], n_gt[batch], slot[k_of[sel]], pos[sel], tps[:, sel], fps_b)
            precision[:, :, batch] = q
            recall[:, batch] = rec
    absent = n_gt == 0
    if np.count_nonzero(absent):  # pycocotools skips these: they keep -1
        precision[:, :, absent] = -1.0
        recall[:, absent] = -1.0
    return Accumulated(cat_ids=cats, precision=precision, recall=recall)


def _batches(n_dt: list[int], n_gt: list[int]) -> list[np.ndarray] | None:
    """None when all categories fit one padded batch; else groups of the categories with gt."""
    if len(n_dt) * max(max(n_dt, default=0), max(n_gt, default=0), 1) <= _BATCH_CELLS:
        return None
    longest = [max(d, g, 1) for d, g in zip(n_dt, n_gt, strict=True)]
    evaluated = sorted((k for k in range(len(n_dt)) if n_gt[k] > 0), key=lambda k: -longest[k])
    batches, start = [], 0
    while start < len(evaluated):
        size = max(_BATCH_CELLS // longest[evaluated[start]], 1)  # the longest row of this batch first
        batches.append(np.array(sorted(evaluated[start : start + size]), dtype=np.intp))
        start += size
    return batches


def _precision_recall(n_dt, n_gt, rows, cols, tps, fps) -> tuple[np.ndarray, np.ndarray]:
    """Precision (T, R, K) at the recall thresholds and final recall (T, K) of K categories, laid
    side by side in padded (T, K, width) arrays. rows/cols place each detection (the columns of
    tps/fps, already in category-then-score order). Categories with n_gt 0 come out as junk that
    the caller replaces.
    """
    n_k = len(n_dt)
    width = max(n_dt.tolist(), default=0)
    gts = np.maximum(n_gt, 1)
    gts_list = gts.tolist()
    if width == 0:  # ground truth but no detection anywhere: precision and recall 0
        return np.zeros((_T, _R, n_k)), np.zeros((_T, n_k))
    tp = np.zeros((_T, n_k, width), dtype=bool)
    tp[:, rows, cols] = tps
    # Padding is neither tp nor fp: the counts stay flat past a category's end. Float running sums
    # of 0/1 are exact integers, as pycocotools' cumsum().astype(float).
    tp_sum = np.add.accumulate(tp, axis=2, dtype=np.float64)
    at = tp.ravel().nonzero()[0]  # flat positions of the true positives
    row = at // width  # t * K + k
    count = tp_sum.ravel()[at]  # j: this is the j-th true positive of its row
    if fps is None:  # nothing ignored: fp + tp is the position + 1
        seen = (at - row * width + 1).astype(np.float64)
    else:
        fp = np.zeros((_T, n_k, width), dtype=bool)
        fp[:, rows, cols] = fps
        seen = np.add.accumulate(fp, axis=2, dtype=np.float64).ravel()[at] + count
    # pycocotools' precision envelope max(pr[i:]) read at the first position where the tp count
    # reaches j: the j-th true positive (j >= 1) or the first detection (j = 0). pr only rises at a
    # true positive (false positives lower it, ignored ones repeat it, before the first tp it is 0),
    # so that maximum runs over the true positives alone: a reverse running max over j of
    # pr_j = j / (fp + tp + eps), 0 past the last true positive (pycocotools' try/except leaves 0).
    n_j = max(gts_list) + 1
    by_count = np.zeros((_T, n_k, n_j))
    by_count.ravel()[row * n_j + count.astype(np.intp)] = count / (seen + _EPS)
    env = np.maximum.accumulate(by_count[:, :, ::-1], axis=2)  # index n_j - 1 - j holds j's value
    # Gather straight into the (T, R, K) layout through flat indices (multi-axis fancy indexing
    # and a transposed copy cost more than the index arithmetic, which is cached).
    gather = _recall_gather_small if n_k <= 4 else _recall_gather
    q = env.ravel()[gather(tuple(gts_list))]
    return q, tp_sum[:, :, -1] / gts  # recall = rc[-1] = tp / npig (0 without detections)


def _mean_valid(values: np.ndarray) -> float:
    """summarize's ``np.mean(s[s > -1])`` (-1 when nothing is valid): the same elements in the same
    order, summed by the same pairwise reduction, so the same bits."""
    kept = values[values > -1]
    return float(np.add.reduce(kept) / len(kept)) if len(kept) else -1.0


def summarize(acc: Accumulated) -> tuple[float, float]:
    """(stats[0], stats[1]): mean precision over IoU .50:.95 and at IoU .50, area "all", maxDets 100."""
    precision = acc.precision
    if len(acc.cat_ids) and acc.recall[0].min() > -1:  # no -1 column: every element counts
        return float(np.add.reduce(precision.ravel()) / precision.size), float(
            np.add.reduce(precision[0].ravel()) / precision[0].size
        )
    return _mean_valid(precision), _mean_valid(precision[0])


def single_image_ap(gt_boxes, gt_cats, dt_boxes, dt_cats, dt_valid) -> tuple[float, float]:
    """(ap, ap50) of one image. gt_boxes (G,4) / dt_boxes (D,4): float64 xyxy corners;
    gt_cats (G,) / dt_cats (D,): int category ids; dt_valid (D,) bool: False = invalid predicted box,
    scored as a zero-area box overlapping nothing (a false positive). Detections all score 1.0 and keep
    their order. Equals pycocotools COCOeval(...,'bbox') stats[0], stats[1] within 1e-12.

    Categories are those of the ground truth; detections of any other category are ignored. Without
    ground truth the result is (-1.0, -1.0), as pycocotools reports it.
    """
    gt, gc, dt, dc = _xyxy(gt_boxes), _ids(gt_cats), _xyxy(dt_boxes), _ids(dt_cats)
    valid = np.ones(len(dt), dtype=bool) if dt_valid is None else np.asarray(dt_valid, dtype=bool).reshape(-1)
    if len(dc) == len(valid) == len(dt) and len(gc) == len(gt) and _is_small(len(gt), len(dt)):
        result = _small_image_ap(gt.tolist(), gc.tolist(), dt.tolist(), dc.tolist(), valid.tolist())
        if result is not None:
            return result
    prepared = _prepare(gt, gc, dt, dc, dt_valid, None, None)
    return summarize(_accumulate([_evaluate(*prepared)], prepared[-1]))


def dataset_ap(images: Iterable[ImageInput | tuple], cat_ids=None) -> DatasetAP:
    """Dataset-level COCO mAP, as one pycocotools COCOeval over all the images.

    images: :class:`ImageInput` (or tuples in its field order), in image-id order; cat_ids: the
    dataset's categories (default: every category with ground truth in some image). A detection
    of a category that has ground truth in other images only is a false positive for it.
    """
    inputs = [ImageInput(*im) for im in images]
    if cat_ids is None:
        cat_ids = [c for im in inputs for c in _ids(im.gt_cats).tolist()]
    cats = _sorted_ids(cat_ids)
    records = [evaluate_image(*im, cat_ids=cats) for im in inputs]
    acc = _accumulate(records, cats)
    ap, ap50 = summarize(acc)
    per_category = {
        int(c): (_mean_valid(acc.precision[:, :, k]), _mean_valid(acc.precision[0, :, k]))
        for k, c in enumerate(acc.cat_ids)
    }
    return DatasetAP(ap=ap, ap50=ap50, per_category=per_category)


# ---------------------------------------------------------------- small images in pure Python
#
# A completion holds a handful of boxes. On arrays that small every NumPy call costs more than
# the arithmetic it does, so single_image_ap evaluates them with plain floats instead: the same
# IEEE operations in the same order as the array path (and as maskApi.c / cocoeval.py), hence
# the same bits. Only the final mean stays in NumPy, so that it is summed by NumPy's pairwise
# reduction over the same (T, R, K) sequence as pycocotools' np.mean.
# Images the shortcut does not cover (an ignored gt or out-of-range detection, no ground truth,
# truncation at MAX_DETS, or too many boxes to be worth it) take the array path.

_SMALL_DETS, _SMALL_GTS = 48, 64  # beyond these sizes the array path is as fast or faster (measured)
_SMALL_PAIRS = 512
_MATCH_THR_LIST = _MATCH_THRS.tolist()
_AREA_LO, _AREA_HI = AREA_RNG
_EPS_F = float(_EPS)


def _is_small(n_gt: int, n_dt: int) -> bool:
    return 0 < n_gt <= _SMALL_GTS and n_dt <= _SMALL_DETS and n_dt * n_gt <= _SMALL_PAIRS


@lru_cache(maxsize=128)  # keys: gt counts, at most _SMALL_GTS in all; values: ~100 KB at worst
def _layout(n_gts: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """How :func:`_small_image_ap` spreads its envelope values over accumulate's (T, R, K) array.

    The values come laid out (T, K, j), category k holding n_k + 1 of them (j = 0..n_k true
    positives); recall threshold r reads, for category k, the least j with j / n_k >= REC_THRS[r]
    (see _recall_gather). Consecutive recall thresholds that read the same j for every category
    form a segment. Returns ``gather`` (T, S, K): flat indices of the values each segment reads,
    and ``lengths`` (S,): how many recall thresholds each spans; ``values[gather]`` repeated by
    ``lengths`` along axis 1 is the (T, R, K) array, C-ordered as pycocotools' is.
    """
    steps = np.stack([np.searchsorted(np.arange(n + 1) / n, REC_THRS, side="left") for n in n_gts], axis=1)
    starts = np.flatnonzero(np.r_[True, (steps[1:] != steps[:-1]).any(axis=1)])  # (S,)
    lengths = np.diff(np.r_[starts, _R])
    widths = [n + 1 for n in n_gts]
    offsets = np.cumsum([0, *widths[:-1]])  # where category k's values start within one threshold
    gather = (steps[starts] + offsets)[None, :, :] + (np.arange(_T) * sum(widths))[:, None, None]
    gather.flags.writeable = False
    lengths.flags.writeable = False
    return gather, lengths


def _xywh(box) -> tuple | None:
    """An xyxy box as (x, y, x + w, y + h, area) with w = x2 - x1, as pycocotools stores and uses
    it; None when the area is outside the "all" range or NaN (the array path handles those)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    area = w * h
    if not _AREA_LO <= area <= _AREA_HI:
        return None
    return x1, y1, x1 + w, y1 + h, area


def _options(d: tuple, gts: list, lowest: float) -> list[tuple[int, float]] | None:
    """The gts one detection may match at the lowest threshold: ``(gt index, IoU)`` in gt order,
    IoU as maskApi.c bbIou (and _iou) computes it. None when a union is not positive, which
    valid boxes never produce (the array path then decides)."""
    dx, dy, dx2, dy2, da = d
    options = []
    for g, (gx, gy, gx2, gy2, ga) in enumerate(gts):
        # fmin/fmax as conditionals (builtin min/max calls cost more); no NaN can reach here.
        w = (dx2 if dx2 < gx2 else gx2) - (dx if dx > gx else gx)
        h = (dy2 if dy2 < gy2 else gy2) - (dy if dy > gy else gy)
        if w > 0 and h > 0:
            inter = w * h
            union = da + ga - inter
            if not union > 0:
                return None
            iou = inter / union
            if iou >= lowest:
                options.append((g, iou))
    return options


def _precision_at(options: list, n_gt: int, thr: float) -> list[float]:
    """One category at one IoU threshold, no gt ignored: accumulate's precision read at
    j = 0..n_gt true positives, after evaluateImg's greedy matching.

    Matching: each detection in turn (options[d], empty for an invalid one) takes the free gt of
    highest IoU >= thr, the later gt on ties (evaluateImg replaces its pick when ``iou >= best``).
    Precision (see _precision_recall): the running max from the right of pr = tp / (fp + tp + eps)
    over the true positives; j = 0 reads the first detection, which that envelope makes the
    overall maximum; j past the last true positive reads 0 (pycocotools' IndexError).
    """
    free = [True] * n_gt
    prs: list[float] = []
    for position, choices in enumerate(options, start=1):
        best, pick = thr, -1
        for g, iou in choices:
            if iou >= best and free[g]:
                best, pick = iou, g
        if pick >= 0:
            free[pick] = False
            prs.append((len(prs) + 1) / (position + _EPS_F))  # j / ((fp + tp) + eps), fp + tp exact
    values = [0.0] * (n_gt + 1)
    best = 0.0
    for j in range(len(prs), 0, -1):
        if prs[j - 1] > best:
            best = prs[j - 1]
        values[j] = best
    values[0] = best
    return values


def _category_rows(dets: list, gts: list, thresholds: list[float]) -> list[list[float]] | None:
    """_precision_at of one category at every IoU threshold; None to defer to the array path."""
    options = []
    for d in dets:
        choices = [] if d is None else _options(d, gts, thresholds[0])
        if choices is None:
            return None
        options.append(choices)
    # Matching at a threshold depends only on which pairs reach it, and a pair of IoU v reaches
    # the thresholds before bisect_right(thresholds, v): between those cuts nothing changes, so
    # each run of thresholds is evaluated once (typically 2 or 3 runs instead of 10 thresholds).
    cuts = {bisect_right(thresholds, iou) for choices in options for _, iou in choices}
    cuts.add(len(thresholds))
    out, start = [], 0
    for end in sorted(cuts):
        out += [_precision_at(options, len(gts), thresholds[start])] * (end - start)
        start = end
    return out


def _small_image_ap(gt: list, gc: list, dt: list, dc: list, valid: list) -> tuple[float, float] | None:
    """single_image_ap on plain lists (float xyxy boxes, int categories, bool validity), or None
    when the image is outside what this shortcut covers."""
    if len(dt) > MAX_DETS:  # no truncation to implement: _is_small keeps far below it anyway
        return None
    gts: dict[int, list] = {}
    for box, c in zip(gt, gc, strict=True):
        g = _xywh(box)
        if g is None:
            return None
        gts.setdefault(c, []).append(g)
    cats = sorted(gts)
    # Detections of evaluated categories, in input order (all score 1.0 and mergesort is stable);
    # an invalid one is None: a zero-area box that matches nothing.
    dets: dict[int, list] = {c: [] for c in cats}
    for box, c, ok in zip(dt, dc, valid, strict=True):
        if c in dets:
            d = _xywh(box) if ok else None
            if ok and d is None:
                return None
            dets[c].append(d)
    # Envelope values of every category at every threshold, laid out (T, K, j).
    by_cat = []
    for c in cats:
        rows = _category_rows(dets[c], gts[c], _MATCH_THR_LIST)
        if rows is None:
            return None
        by_cat.append(rows)
    values = []
    for t in range(_T):
        for rows in by_cat:
            values += rows[t]
    gather, lengths = _layout(tuple(len(gts[c]) for c in cats))
    precision = np.array(values)[gather].repeat(lengths, axis=1).ravel()  # (T, R, K), C order
    # summarize's mean: NumPy's pairwise sum over the same sequence, then one division.
    ap = float(np.add.reduce(precision)) / precision.size
    n_ap50 = _R * len(cats)  # precision[0]
    ap50 = float(np.add.reduce(precision[:n_ap50])) / n_ap50
    return ap, ap50
