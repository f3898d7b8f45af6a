"""Micro-benchmark: our single_image_ap against pycocotools used once per completion.

``python -m bench.ap`` prints one line; ``run()`` returns the numbers. Both sides see identical
inputs: small images shaped like detection rewards (1-4 categories, up to ~12 boxes, predictions
that are jittered ground truth, duplicates, misses and stray boxes).
"""

from __future__ import annotations

import contextlib
import io
import time

import numpy as np

from services.reward_api.engine.coco_ap import single_image_ap


def _cases(n_cases: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n_cases):
        n_gt = int(rng.integers(1, 9))
        gt_xy = rng.uniform(0, 800, (n_gt, 2))
        gt = np.hstack([gt_xy, gt_xy + rng.uniform(8, 200, (n_gt, 2))]).round(1)
        gt_cats = rng.integers(0, int(rng.integers(1, 5)), n_gt)
        dts, dt_cats = [], []
        for j in range(n_gt):
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):  # a miss, a hit, or a duplicate
                size = gt[j, 2:] - gt[j, :2]
                dts.append(gt[j] + rng.normal(0, 0.08, 4) * np.r_[size, size])
                dt_cats.append(gt_cats[j])
        for _ in range(int(rng.integers(0, 3))):  # stray boxes
            xy = rng.uniform(0, 800, 2)
            dts.append(np.r_[xy, xy + rng.uniform(8, 200, 2)])
            dt_cats.append(int(rng.integers(0, 4)))
        dt = np.array(dts, dtype=np.float64).reshape(-1, 4).round(1)
        dt[:, 2:] = np.maximum(dt[:, 2:], dt[:, :2])
        cases.append((gt, np.asarray(gt_cats, np.int64), dt, np.asarray(dt_cats, np.int64), np.ones(len(dt), bool)))
    return cases


def _pycocotools_ap(gt, gt_cats, dt, dt_cats) -> tuple[float, float]:
    """The reference's method: build a COCO ground truth, loadRes, evaluate, accumulate, summarize."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        x1, y1, x2, y2 = (float(v) for v in b)
        return [x1, y1, x2 - x1, y2 - y1]

    known = set(gt_cats.tolist())
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": [{"id": 1}],
            "categories": [{"id": c} for c in sorted(known)],
            "annotations": [
                {"id": i + 1, "image_id": 1, "category_id": int(c), "bbox": xywh(b), "area": xywh(b)[2] * xywh(b)[3], "iscrowd": 0}
                for i, (b, c) in enumerate(zip(gt, gt_cats))
            ],
        }
        coco_gt.createIndex()
        results = [
            {"image_id": 1, "category_id": int(c), "bbox": xywh(b), "score": 1.0}
            for b, c in zip(dt, dt_cats)
            if int(c) in known
        ]
        if not results:
            return 0.0, 0.0
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return float(coco_eval.stats[0]), float(coco_eval.stats[1])


def run(n_cases: int = 2000, seed: int = 0) -> dict:
    """Completions per second of both implementations on the same inputs, and the ratio.

    pycocotools takes milliseconds per completion, so it runs on every 7th case (at least 100 and
    at most 300 of them). The two are timed in alternating slices so that load from other
    processes on the machine falls on both alike.
    """
    cases = _cases(n_cases, seed)
    ref_cases = cases[:: max(1, min(7, n_cases // 100))][:300]
    for case in cases[:50]:  # warm-up (imports, caches)
        single_image_ap(*case)
    _pycocotools_ap(*cases[0][:4])

    slices = 10
    ours, ref, ours_s, ref_s = [], [], 0.0, 0.0
    for i in range(slices):
        chunk = cases[i * len(cases) // slices : (i + 1) * len(cases) // slices]
        start = time.perf_counter()
        ours += [single_image_ap(*case) for case in chunk]
        ours_s += time.perf_counter() - start
        chunk = ref_cases[i * len(ref_cases) // slices : (i + 1) * len(ref_cases) // slices]
        start = time.perf_counter()
        ref += [_pycocotools_ap(*case[:4]) for case in chunk]
        ref_s += time.perf_counter() - start
    n_ref = len(ref_cases)
    ours = ours[:: max(1, min(7, n_cases // 100))][:300]

    worst = max(max(abs(a[0] - b[0]), abs(a[1] - b[1])) for a, b in zip(ours, ref))
    if worst > 1e-12:
        raise AssertionError(f"single_image_ap disagrees with pycocotools by {worst}")
    result = {
        "ours_per_s": n_cases / ours_s,
        "pycocotools_per_s": n_ref / ref_s,
    }
    result["speedup"] = result["ours_per_s"] / result["pycocotools_per_s"]
    print(
        f"coco ap: ours {result['ours_per_s']:,.0f}/s ({1e6 / result['ours_per_s']:.0f} us each), "
        f"pycocotools {result['pycocotools_per_s']:,.0f}/s, speedup {result['speedup']:.1f}x "
        f"({n_cases} cases, {n_ref} of them through pycocotools)"
    )
    return result


if __name__ == "__main__":
    run()
