"""weighted_sum: the IoU formula, greedy matching with its tie rules, normalisation, parameters."""

from __future__ import annotations

import json
import random
import tracemalloc

import numpy as np
import pytest

from services.reward_api.engine.ground_truth import parse_solution
from services.reward_api.engine.parsing import ParsedCompletion
from services.reward_api.engine.rewards import weighted_sum as ws_module
from services.reward_api.engine.rewards.weighted_sum import greedy_match, iou, iou_matrix, weighted_sum
from services.reward_api.engine.matching import greedy_matching


def item(box, label="cat"):
    return {"bbox_2d": box, "label": label}


def answer(items) -> str:
    return f"<think>t</think><answer>```json\n{json.dumps(items)}\n```</answer>"


def ws(pred, gt, raw=None, **params) -> float:
    truth = parse_solution(gt if isinstance(gt, str) else f"```json\n{json.dumps(gt)}\n```")
    return weighted_sum(ParsedCompletion(raw if raw is not None else answer(pred)), truth, **params).value


def test_iou_is_the_reference_formula():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    # inter (9 - 0 + 1) * (9 - 0 + 1) = 100; union 100 + 200 - 100 = 200
    assert iou([0, 0, 10, 10], [0, 0, 10, 20]) == 0.5
    # overlap one pixel wide: ix1 == ix2, so no intersection at all (the reference's quirk)
    assert iou([0, 0, 10, 10], [9, 0, 19, 10]) == 0.0
    # ix2 - ix1 = 1: inter (1 + 1) * 10 = 20; union 100 + 100 - 20
    assert iou([0, 0, 10, 10], [8, 0, 18, 10]) == 20 / 180
    assert iou([5, 5, 5, 5], [5, 5, 5, 5]) == 0.0  # union 0
    assert iou([0, 0, 1e308, 1e308], [-1e308, -1e308, 1e308, 1e308]) == 0.0  # overflow: not NaN


def reference_iou(a, b):
    ix1, iy1 = max(a[0], b[0]), max(a[1], b[1])
    ix2, iy2 = min(a[2] - 1, b[2] - 1), min(a[3] - 1, b[3] - 1)
    inter = (ix2 - ix1 + 1) * (iy2 - iy1 + 1) if ix1 < ix2 and iy1 < iy2 else 0
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def random_box(rng, big=False):
    if big:
        x, y = rng.randint(-2**40, 2**40), rng.randint(-2**40, 2**40)
        return [x, y, x + rng.randint(0, 2**40), y + rng.randint(0, 2**40)]
    kind = rng.random()
    x, y = rng.randint(0, 50), rng.randint(0, 50)
    w, h = rng.randint(0, 30), rng.randint(0, 30)
    box = [x, y, x + w, y + h]
    if kind < 0.4:
        box = [v + rng.choice([0.0, 0.5, 0.25, 1 / 3]) for v in box]
        box[2], box[3] = max(box[2], box[0]), max(box[3], box[1])
    return box


@pytest.mark.parametrize("big", [False, True])
def test_iou_matrix_is_bit_for_bit_the_python_formula(big):
    rng = random.Random(11)
    preds = [random_box(rng, big) for _ in range(60)]
    gts = [random_box(rng, big) for _ in range(40)]
    expected = np.array([[reference_iou(p, g) for g in gts] for p in preds])
    got = iou_matrix(preds, gts)
    assert np.array_equal(got, expected)


def reference_greedy(ious, threshold):
    """The spec's loop, literally: best remaining pair, ties lowest pred then lowest gt."""
    free_p, free_g, out = set(range(len(ious))), set(range(len(ious[0]) if ious else 0)), []
    while free_p and free_g:
        best = max(((ious[p][g], -p, -g) for p in free_p for g in free_g))
        value, p, g = best[0], -best[1], -best[2]
        if value < threshold:
            break
        out.append((p, g, value))
        free_p.discard(p)
        free_g.discard(g)
    return out


def test_greedy_matching_equals_the_spec_loop():
    rng = random.Random(12)
    for _ in range(300):
        # few distinct positions, so equal IoUs (ties) are common
        preds = [random_box(rng) if rng.random() < 0.2 else [0, 0, 10, 10 + rng.randint(0, 3)] for _ in range(rng.randint(1, 7))]
        gts = [[0, 0, 10, 10 + rng.randint(0, 3)] for _ in range(rng.randint(1, 7))]
        threshold = rng.choice([0.5, 0.8, 1.0])
        ious = [[iou(p, g) for g in gts] for p in preds]
        assert greedy_match(preds, gts, threshold) == reference_greedy(ious, threshold)


