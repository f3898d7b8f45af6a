"""The baseline: the seven rewards computed in-process the reference (VLM-R1) way.

Regex parsing per reward, pycocotools' COCOeval built for every completion (shared here by ap, ap50
and od_length, which is already kinder than the reference, where each reward builds its own), and
plain per-sample Python for the rest. Written from docs/reward-spec.md; it exists only to be timed
against the service. Where version 1 departs from the reference it follows the reference's plain
arithmetic for invalid boxes (pycocotools as is), but computes cosine from the real weighted_sum,
as version 1 does, so that both sides do the same work.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re

import json_repair
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
JSON_FENCE_RE = re.compile(r"```json(.*?)```", re.DOTALL)
ANY_FENCE_RE = re.compile(r"```(.*?)```", re.DOTALL)
BARE_LIST_RE = re.compile(r'\[\s*{.*?"bbox_2d".*?"label".*?}\s*\]', re.DOTALL)
FORMAT_RE = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
REWARDS = ("format", "ap", "ap50", "od_length", "weighted_sum", "repetition", "cosine")


def last_answer(text: str) -> str | None:
    found = ANSWER_RE.findall(text)
    return found[-1].strip() if found else None


def box_list(text: str) -> list:
    found = JSON_FENCE_RE.findall(text)
    if not found:
        return []
    try:
        value = json.loads(found[-1].strip())
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def format_reward(completion: str) -> float:
    return 1.0 if FORMAT_RE.fullmatch(completion) else 0.0


def coco_ap(pred: list, gt: list) -> tuple[float, float]:
    """stats[0], stats[1] of a one-image COCOeval, built the reference way."""
    labels = sorted({g["label"] for g in gt})
    cat_id = {label: i + 1 for i, label in enumerate(labels)}
    preds = [p for p in pred if isinstance(p, dict) and p.get("label") in cat_id]
    if not preds:
        return 0.0, 0.0
    gt_anns = []
    for i, g in enumerate(gt):
        x1, y1, x2, y2 = g["bbox_2d"]
        gt_anns.append({"id": i + 1, "image_id": 1, "category_id": cat_id[g["label"]],
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    dts = []
    for p in preds:
        box = p.get("bbox_2d")
        if not (isinstance(box, list) and len(box) == 4):
            box = [0, 0, 0, 0]
        x1, y1, x2, y2 = box
        dts.append({"image_id": 1, "category_id": cat_id[p["label"]], "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": 1.0})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt = COCO()
        coco_gt.dataset = {"images": [{"id": 1}], "annotations": gt_anns,
                           "categories": [{"id": i} for i in cat_id.values()]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dts)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return max(float(evaluator.stats[0]), 0.0), max(float(evaluator.stats[1]), 0.0)


def detection_rewards(completion: str, solution: str) -> tuple[float, float, float]:
    """(ap, ap50, od_length) from one COCOeval."""
    answer = last_answer(completion)
    if answer is None:
        return 0.0, 0.0, 0.0
    gt_answer = last_answer(solution)
    gt_text = gt_answer if gt_answer is not None else solution.strip()
    if gt_text == "None" and answer == "None":
        return 1.0, 1.0, 1.0
    pred = box_list(answer)
    gt = [] if gt_text == "None" else box_list(gt_text)
    if not pred and not gt:
        return 1.0, 1.0, 1.0
    if not pred or not gt:
        return 0.0, 0.0, 0.0
    ap, ap50 = coco_ap(pred, gt)
    return ap, ap50, ap * min(1.0, len(gt) / len(pred))


def _normalise(text: str) -> str:
    answer = last_answer(text)
    text = answer if answer is not None else text
    text = re.sub(r"(?<=\s)[\n\r]", "", text)
    text = re.sub(r"[\n\r]", " ", text)
    return text.strip().rstrip(".").lower()


def _first_list(text: str) -> list:
    found = JSON_FENCE_RE.search(text)
    if not found:
        return []
    try:
        value = json.loads(found.group(1).strip())
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def _iou(a, b) -> float:
    ix1, iy1 = max(a[0], b[0]), max(a[1], b[1])
    ix2, iy2 = min(a[2] - 1, b[2] - 1), min(a[3] - 1, b[3] - 1)
    inter = (ix2 - ix1 + 1) * (iy2 - iy1 + 1) if ix1 < ix2 and iy1 < iy2 else 0
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _valid(box) -> bool:
    return (isinstance(box, list) and len(box) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
            and box[2] >= box[0] and box[3] >= box[1])


def weighted_sum(completion: str, solution: str, alpha=0.7, beta=0.0, gamma=0.3, threshold=0.5) -> float:
    pred_text, gt_text = _normalise(completion), _normalise(solution)
    if gt_text == "none":
        return 1.0 if pred_text == "none" else 0.0
    pred, gt = _first_list(pred_text), _first_list(gt_text)
    if not gt:
        return 1.0 if not pred else 0.0
    if not pred:
        return 0.0
    pairs = []
    for i, p in enumerate(pred):
        box = p.get("bbox_2d") if isinstance(p, dict) else None
        for j, g in enumerate(gt):
            pairs.append((_iou(box, g["bbox_2d"]) if _valid(box) else 0.0, i, j))
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))  # highest IoU first; ties by index
    used_p, used_g, ious, same = set(), set(), 0.0, 0
    for iou, i, j in pairs:
        if iou < threshold:
            break
        if i in used_p or j in used_g:
            continue
        used_p.add(i)
        used_g.add(j)
        p_label = pred[i].get("label") if isinstance(pred[i], dict) else ""
        if str(p_label or "") == str(gt[j].get("label", "")):
            ious += iou
            same += 1
    n_gt, n_pred = len(gt), len(pred)
    completeness = 1 - ((n_gt - len(used_g)) / n_gt + (n_pred - len(used_p)) / n_pred) / 2
    return (alpha * ious / n_gt + beta * same / n_gt + gamma * completeness) / (alpha + beta + gamma)


def repetition(completion: str) -> float:
    if not completion:
        return 0.0
    found = JSON_FENCE_RE.search(completion) or ANY_FENCE_RE.search(completion) or BARE_LIST_RE.search(completion)
    items = None
    if found:
        text = found.group(1) if found.re is not BARE_LIST_RE else found.group(0)
        try:
            items = json.loads(text)
        except ValueError:
            items = json_repair.loads(text)
    if isinstance(items, list) and items:
        keys = [f"{item['bbox_2d']}_{item['label']}" for item in items
                if isinstance(item, dict) and "bbox_2d" in item and "label" in item]
        return -(1 - len(set(keys)) / len(keys)) if keys else 0.0
    words = completion.lower().split()
    if len(words) < 6:
        return 0.0
    grams = [tuple(words[i:i + 6]) for i in range(len(words) - 5)]
    return -(1 - len(set(grams)) / len(grams))


def cosine(completion: str, solution: str, tokens: int, l_max: int = 1024) -> float:
    hi, lo = (1.0, 0.5) if weighted_sum(completion, solution) >= 0.7 else (0.0, -0.5)
    length = min(max(tokens, 0), l_max)
    return hi - (hi - lo) * (1 - math.cos(math.pi * length / l_max)) / 2


def score_sample(sample: dict) -> dict[str, float]:
    """All seven rewards of one sample, each computed as a separate reward function would."""
    completion, solution = sample["completion"], sample["solution"]
    ap, ap50, od_length = detection_rewards(completion, solution)
    return {
        "format": format_reward(completion), "ap": ap, "ap50": ap50, "od_length": od_length,
        "weighted_sum": weighted_sum(completion, solution), "repetition": repetition(completion),
        "cosine": cosine(completion, solution, sample["completion_tokens"]),
    }


def score_samples(samples: list[dict]) -> list[dict[str, float]]:
    return [score_sample(s) for s in samples]
