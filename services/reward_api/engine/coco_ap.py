"""Exact, vectorised NumPy re-implementation of pycocotools' ``COCOeval(..., "bbox")``.

Only the setting the rewards use is implemented: area range "all" ([0, 1e10]), ``maxDets`` 100,
``iscrowd`` 0, ``useCats`` 1, the default IoU and recall thresholds. Within that setting every
result equals pycocotools (the tests compare to within 1e-12; in practice bit for bit).

The pipeline mirrors pycocotools, one function per stage:

* :func:`evaluate_image`  = ``COCOeval.evaluateImg`` for every category of one image at once;
* :func:`accumulate`      = ``COCOeval.accumulate`` over any number of images;
* :func:`summarize`       = ``stats[0]`` and ``stats[1]`` of ``COCOeval.summarize``;
* :func:`single_image_ap` and :func:`dataset_ap` chain the three.

Deliberate departure: a detection flagged invalid (``dt_valid`` False) is a zero-area box that
overlaps nothing, so it is always a false positive (pycocotools would match NaN boxes and
ignore inverted ones, which a policy can exploit).

Not covered: coordinates so large that ``w*h`` overflows to inf (IoU becomes NaN in pycocotools,
whose loop then treats NaN as a match); pixel coordinates never get there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, NamedTuple, Sequence

import numpy as np

__all__ = [
    "IOU_THRS",
    "REC_THRS",
    "MAX_DETS",
    "AREA_RNG",
    "ImageEval",
    "Accumulated",
    "DatasetAP",
    "ImageInput",
    "bbox_iou",
    "evaluate_image",
    "accumulate",
    "summarize",
    "single_image_ap",
    "dataset_ap",
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
_T_INDEX = np.arange(_T)[:, None]
_T_INDEX3 = np.arange(_T)[:, None, None]


@dataclass(frozen=True, slots=True)
class ImageEval:
    """Per-category match records of one image (pycocotools' evalImgs for area "all").

    Detections are the kept ones (known category, at most ``MAX_DETS`` per category, best score
    first within a category, ties in input order); columns of ``matched``/``ignored`` follow them.
    """

    dt_cats: np.ndarray  # (D,) int64 category id of each kept detection
    dt_scores: np.ndarray  # (D,) float64
    matched: np.ndarray  # (T, D) bool: matched to a ground truth at IoU threshold t
    ignored: np.ndarray  # (T, D) bool: neither true nor false positive at threshold t
    gt_cats: np.ndarray  # (G',) int64 category of every non-ignored ground truth (recall denominators)


@dataclass(frozen=True, slots=True)
class Accumulated:
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
    all_valid = bool(valid.all())
    if not all_valid:
        dt = np.where(valid[:, None], dt, 0.0)  # invalid: a zero-area box, matched to nothing below

    # Boxes as pycocotools stores them: [x, y, w, h] with w = x2 - x1, area = w * h.
    dx, dy, dx2, dy2 = dt.T
    dw, dh = dx2 - dx, dy2 - dy
    gx, gy, gx2, gy2 = gt.T
    gw, gh = gx2 - gx, gy2 - gy
    dt_area, gt_area = dw * dh, gw * gh
    gt_ignored = (gt_area < AREA_RNG[0]) | (gt_area > AREA_RNG[1])
    any_gt_ignored = bool(gt_ignored.any())

    matched = ignored = np.zeros((_T, n_dt), dtype=bool)
    if n_dt and n_gt:
        iou = _iou(dx, dy, dw, dh, dt_area, gx, gy, gw, gh, gt_area)
        allowed = dc[:, None] == gc
        if not all_valid:
            allowed &= valid[:, None]
        cand = allowed & (iou >= _MATCH_THRS[:, None, None])  # (T, D, G)
        if cand[0].any():  # thresholds only rise: nothing at the lowest means nothing at all
            # evaluateImg's preference among a detection's free candidates: non-ignored gts first
            # (it sorts ignored ones last and stops there once it holds a match), then higher IoU.
            # IoUs here are >= 0 and < 2, so their IEEE bit patterns order like the values and stay
            # below 2**62, leaving bit 62 for the tier: one exact integer key.
            key = iou.view(np.int64)
            key = key + np.where(gt_ignored, 0, _TIER_BIT) if any_gt_ignored else key + _TIER_BIT
            match = _greedy_match(cand, key)
            matched = match >= 0
            if any_gt_ignored:  # a detection matched to an ignored gt is ignored
                ignored = matched & gt_ignored[match]
    out_of_range = (dt_area < AREA_RNG[0]) | (dt_area > AREA_RNG[1])
    if out_of_range.any():  # unmatched detections outside the area range are ignored
        ignored = ignored | (~matched & out_of_range)
    return ImageEval(
        dt_cats=dc,
        dt_scores=scores,
        matched=matched,
        ignored=ignored,
        gt_cats=gc[~gt_ignored] if any_gt_ignored else gc,
    )


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """0-based position of each element among the earlier elements of its own group."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    first = np.searchsorted(sorted_groups, sorted_groups, side="left")
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups)) - first
    return rank