def test_hand_computed_values():
    gt = [item([0, 0, 10, 20])]
    # IoU 0.5, same label: position .5, label 1, completeness 1 -> 0.7 * .5 + 0.3 * 1
    assert ws([item([0, 0, 10, 10])], gt) == pytest.approx(0.65)
    # plus a prediction with no box: false alarm 1/2, completeness .75 -> .35 + .225
    assert ws([item([0, 0, 10, 10]), {"label": "cat"}], gt) == pytest.approx(0.575)
    # right box, wrong label: recorded with IoU 0 -> only completeness 1 counts
    assert ws([item([0, 0, 10, 20], "dog")], gt) == pytest.approx(0.3)
    # below the threshold: unmatched both ways, completeness 0
    assert ws([item([0, 0, 10, 9])], gt) == 0.0
    assert ws([item([0, 0, 10, 20])], gt) == 1.0


def test_tie_lowest_prediction_then_lowest_ground_truth():
    # two identical predictions: the first is taken, its wrong label costs the whole position
    assert ws([item([0, 0, 10, 10], "dog"), item([0, 0, 10, 10])], [item([0, 0, 10, 10])]) == pytest.approx(0.225)
    # two identical ground truths: the first (dog) is matched, cat stays a miss
    assert ws([item([0, 0, 10, 10])], [item([0, 0, 10, 10], "dog"), item([0, 0, 10, 10])]) == pytest.approx(0.225)


def test_greedy_takes_the_best_pair_first():
    # pred 0 fits gt 1 best (IoU 1) though it also overlaps gt 0; pred 1 then takes gt 0
    preds = [[0, 0, 10, 20], [0, 0, 10, 10]]
    gts = [[0, 0, 10, 14], [0, 0, 10, 20]]
    assert greedy_match(preds, gts, 0.5) == [(0, 1, 1.0), (1, 0, iou([0, 0, 10, 10], [0, 0, 10, 14]))]


def test_departure_missing_label_reads_as_empty_string():
    gt = [item([0, 0, 10, 10]), item([20, 20, 30, 30])]
    preds = [item([0, 0, 10, 10]), {"bbox_2d": [20, 20, 30, 30]}]
    # the second matches with IoU 1 but label "" != "cat": position 1/2, label 1/2, completeness 1
    assert ws(preds, gt) == pytest.approx(0.7 * 0.5 + 0.3)
    assert ws(preds, gt, alpha=0.0, beta=1.0, gamma=0.0) == pytest.approx(0.5)


def test_non_objects_and_invalid_boxes_count_as_false_alarms():
    gt = [item([0, 0, 10, 10])]
    preds = [item([0, 0, 10, 10]), "junk", item([5, 5, 1, 1]), item([float("nan")] * 4)]
    raw = answer(preds)
    # NaN lower-cases to "nan", which json.loads refuses: the whole list is unreadable
    assert ws(None, gt, raw=raw) == 0.0
    # without the NaN: 3 predictions, 1 matched -> false alarm 2/3
    assert ws(preds[:3], gt) == pytest.approx(0.7 + 0.3 * (1 - (2 / 3) / 2))


def test_normalisation_lower_cases_labels_and_reads_the_first_fence():
    gt = [item([0, 0, 10, 10], "Red Car")]
    raw = ("<answer>```json\n" + json.dumps([item([0, 0, 10, 10], "RED CAR")]) + "\n```\n"
           "```json\n" + json.dumps([item([50, 50, 60, 60], "red car")]) + "\n```.</answer>")
    assert ws(None, gt, raw=raw) == 1.0


def test_none_ground_truth():
    assert ws(None, "None", raw="<answer>None.</answer>") == 1.0
    assert ws(None, "<answer>None</answer>", raw="none") == 1.0
    assert ws(None, "None", raw="<answer>```json\n[]\n```</answer>") == 0.0
    assert ws(None, [], raw="<answer> NONE\n</answer>") == 1.0  # structured [] is None


def test_empty_lists():
    assert ws(None, "```json\n[]\n```", raw="<answer>None</answer>") == 1.0  # no gt boxes, no predictions
    assert ws([item([0, 0, 1, 1])], "```json\n[]\n```") == 0.0
    assert ws(None, [item([0, 0, 1, 1])], raw="<answer>no boxes</answer>") == 0.0


def test_parameters():
    gt = [item([0, 0, 10, 20])]
    pred = [item([0, 0, 10, 10])]
    assert ws(pred, gt, iou_threshold=0.6) == 0.0
    assert ws(pred, gt, alpha=1.0, beta=0.0, gamma=0.0) == pytest.approx(0.5)
    assert ws(pred, gt, alpha=0.0, beta=2.0, gamma=2.0) == pytest.approx(1.0)


