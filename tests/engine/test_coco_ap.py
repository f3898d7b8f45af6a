"""coco_ap against real pycocotools: randomised single images, hand-written edge cases, datasets.

The oracle is pycocotools itself. Per case it is slow (milliseconds), so the 10,000 randomised
single images go through it in batches: each case gets its own image and its own category ids in
one COCOeval, which then computes exactly the per-image, per-category numbers a one-image run
would (categories never mix across cases), restricted to the one setting we use (area "all",
maxDets 100). That batching is itself checked against the plain per-case pipeline.
"""

from __future__ import annotations

import contextlib
import io
import random

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from services.reward_api.engine import coco_ap
from services.reward_api.engine.coco_ap import (
    IOU_THRS,
    MAX_DETS,
    ImageInput,
    accumulate,
    bbox_iou,
    dataset_ap,
    evaluate_image,
    single_image_ap,
    summarize,
)

TOL = 1e-12
FAR = [-1e7, -1e7, 0.0, 0.0]  # xywh: zero area, overlaps nothing: what an invalid box scores as


# ----------------------------------------------------------------------------- the oracle


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _run_cocoeval(images, categories, scores=False, trimmed=False) -> COCOeval:
    """One COCOeval over ``images`` = [(gt, gt_cats, dt, dt_cats, dt_valid[, dt_scores])], image ids
    1, 2, ... in order. Invalid detections become FAR boxes. Returns the evaluated object."""
    annotations, results = [], []
    for image_id, im in enumerate(images, start=1):
        gt, gc, dt, dc, dv = im[:5]
        for box, cat in zip(gt, gc):
            bb = _xywh(box)
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cat), "bbox": bb, "area": bb[2] * bb[3], "iscrowd": 0}
            )
        for j, (box, cat, ok) in enumerate(zip(dt, dc, dv)):
            score = float(im[5][j]) if scores else 1.0
            results.append({"image_id": image_id, "category_id": int(cat), "bbox": _xywh(box) if ok else list(FAR), "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": [{"id": i} for i in range(1, len(images) + 1)],
            "categories": [{"id": int(c)} for c in categories],
            "annotations": annotations,
        }
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes cannot take an empty list
            coco_dt = COCO()
            coco_dt.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"], "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if trimmed:  # only the setting we report; the others are computed independently anyway
            ev.params.areaRng = [[0**2, 1e5**2]]
            ev.params.areaRngLbl = ["all"]
            ev.params.maxDets = [100]
        ev.evaluate()
        ev.accumulate()
        if not trimmed:
            ev.summarize()
    return ev


def oracle_single(gt, gc, dt, dc, dv) -> tuple[float, float]:
    """pycocotools' stats[0], stats[1] for one image, the full default pipeline."""
    ev = _run_cocoeval([(gt, gc, dt, dc, dv)], sorted(set(int(c) for c in gc)))
    return float(ev.stats[0]), float(ev.stats[1])


def _mean_valid(s: np.ndarray) -> float:
    s = s[s > -1]
    return float(np.mean(s)) if len(s) else -1.0


def oracle_batch(cases) -> list[tuple[float, float]]:
    """stats[0], stats[1] of many single-image cases from one trimmed COCOeval (see module doc)."""
    images, categories, case_cats = [], [], []
    for i, (gt, gc, dt, dc, dv) in enumerate(cases):
        # Case i's category c becomes 100 * i + c; detections of categories that the case's ground
        # truth lacks get ids no case uses, so pycocotools drops them as it drops unknown ones.
        mine = sorted(set(int(c) for c in gc))
        ids = [100 * i + c for c in mine]
        categories += ids
        case_cats.append(ids)
        images.append(
            (gt, [100 * i + int(c) for c in gc], dt, [100 * i + int(c) if int(c) in mine else -1 - int(c) for c in dc], dv)
        )
    ev = _run_cocoeval(images, categories, trimmed=True)
    precision = ev.eval["precision"][:, :, :, 0, 0]  # (T, R, K)
    where = {c: k for k, c in enumerate(ev.params.catIds)}
    out = []
    for ids in case_cats:
        ks = [where[c] for c in ids]
        s = precision[:, :, ks]  # the case's categories, in order, as summarize would slice them
        out.append((_mean_valid(s), _mean_valid(s[0])))
    return out


# ----------------------------------------------------------------------------- random inputs


_THRS = IOU_THRS.tolist()


def random_case(rng: random.Random):
    """One image: 0..15 gts and dets, 1..4 categories, integer or float coordinates, duplicates,
    boxes cut to land on IoU thresholds, zero-area boxes, invalid rows, unknown categories.
    (random.Random, not numpy: per-call overhead decides how fast 10,000 cases come.)"""
    cats = rng.sample(range(10), rng.randint(1, 4))
    integer = rng.random() < 0.5
    scale = rng.choice([10.0, 100.0, 1000.0])
    n_gt, n_dt = rng.randint(0, 15), rng.randint(0, 15)
    gt, gc = [], []
    for _ in range(n_gt):
        if gt and rng.random() < 0.1:  # duplicate gt
            j = rng.randrange(len(gt))
            gt.append(list(gt[j]))
            gc.append(gc[j] if rng.random() < 0.7 else rng.choice(cats))
            continue
        x, y = rng.uniform(0, scale), rng.uniform(0, scale)
        w, h = rng.uniform(0, scale / 2), rng.uniform(0, scale / 2)
        if rng.random() < 0.08:  # zero width or zero height
            if rng.random() < 0.5:
                w = 0.0
            else:
                h = 0.0
        if rng.random() < 0.02:  # area beyond 1e10: an ignored gt
            w, h = 2e5, 1e5 + rng.uniform(0, 10)
        box = [x, y, x + w, y + h]
        gt.append([float(round(v)) for v in box] if integer else box)
        gc.append(rng.choice(cats))
    dt, dc, dv = [], [], []
    for _ in range(n_dt):
        kind = rng.random()
        valid = True
        if gt and kind < 0.2:  # exact copy of a gt
            j = rng.randrange(len(gt))
            box, cat = list(gt[j]), gc[j]
        elif gt and kind < 0.45:  # jittered gt
            j = rng.randrange(len(gt))
            x1, y1, x2, y2 = gt[j]
            size = max(x2 - x1, y2 - y1, 1.0)
            x1, y1, x2, y2 = (v + rng.gauss(0, 0.1 * size) for v in gt[j])
            box, cat = [x1, y1, max(x1, x2), max(y1, y2)], gc[j]
        elif gt and kind < 0.62:  # cut to an IoU threshold (exactly, or a hair off)
            j = rng.randrange(len(gt))
            x1, y1, x2, y2 = gt[j]
            f = rng.choice(_THRS) + rng.choice([0.0, 0.0, 1e-12, -1e-12, 1e-3, -1e-3])
            box = [x1, y1, x1 + (x2 - x1) * f, y2] if rng.random() < 0.5 else [x1, y1, x2, y1 + (y2 - y1) * f]
            if integer and rng.random() < 0.5:
                box = [round(v * 2) / 2 for v in box]
            cat = gc[j]
        elif dt and kind < 0.72:  # duplicate prediction
            j = rng.randrange(len(dt))
            box, cat, valid = list(dt[j]), dc[j], dv[j]
        elif kind < 0.8:  # invalid: NaN or inverted, with a known category
            box = [float("nan")] * 4 if rng.random() < 0.5 else [50.0, 50.0, 10.0, 10.0]
            cat, valid = rng.choice(cats), False
        elif kind < 0.85:  # zero-area prediction
            x, y = rng.uniform(0, scale), rng.uniform(0, scale)
            box, cat = [x, y, x, y + rng.uniform(0, scale / 4)], rng.choice(cats)
        else:  # random box, sometimes of a category the ground truth lacks
            x, y = rng.uniform(0, scale), rng.uniform(0, scale)
            box = [x, y, x + rng.uniform(0, scale / 2), y + rng.uniform(0, scale / 2)]
            cat = rng.choice(cats) if rng.random() < 0.85 else 50 + rng.randrange(3)
        if integer and valid and kind >= 0.62:
            box = [float(round(v)) for v in box]
        dt.append(box)
        dc.append(cat)
        dv.append(valid)
    return (
        np.asarray(gt, dtype=np.float64).reshape(-1, 4),
        np.asarray(gc, dtype=np.int64),
        np.asarray(dt, dtype=np.float64).reshape(-1, 4),
        np.asarray(dc, dtype=np.int64),
        np.asarray(dv, dtype=bool),
    )


def _lists(case):
    gt, gc, dt, dc, dv = case
    return gt.tolist(), gc.tolist(), dt.tolist(), dc.tolist(), dv.tolist()


def approx(*values):
    return pytest.approx(values, abs=TOL)


def _close(a, b) -> bool:
    return abs(a[0] - b[0]) <= TOL and abs(a[1] - b[1]) <= TOL


# ----------------------------------------------------------------------------- randomised


N_RANDOM = 10_000
BATCH = 20


@pytest.fixture(scope="module")
def random_cases():
    rng = random.Random(20240601)
    return [random_case(rng) for _ in range(N_RANDOM)]


def test_random_single_images_match_pycocotools(random_cases):
    mismatches = []
    for start in range(0, len(random_cases), BATCH):
        chunk = random_cases[start : start + BATCH]
        expected = oracle_batch([_lists(c) for c in chunk])
        for i, (case, want) in enumerate(zip(chunk, expected)):
            got = single_image_ap(*case)
            if not _close(got, want):
                mismatches.append((start + i, got, want))
    assert not mismatches, f"{len(mismatches)} of {len(random_cases)} differ, first: {mismatches[:3]}"


def test_random_cases_cover_the_traps(random_cases):
    """The generator really produces what the comparison above is meant to exercise."""
    n_invalid = sum(int((~c[4]).sum()) for c in random_cases)
    n_empty_gt = sum(len(c[0]) == 0 for c in random_cases)
    n_empty_dt = sum(len(c[2]) == 0 for c in random_cases)
    n_ignored_gt = sum(int(((c[0][:, 2] - c[0][:, 0]) * (c[0][:, 3] - c[0][:, 1]) > 1e10).sum()) for c in random_cases)
    n_unknown = sum(int((c[3] >= 50).sum()) for c in random_cases)
    on_threshold = 0
    for gt, gc, dt, dc, dv in random_cases[:1000]:
        if len(gt) and len(dt):
            gx = np.c_[gt[:, :2], gt[:, 2:] - gt[:, :2]]
            dx = np.c_[dt[:, :2], dt[:, 2:] - dt[:, :2]]
            on_threshold += int(np.isin(bbox_iou(np.nan_to_num(dx), gx), IOU_THRS).sum())
    values = [single_image_ap(*c) for c in random_cases[:1000]]
    assert min(n_invalid, n_empty_gt, n_empty_dt, n_ignored_gt, n_unknown, on_threshold) > 20
    assert len(set(values)) > 300  # not a degenerate spread of answers


def test_batched_oracle_equals_the_plain_pipeline():
    rng = random.Random(7)
    cases = [_lists(random_case(rng)) for _ in range(100)]
    batched = oracle_batch(cases)
    for case, want in zip(cases, batched):
        assert _close(oracle_single(*case), want)


# ----------------------------------------------------------------------------- edge cases


def check(gt, gc, dt, dc, dv=None):
    dv = [True] * len(dt) if dv is None else dv
    got = single_image_ap(np.asarray(gt, float).reshape(-1, 4), gc, np.asarray(dt, float).reshape(-1, 4), dc, dv)
    want = oracle_single(gt, gc, dt, dc, dv)
    assert _close(got, want), (got, want)
    return got


def test_empty_inputs():
    assert check([], [], [], []) == (-1.0, -1.0)  # pycocotools: no category, no result
    assert check([], [], [[0, 0, 5, 5]], [1]) == (-1.0, -1.0)
    assert check([[0, 0, 5, 5]], [1], [], []) == (0.0, 0.0)
    assert single_image_ap(np.zeros((0, 4)), np.zeros(0, int), np.zeros((0, 4)), np.zeros(0, int), np.zeros(0, bool)) == (-1.0, -1.0)


def test_perfect_and_hand_values():
    box = [10, 20, 50, 80]
    # pycocotools' precision is tp / (tp + fp + eps): a perfect answer is 1 - 2**-52, not 1.
    perfect = 1 / (1 + np.spacing(1))
    assert check([box], [3], [box], [3]) == approx(perfect, perfect)
    # A false positive before the hit: precision 1/2 at every recall level.
    assert check([box], [3], [[200, 200, 210, 210], box], [3, 3]) == approx(0.5, 0.5)
    assert check([box], [3], [box, [200, 200, 210, 210]], [3, 3]) == approx(perfect, perfect)


def test_more_than_max_dets_per_category():
    rng = np.random.default_rng(1)
    gt = [[i * 20, 0, i * 20 + 10, 10] for i in range(30)]
    noise = [[float(x), 500.0, float(x) + 5, 505.0] for x in rng.uniform(0, 1000, 90)]
    hits = [[g[0] + 0.5, g[1], g[2] + 0.5, g[3]] for g in gt]
    # Hits after the 100th detection of their category are cut off ...
    dt = noise + hits[:20] + hits[20:]
    got = check(gt, [1] * 30, dt, [1] * len(dt))
    assert 0 < got[1] < 1
    # ... per category: another category's detections do not count towards the 100.
    dt2 = noise[:60] + [[0, 900, 1, 901]] * 60 + hits
    dc2 = [1] * 60 + [2] * 60 + [1] * 30
    check(gt + [[0, 900, 1, 901]], [1] * 30 + [2], dt2, dc2)
    check(gt, [1] * 30, hits + noise + noise, [1] * (30 + 180))


def test_zero_area_boxes():
    check([[5, 5, 5, 15]], [1], [[5, 5, 5, 15]], [1])  # identical zero-width boxes: IoU 0
    check([[5, 5, 15, 15], [0, 0, 0, 0]], [1, 1], [[0, 0, 0, 0], [5, 5, 15, 15]], [1, 1])
    check([[0, 0, 10, 10]], [1], [[3, 3, 3, 3], [0, 0, 10, 10]], [1, 1])


@pytest.mark.parametrize("frac", [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
def test_iou_exactly_on_thresholds(frac):
    # IoU = frac * 100 / 100 for a box cut to that width: exactly on (or one rounding off) the
    # threshold, where linspace's doubles (not the literals) decide.
    gt = [[0, 0, 10, 10]]
    check(gt, [1], [[0, 0, 10 * frac, 10]], [1])
    check(gt, [1], [[0, 0, 10, 10 * frac]], [1])
    check([[0, 0, 100, 100]], [1], [[0, 0, 100 * frac, 100]], [1])
    check([[0.1, 0.2, 0.7, 0.9]], [1], [[0.1, 0.2, 0.1 + 0.6 * frac, 0.9]], [1])


def test_exact_iou_values_at_half_and_three_quarters():
    assert bbox_iou([[0, 0, 5, 10]], [[0, 0, 10, 10]])[0, 0] == 0.5
    assert bbox_iou([[0, 0, 7.5, 10]], [[0, 0, 10, 10]])[0, 0] == 0.75
    # Matched at .5 but at no stricter threshold; matched up to .75.
    assert check([[0, 0, 10, 10]], [1], [[0, 0, 5, 10]], [1]) == approx(0.1, 1.0)
    assert check([[0, 0, 10, 10]], [1], [[0, 0, 7.5, 10]], [1])[0] == pytest.approx(0.6, abs=TOL)


def test_equal_iou_ties_go_to_the_later_gt():
    # The detection sits between two gts with the same IoU; the second detection can only take
    # the first gt, so which gt the first detection took decides the score.
    gt = [[0, 0, 10, 10], [4, 0, 14, 10]]
    dt = [[2, 0, 12, 10], [0, 0, 10, 10]]
    ap = check(gt, [1, 1], dt, [1, 1])
    assert ap[1] == 1.0  # both matched at .5: the first det took gt 2, leaving gt 1 for the second
    check(gt[::-1], [1, 1], dt, [1, 1])


def test_duplicate_predictions_and_float_coordinates():
    gt = [[10.25, 20.5, 30.75, 40.125], [50.1, 60.2, 70.3, 80.4]]
    dt = [gt[0], gt[0], gt[0], gt[1], [50.3, 60.1, 70.2, 80.9], gt[1]]
    check(gt, [1, 2], dt, [1, 1, 1, 2, 2, 2])
    check(gt, [1, 1], dt, [1, 1, 1, 1, 1, 1])


def test_gt_area_beyond_1e10_is_ignored():
    huge = [0, 0, 2e5, 1e5 + 1]  # area > 1e10
    normal = [10, 10, 20, 20]
    check([huge], [1], [huge], [1])  # the only gt is ignored: no result
    assert single_image_ap(np.array([huge], float), [1], np.array([huge], float), [1], [True]) == (-1.0, -1.0)
    check([huge, normal], [1, 1], [huge, normal], [1, 1])  # matched to the ignored gt: ignored
    check([huge, normal], [1, 1], [normal, [0, 0, 1, 1]], [1, 1])
    check([normal], [1], [huge, normal], [1, 1])  # unmatched and beyond the range: ignored
    check([huge, normal], [1, 2], [normal, huge, normal], [1, 1, 2])


def test_invalid_predictions_are_false_positives():
    box = [10, 20, 50, 80]
    nan = [float("nan")] * 4
    inverted = [50, 80, 10, 20]
    for bad in (nan, inverted):
        # pycocotools given a far-away zero-area box instead (the oracle substitutes FAR).
        assert check([box], [3], [bad, box], [3, 3], [False, True]) == approx(0.5, 0.5)
        assert check([box], [3], [box, bad], [3, 3], [True, False]) == approx(1.0, 1.0)
        assert check([box], [3], [bad], [3], [False]) == (0.0, 0.0)
        # Even a perfect box flagged invalid overlaps nothing.
        assert check([box], [3], [box], [3], [False]) == (0.0, 0.0)


def test_detections_of_unknown_categories_are_ignored():
    box = [10, 20, 50, 80]
    assert check([box], [3], [[0, 0, 1, 1], box], [7, 3]) == approx(1.0, 1.0)
    assert check([box], [3], [[0, 0, 1, 1]], [7]) == (0.0, 0.0)


def test_several_categories_average():
    a, b = [0, 0, 10, 10], [20, 20, 30, 30]
    # Category 1 perfect, category 2 missed: the mean is over categories.
    assert check([a, b], [1, 2], [a], [1]) == approx(0.5, 0.5)
    assert check([a, b], [1, 2], [a, b], [2, 1]) == (0.0, 0.0)


def test_inputs_may_be_lists_and_lengths_are_checked():
    assert single_image_ap([[0, 0, 10, 10]], [1], [[0, 0, 10, 10]], [1], [True]) == approx(1.0, 1.0)
    with pytest.raises(ValueError):
        single_image_ap([[0, 0, 10, 10]], [1, 2], [[0, 0, 10, 10]], [1], [True])
    with pytest.raises(ValueError):
        single_image_ap([[0, 0, 10, 10]], [1], [[0, 0, 10, 10]], [1], [True, False])


def test_max_dets_constant_is_pycocotools_default():
    assert MAX_DETS == 100 and len(IOU_THRS) == 10


# ----------------------------------------------------------------------------- datasets


def random_dataset(rng: random.Random, with_scores: bool):
    images = []
    for _ in range(rng.randint(1, 6)):
        gt, gc, dt, dc, dv = random_case(rng)
        if rng.random() < 0.2:  # an image without ground truth, detections only
            gt, gc = gt[:0], gc[:0]
        scores = np.array([round(rng.random(), 1) for _ in range(len(dt))]) if with_scores else None  # ties on purpose
        images.append(ImageInput(gt, gc, dt, dc, dv, scores))
    return images


def oracle_dataset(images, with_scores: bool):
    cats = sorted({int(c) for im in images for c in im.gt_cats})
    ev = _run_cocoeval([_lists(im[:5]) + ((im.dt_scores.tolist(),) if with_scores else ()) for im in images], cats, scores=with_scores)
    precision = ev.eval["precision"][:, :, :, 0, 2]
    per_category = {c: (_mean_valid(precision[:, :, k]), _mean_valid(precision[0, :, k])) for k, c in enumerate(cats)}
    return float(ev.stats[0]), float(ev.stats[1]), per_category


@pytest.mark.parametrize("with_scores", [False, True])
def test_random_datasets_match_pycocotools(with_scores):
    rng = random.Random(99 + with_scores)
    for n in range(100):
        images = random_dataset(rng, with_scores)
        ap, ap50, per_category = oracle_dataset(images, with_scores)
        got = dataset_ap(images)
        assert _close((got.ap, got.ap50), (ap, ap50)), (n, got, ap, ap50)
        assert set(got.per_category) == set(per_category)
        for cat, want in per_category.items():
            assert _close(got.per_category[cat], want), (n, cat, got.per_category[cat], want)


def _image(gt, gc, dt, dc) -> ImageInput:
    return ImageInput(
        np.asarray(gt, float).reshape(-1, 4), np.asarray(gc, np.int64), np.asarray(dt, float).reshape(-1, 4),
        np.asarray(dc, np.int64), np.ones(len(dc), bool), None,
    )


def test_dataset_category_missing_from_some_images():
    a = [0, 0, 10, 10]
    images = [
        _image([a], [1], [a], [1]),  # category 1 found
        _image([], [], [a, a], [1, 2]),  # no gt here: both detections are false positives
        _image([a], [2], [], []),  # category 2 missed
    ]
    got = dataset_ap(images)
    ap, ap50, per_category = oracle_dataset(images, False)
    assert _close((got.ap, got.ap50), (ap, ap50))
    assert got.per_category == per_category
    assert got.per_category[2] == (0.0, 0.0)
    assert got.per_category[1] == approx(1.0, 1.0)  # the hit comes first in image order
    # Equal scores keep image order: with the false positive first, category 1 drops to 1/2.
    assert dataset_ap([images[1], images[0], images[2]]).per_category[1] == approx(0.5, 0.5)
    assert dataset_ap([]).ap == -1.0
    assert dataset_ap([_image([], [], [a], [1])]).per_category == {}


def test_pieces_compose_like_single_image_ap():
    rng = random.Random(3)
    for _ in range(200):
        case = random_case(rng)
        cats = sorted(set(case[1].tolist()))
        record = evaluate_image(*case)
        assert summarize(accumulate([record], cats)) == single_image_ap(*case)
        # Extra categories with no ground truth change nothing (they come out as -1).
        wider = evaluate_image(*case, cat_ids=cats + [1000])
        assert summarize(accumulate([wider], cats + [1000])) == single_image_ap(*case)


def test_scored_detections_beyond_max_dets():
    rng = random.Random(11)
    gt = np.array([[i * 20.0, 0, i * 20 + 10, 10] for i in range(40)])
    dt = np.array([[x, 0.0, x + rng.uniform(5, 12), 10] for x in (rng.uniform(0, 800) for _ in range(130))])
    scores = np.array([round(rng.random(), 2) for _ in range(130)])
    images = [ImageInput(gt, np.ones(40, np.int64), dt, np.ones(130, np.int64), np.ones(130, bool), scores)]
    ap, ap50, per_category = oracle_dataset(images, True)
    got = dataset_ap(images)
    assert _close((got.ap, got.ap50), (ap, ap50)) and got.ap50 > 0


def test_accumulate_in_small_batches_gives_the_same_numbers(monkeypatch):
    """Datasets too uneven for one padded array are accumulated a few categories at a time."""
    rng = random.Random(5)
    datasets = [random_dataset(rng, with_scores=True) for _ in range(30)]
    whole = [dataset_ap(images) for images in datasets]
    monkeypatch.setattr(coco_ap, "_BATCH_CELLS", 4)
    assert [dataset_ap(images) for images in datasets] == whole


# ----------------------------------------------------------------------------- the pure-Python path


def _array_path(case) -> tuple[float, float]:
    """single_image_ap through the NumPy stages only (evaluate_image, accumulate, summarize)."""
    prepared = coco_ap._prepare(*case, None, None)
    return summarize(coco_ap._accumulate([coco_ap._evaluate(*prepared)], prepared[-1]))


def _bigger_case(rng: random.Random):
    """Up to the size limits of the shortcut: many detections of a few jittered gts (competition)."""
    n_gt = rng.randint(1, 20)
    gt = [[x, y, x + rng.uniform(1, 60), y + rng.uniform(1, 60)] for x, y in ((rng.uniform(0, 100), rng.uniform(0, 100)) for _ in range(n_gt))]
    gc = [rng.randrange(3) for _ in range(n_gt)]
    dt, dc = [], []
    for _ in range(rng.randint(0, min(coco_ap._SMALL_DETS, coco_ap._SMALL_PAIRS // n_gt) + 3)):
        j = rng.randrange(n_gt)
        x1, y1, x2, y2 = (v + rng.gauss(0, 4) for v in gt[j])
        dt.append([x1, y1, max(x1, x2), max(y1, y2)])
        dc.append(gc[j] if rng.random() < 0.9 else rng.randrange(4))
    dv = [rng.random() < 0.95 for _ in dt]
    return (np.asarray(gt).reshape(-1, 4), np.asarray(gc, np.int64), np.asarray(dt).reshape(-1, 4),
            np.asarray(dc, np.int64), np.asarray(dv, bool))


@pytest.mark.parametrize("make", [random_case, _bigger_case])
def test_small_image_path_is_bit_for_bit_the_array_path(make):
    rng = random.Random(99)
    taken = 0
    for _ in range(3000):
        case = make(rng)
        want = _array_path(case)
        small = coco_ap._small_image_ap(*_lists(case)) if len(case[0]) else None
        if small is not None:
            taken += 1
            assert small == want, case
        assert single_image_ap(*case) == want
    assert taken > 2000  # the shortcut really is what runs (ignored gts, no gt, NaN boxes defer)


def test_small_image_path_defers_what_it_does_not_cover():
    box = [[0.0, 0.0, 10.0, 10.0]]
    assert coco_ap._small_image_ap([[0.0, 0.0, 2e5, 1e5 + 1]], [1], box, [1], [True]) is None  # ignored gt
    assert coco_ap._small_image_ap(box, [1], [[0.0, 0.0, 3e5, 1e5]], [1], [True]) is None  # area > 1e10
    assert coco_ap._small_image_ap(box, [1], [[float("nan")] * 4], [1], [True]) is None
    assert coco_ap._small_image_ap(box, [1], box * (MAX_DETS + 1), [1] * (MAX_DETS + 1), [True] * (MAX_DETS + 1)) is None
    assert not coco_ap._is_small(0, 3) and not coco_ap._is_small(10, coco_ap._SMALL_DETS + 1)


def test_matching_one_category_at_a_time_equals_the_whole_matrix(random_cases, monkeypatch):
    """Images with many pairs are matched per category (bounded memory); forced on every image,
    that path gives exactly the results of the whole-matrix path."""
    cases = [c for c in random_cases[:3000] if len(set(c[1].tolist()) | set(c[3].tolist())) > 1]
    want = [coco_ap.evaluate_image(*c) for c in cases]
    monkeypatch.setattr(coco_ap, "_SPLIT_CELLS", 0)
    for case, expected in zip(cases, want):
        got = coco_ap.evaluate_image(*case)
        for name in got._fields:
            assert np.array_equal(getattr(got, name), getattr(expected, name)), name


def test_many_distinct_labels_stay_linear_in_memory():
    """6,000 boxes with 6,000 labels defeat the 100-detection cap (issue 11: +1.37 GB for the
    whole IoU matrix); matched per category, what remains is linear in the categories: the
    (T, R, K) precision table that COCOeval's accumulate keeps too (8 KB a category)."""
    import tracemalloc

    n = 6000
    boxes = np.array([[i, i, i + 10, i + 10] for i in range(n)], dtype=np.float64)
    cats = np.arange(n)
    tracemalloc.start()
    try:
        ap, ap50 = single_image_ap(boxes, cats, boxes, cats, np.ones(n, bool))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (ap, ap50) == approx(1.0, 1.0)
    assert peak < 150e6, f"peak {peak / 1e6:.0f} MB"