def _greedy_match(cand: np.ndarray, key: np.ndarray) -> np.ndarray:
    """pycocotools' greedy matching at every IoU threshold at once.

    cand (T, D, G): detection d may match gt g at threshold t. key (D, G): larger = preferred by d;
    on equal keys the later gt wins (evaluateImg replaces its running match when ``iou >= best``).
    Detections go in order; each takes its preferred still-free candidate. Returns (T, D) matched
    gt index or -1.

    Instead of one Python step per detection, each round settles every detection whose choice can
    no longer change: d's preferred free gt p is final when no earlier unsettled detection could
    still take p (free gts only disappear, so p stays d's best). The earliest unsettled detection is
    always final, so rounds terminate; when no gt is wanted by two detections there is one round.
    """
    n_t, n_d, n_g = cand.shape
    # Reversed gt order: argmax returns the first maximum, which is then the last gt.
    cand = cand[:, :, ::-1]
    key = key[:, ::-1]
    has = cand.any(axis=2)
    pick = np.where(cand, key, -1).argmax(axis=2)  # (T, D) each detection's favourite
    if cand[0].sum(axis=0).max() <= 1:  # no gt is wanted by two detections: favourites are final
        return np.where(has, n_g - 1 - pick, -1)
    match = _settle(cand, key, has.copy(), pick)
    return np.where(match >= 0, n_g - 1 - match, -1)