def test_structured_and_text_ground_truth_give_identical_values():
    gt_items = [item([0, 0, 10, 20], "Cat"), item([30, 30, 50, 50], "Hund Ä")]
    preds = [item([0, 0, 10, 10], "CAT"), item([30, 31, 50, 50], "hund ä"), "x"]
    text = "<answer>\n```json\n" + json.dumps(gt_items, ensure_ascii=False, indent=2) + "\n```\n</answer>"
    parsed = ParsedCompletion(answer(preds))
    a = weighted_sum(parsed, parse_solution(gt_items))
    b = weighted_sum(parsed, parse_solution(text))
    assert a == b and a.value > 0.5


# ----------------------------------------------------------------------------- the pure-Python path


def _mixed_box(rng):
    """Ints, floats, equal values of both types, big ints, huge floats: every kind iou() meets."""
    kind = rng.random()
    if kind < 0.1:
        return random_box(rng, big=True)
    if kind < 0.15:
        return [rng.choice([-1e308, 0.0, 1e307]), 0.0, 1e308, rng.choice([1e308, 5.0])]
    box = random_box(rng)
    if kind < 0.5:
        box = [float(v) if rng.random() < 0.5 else v for v in box]
    return box


def test_python_candidates_are_exactly_iou():
    """With no threshold, the inlined arithmetic lists every pair: value and type equal iou()'s."""
    rng = random.Random(21)
    for _ in range(2000):
        preds = [_mixed_box(rng) for _ in range(rng.randint(1, 6))]
        gts = [_mixed_box(rng) for _ in range(rng.randint(1, 6))]
        got = ws_module._python_candidates(preds, list(range(len(preds))), gts, float("-inf"))
        want = [(iou(p, g), i, j) for i, p in enumerate(preds) for j, g in enumerate(gts)]
        assert [(repr(v), i, j) for v, i, j in got] == [(repr(v), i, j) for v, i, j in want]
        # A positive threshold skips pairs that do not overlap: the same pairs survive.
        for threshold in (1e-9, 0.5, 1.0):
            kept = ws_module._python_candidates(preds, list(range(len(preds))), gts, threshold)
            assert [(repr(v), i, j) for v, i, j in kept] == [(repr(v), i, j) for v, i, j in want if v >= threshold]


def _python_greedy(preds, valid, gts, threshold):
    candidates = sorted(ws_module._python_candidates(preds, valid, gts, threshold), key=lambda c: -c[0])
    taken_p, taken_g, out = set(), set(), []
    for value, p, g in candidates:
        if p not in taken_p and g not in taken_g:
            taken_p.add(p), taken_g.add(g), out.append((p, g, value))
    return out


def test_python_and_numpy_paths_match_the_same_pairs():
    """The row-by-row path (matching.greedy_matching) takes the pairs the Python path
    takes, in the same order, ties included (boxes drawn from a few, so many IoUs are equal)."""
    rng = random.Random(22)
    for _ in range(600):
        pool = [random_box(rng) for _ in range(rng.randint(1, 5))]
        preds = [rng.choice(pool) for _ in range(rng.randint(1, 14))]
        gts = [rng.choice(pool) for _ in range(rng.randint(1, 14))]
        valid = sorted(rng.sample(range(len(preds)), rng.randint(1, len(preds))))
        threshold = rng.choice([0.5, 0.3, 0.9, 1.0, 1e-9])
        boxes = [b if i in valid else None for i, b in enumerate(preds)]
        rows = ws_module._iou_rows(boxes, gts)
        want = _python_greedy(preds, valid, gts, threshold)
        assert greedy_matching(valid, lambda p: rows([p])[0], len(gts), threshold) == want
        assert greedy_matching(valid, lambda p: rows([p])[0], len(gts), threshold, rows) == want


def test_many_identical_boxes_match_in_bounded_memory():
    """2,500 identical boxes on each side (issue 11: +1.12 GB as tuples): every pair is a
    candidate, but only a short list per prediction is held."""
    box = (10.0, 10.0, 50.0, 50.0)
    tracemalloc.start()
    try:
        matches = greedy_match([box] * 2500, [box] * 2500, 0.5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert matches[:2] == [(0, 0, 1.0), (1, 1, 1.0)] and len(matches) == 2500
    assert peak < 40e6, f"peak {peak / 1e6:.0f} MB"


@pytest.mark.parametrize("huge, other", [
    ([-(10**308), 0, 10**308, 1.5], [0, 0, 10, 10]),  # overlapping: int width times float height
    ([10**160, 10**160, 2 * 10**160, 2 * 10**160], [0.0, 0.0, 1.0, 1.0]),  # apart: int area + float area
])
def test_overflowing_integers_raise_as_iou_does(huge, other):
    """Valid boxes (every number a finite double) whose products overflow: iou() raises, and so
    does greedy_match, with the same error, whichever path it takes."""
    with pytest.raises(OverflowError) as expected:
        iou(huge, other)
    for preds, gts in (([huge], [other]), ([other], [huge])):
        with pytest.raises(OverflowError) as got:
            greedy_match(preds, gts, 0.5)
        assert str(got.value) == str(expected.value)