def _settle(cand: np.ndarray, key: np.ndarray, has: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """The contended case of _greedy_match: same arguments, (T, D) result with -1 for unmatched."""
    n_t, n_d, n_g = cand.shape
    match = np.full((n_t, n_d), -1, dtype=np.int64)
    free = np.ones((n_t, n_g), dtype=bool)
    live, d_index = cand, np.arange(n_d)
    while True:
        # d is blocked when an earlier still-open detection could take its pick: the first open
        # detection wanting that gt comes before d (d itself wants it, so there is one).
        first_wanting = live.argmax(axis=1)  # (T, G)
        final = has & (first_wanting[_T_INDEX[:n_t], pick] == d_index)
        tt, dd = np.nonzero(final)
        gg = pick[tt, dd]
        match[tt, dd] = gg
        free[tt, gg] = False
        live = cand & free[:, None, :] & (has & ~final)[:, :, None]
        has = live.any(axis=2)
        if not has.any():
            return match
        pick = np.where(live, key, -1).argmax(axis=2)


@lru_cache(maxsize=4096)
def _recall_steps(n_gts: tuple[int, ...]) -> np.ndarray:
    """(K, R): for each category's gt count n and recall threshold x, the least true-positive count
    j with j / n >= x.

    accumulate takes ``np.searchsorted(rc, recThrs, 'left')`` with rc = tp / n. Division by a
    positive constant is monotone, so the first position with rc >= x is the first with tp >= j:
    for j >= 1 the j-th true positive, for j = 0 the first detection.
    """
    steps = np.stack([np.searchsorted(np.arange(n + 1) / n, REC_THRS, side="left") for n in n_gts])
    steps.flags.writeable = False
    return steps


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
        order = np.argsort(k_of, kind="stable") if len(images) == 1 else np.lexsort((-scores, k_of))
        k_of, matched, ignored = k_of[order], matched[:, order], ignored[:, order]
    if ignored.any():
        tps = matched & ~ignored
        fps = ~(matched | ignored)
    else:  # the common case: every detection is a true or a false positive
        tps, fps = matched, None
    n_dt = np.bincount(k_of, minlength=n_cat)
    pos = np.arange(len(k_of)) - (np.cumsum(n_dt) - n_dt)[k_of]  # index within its category

    batches = _batches(n_dt, n_gt)
    if batches is None:  # every category in one padded batch
        q, recall = _precision_recall(n_dt, n_gt, k_of, pos, tps, fps)
        precision = q.transpose(0, 2, 1).copy()
    else:
        precision = np.full((_T, _R, n_cat), -1.0)
        recall = np.full((_T, n_cat), -1.0)
        for batch in batches:
            slot = np.full(n_cat, -1)
            slot[batch] = np.arange(len(batch))
            sel = slot[k_of] >= 0
            fps_b = None if fps is None else fps[:, sel]
            q, rec = _precision_recall(n_dt[batch], n_gt[batch], slot[k_of[sel]], pos[sel], tps[:, sel], fps_b)
            precision[:, :, batch] = q.transpose(0, 2, 1)
            recall[:, batch] = rec
    absent = n_gt == 0
    if absent.any():  # pycocotools skips these: they keep -1
        precision[:, :, absent] = -1.0
        recall[:, absent] = -1.0
    return Accumulated(cat_ids=cats, precision=precision, recall=recall)


def _batches(n_dt: np.ndarray, n_gt: np.ndarray) -> list[np.ndarray] | None:
    """None when all categories fit one padded batch; else groups of the categories with gt."""
    if len(n_dt) * max(int(n_dt.max(initial=0)), int(n_gt.max(initial=0)), 1) <= _BATCH_CELLS:
        return None
    evaluated = np.flatnonzero(n_gt > 0)
    longest = np.maximum(n_dt[evaluated], n_gt[evaluated])
    evaluated = evaluated[np.argsort(-longest, kind="stable")]
    batches, start = [], 0
    while start < len(evaluated):
        k = evaluated[start]
        width = max(int(n_dt[k]), int(n_gt[k]), 1)  # the longest row of this batch
        size = max(_BATCH_CELLS // width, 1)
        batches.append(np.sort(evaluated[start : start + size]))
        start += size
    return batches


def _precision_recall(n_dt, n_gt, rows, cols, tps, fps) -> tuple[np.ndarray, np.ndarray]:
    """Precision (T, K, R) at the recall thresholds and final recall (T, K) of K categories, laid
    side by side in padded (T, K, width) arrays. rows/cols place each detection (the columns of
    tps/fps, already in category-then-score order). Categories with n_gt 0 come out as junk that
    the caller replaces.
    """
    n_k = len(n_dt)
    width = int(n_dt.max(initial=0))
    gts = np.maximum(n_gt, 1)
    gts_list = gts.tolist()
    if width == 0:  # ground truth but no detection anywhere: precision and recall 0
        return np.zeros((_T, n_k, _R)), np.zeros((_T, n_k))
    tp = np.zeros((_T, n_k, width), dtype=bool)
    tp[:, rows, cols] = tps
    # Padding is neither tp nor fp: the cumulative counts stay flat past a category's end.
    # Float cumulative sums of 0/1 are exact integers, as pycocotools' cumsum().astype(float).
    tp_sum = np.cumsum(tp, axis=2, dtype=np.float64)
    if fps is None:  # nothing ignored: fp + tp is the position + 1 (padding only gets smaller pr)
        pr = tp_sum / (np.arange(1.0, width + 1) + _EPS)
    else:
        fp = np.zeros((_T, n_k, width), dtype=bool)
        fp[:, rows, cols] = fps
        fp_sum = np.cumsum(fp, axis=2, dtype=np.float64)
        pr = tp_sum / (fp_sum + tp_sum + _EPS)
    # Precision envelope pr[i] = max(pr[i:]) (pycocotools' backwards loop); the flat padding repeats
    # the last value, so it changes no maximum.
    env = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]
    # by_count[t, k, j]: the envelope where the tp count first reaches j (the j-th true positive;
    # j = 0: the first detection), 0 where it never does (pycocotools' try/except leaves 0).
    tt, kk, ii = np.nonzero(tp)
    by_count = np.zeros((_T, n_k, max(gts_list) + 1))
    by_count[tt, kk, tp_sum[tt, kk, ii].astype(np.intp)] = env[tt, kk, ii]
    by_count[:, :, 0] = env[:, :, 0]
    q = by_count[_T_INDEX3, np.arange(n_k)[:, None], _recall_steps(tuple(gts_list))]
    return q, tp_sum[:, :, -1] / gts  # recall = rc[-1] = tp / npig (0 without detections)


def _mean_valid(values: np.ndarray) -> float:
    """summarize's ``np.mean(s[s > -1])`` (-1 when nothing is valid): the same elements in the same
    order, summed by the same pairwise reduction, so the same bits."""
    kept = values[values > -1]
    return float(np.add.reduce(kept) / len(kept)) if len(kept) else -1.0


def summarize(acc: Accumulated) -> tuple[float, float]:
    """(stats[0], stats[1]): mean precision over IoU .50:.95 and at IoU .50, area "all", maxDets 100."""
    return _mean_valid(acc.precision), _mean_valid(acc.precision[0])


def single_image_ap(gt_boxes, gt_cats, dt_boxes, dt_cats, dt_valid) -> tuple[float, float]:
    """(ap, ap50) of one image. gt_boxes (G,4) / dt_boxes (D,4): float64 xyxy corners;
    gt_cats (G,) / dt_cats (D,): int category ids; dt_valid (D,) bool: False = invalid predicted box,
    scored as a zero-area box overlapping nothing (a false positive). Detections all score 1.0 and keep
    their order. Equals pycocotools COCOeval(...,'bbox') stats[0], stats[1] within 1e-12.

    Categories are those of the ground truth; detections of any other category are ignored. Without
    ground truth the result is (-1.0, -1.0), as pycocotools reports it.
    """
    prepared = _prepare(gt_boxes, gt_cats, dt_boxes, dt_cats, dt_valid, None, None)
    return summarize(_accumulate([_evaluate(*prepared)], prepared[-1]))


def dataset_ap(images: Iterable[ImageInput | tuple], cat_ids=None) -> DatasetAP:
    """Dataset-level COCO mAP, as one pycocotools COCOeval over all the images.

    images: :class:`ImageInput` (or tuples in its field order), in image-id order; cat_ids: the
    dataset's categories (default: every category with ground truth in some image). A detection
    of a category that has ground truth in other images only is a false positive for it.
    """
    images = [ImageInput(*im) for im in images]
    if cat_ids is None:
        cat_ids = [c for im in images for c in _ids(im.gt_cats).tolist()]
    cats = _sorted_ids(cat_ids)
    records = [evaluate_image(*im, cat_ids=cats) for im in images]
    acc = _accumulate(records, cats)
    ap, ap50 = summarize(acc)
    per_category = {
        int(c): (_mean_valid(acc.precision[:, :, k]), _mean_valid(acc.precision[0, :, k]))
        for k, c in enumerate(acc.cat_ids)
    }
    return DatasetAP(ap=ap, ap50=ap50, per_category=per_category)
