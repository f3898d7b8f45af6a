"""ap, ap50, od_length: the spec's cases, pycocotools values, and the invalid-box departures."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from services.reward_api.engine.ground_truth import parse_solution
from services.reward_api.engine.parsing import ParsedCompletion
from services.reward_api.engine.rewards import RewardInput, detection
from services.reward_api.engine.rewards.detection import evaluate_detection

CAT_BOX = [10, 20, 110, 220]
DOG_BOX = [200, 200, 260, 300]
FAR_BOX = [5000, 5000, 5001, 5001]  # overlaps nothing: what an invalid box amounts to


def item(box, label="cat"):
    return {"bbox_2d": box, "label": label}


def completion(items) -> str:
    return f"<think>t</think><answer>```json\n{json.dumps(items)}\n```</answer>"


def solution(items) -> str:
    return f"<answer>```json\n{json.dumps(items)}\n```</answer>" if items else "None"


def evaluate(pred_items, gt_items, raw_completion=None):
    text = raw_completion if raw_completion is not None else completion(pred_items)
    return evaluate_detection(ParsedCompletion(text), parse_solution(solution(gt_items)))


def pycocotools_ap(pred_items, gt_items):
    """stats[0], stats[1] of pycocotools for one image; category ids from the ground-truth labels."""
    cats = {label: i + 1 for i, label in enumerate(dict.fromkeys(g["label"] for g in gt_items))}
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1}],
        "categories": [{"id": i} for i in cats.values()],
        "annotations": [
            {"id": n + 1, "image_id": 1, "category_id": cats[g["label"]], "iscrowd": 0,
             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])}
            for n, g in enumerate(gt_items) for b in [g["bbox_2d"]]
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        dets = coco.loadRes([
            {"image_id": 1, "category_id": cats[p["label"]], "score": 1.0,
             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
            for p in pred_items for b in [p["bbox_2d"]]
        ])
        ev = COCOeval(coco, dets, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


def test_exact_box_equals_pycocotools():
    result = evaluate([item(CAT_BOX)], [item(CAT_BOX)])
    assert (result.ap, result.ap50) == pycocotools_ap([item(CAT_BOX)], [item(CAT_BOX)])
    assert result.ap == pytest.approx(1.0) and result.od_length == result.ap


def test_mixed_case_equals_pycocotools():
    gt = [item(CAT_BOX), item(DOG_BOX, "dog"), item([300, 10, 350, 90])]
    preds = [item([12, 25, 105, 210]), item([300, 12, 340, 95]), item([190, 210, 250, 290], "dog"), item([0, 0, 5, 5])]
    result = evaluate(preds, gt)
    expected = pycocotools_ap(preds, gt)
    assert result.ap == pytest.approx(expected[0], abs=1e-12)
    assert result.ap50 == pytest.approx(expected[1], abs=1e-12)
    assert result.od_length == pytest.approx(result.ap * 3 / 4)
    assert result.case == "coco" and (result.n_pred, result.n_gt) == (4, 3)


def test_no_answer_is_zero_even_for_none_ground_truth():
    assert evaluate([], [], raw_completion="<think>None</think>").ap == 0.0
    result = evaluate([], [item(CAT_BOX)], raw_completion="```json\n[]\n```")
    assert (result.ap, result.ap50, result.od_length, result.case) == (0.0, 0.0, 0.0, "no_answer")


def test_none_and_none_is_one():
    result = evaluate([], [], raw_completion="<think>t</think><answer> None </answer>")
    assert (result.ap, result.ap50, result.od_length, result.case) == (1.0, 1.0, 1.0, "none_none")


def test_both_empty_is_one_and_one_empty_is_zero():
    assert evaluate([], []).ap == 1.0  # empty fenced list against None
    assert evaluate([], [], raw_completion="<answer>nothing here</answer>").case == "both_empty"
    assert evaluate([item(CAT_BOX)], []).od_length == 0.0
    assert evaluate([], [item(CAT_BOX)], raw_completion="<answer>None</answer>").ap == 0.0


def test_unknown_labels_are_dropped_but_counted_in_od_length():
    result = evaluate([item(CAT_BOX), item(CAT_BOX, "dog")], [item(CAT_BOX)])
    assert result.ap == pycocotools_ap([item(CAT_BOX)], [item(CAT_BOX)])[0]
    assert result.od_length == pytest.approx(result.ap / 2)
    assert result.item_status == ("kept", "unknown_label")


def test_labels_match_exactly_case_sensitive():
    result = evaluate([item(CAT_BOX, "Cat")], [item(CAT_BOX)])
    assert (result.ap, result.case) == (0.0, "no_known_label")


def test_non_objects_and_unlabelled_items_are_dropped():
    preds = [item(CAT_BOX), "cat", {"bbox_2d": CAT_BOX}, {"bbox_2d": CAT_BOX, "label": 3}]
    result = evaluate(preds, [item(CAT_BOX)])
    assert result.item_status == ("kept", "not_an_object", "no_label", "no_label")
    assert result.ap == pycocotools_ap([item(CAT_BOX)], [item(CAT_BOX)])[0]
    assert result.od_length == pytest.approx(result.ap / 4)


def test_departure_nan_boxes_are_false_positives():
    nan_items = [item([float("nan")] * 4)] * 3
    text = completion(nan_items)  # json.dumps writes NaN, json.loads reads it
    assert "NaN" in text
    result = evaluate(None, [item(CAT_BOX)], raw_completion=text)
    assert result.ap == 0.0 and result.ap50 == 0.0  # the reference scored this 1.0
    # a NaN box after a right one is a false positive, like a box far away
    text = completion([item(CAT_BOX), item([float("nan"), 1, 2, 3])])
    got = evaluate(None, [item(CAT_BOX), item(DOG_BOX)], raw_completion=text)
    expected = pycocotools_ap([item(CAT_BOX), item(FAR_BOX)], [item(CAT_BOX), item(DOG_BOX)])
    assert (got.ap, got.ap50) == pytest.approx(expected, abs=1e-12)
    assert got.item_status == ("kept", "invalid_box")


def test_departure_inverted_boxes_are_false_positives():
    gt = [item(CAT_BOX), item([20, 30, 90, 200])]
    inverted = item([110, 20, 10, 220])  # negative width: negative area
    got = evaluate([inverted, item(CAT_BOX), inverted], gt)
    expected = pycocotools_ap([item(FAR_BOX), item(CAT_BOX), item(FAR_BOX)], gt)
    assert (got.ap, got.ap50) == pytest.approx(expected, abs=1e-12)
    # pycocotools itself ignores negative-area boxes (free guesses): the exploit the departure closes
    assert pycocotools_ap([inverted, item(CAT_BOX)], gt)[1] > expected[1]
    assert evaluate([item([110, 220, 10, 20])], gt).ap == 0.0


@pytest.mark.parametrize("box", [[1, 2, 3], [1, 2, 3, "4"], [True, 2, 3, 4], None, [1, 2, 3, 10**400]])
def test_other_invalid_boxes_are_false_positives(box):
    text = completion([item(CAT_BOX), {"bbox_2d": box, "label": "cat"}]).replace("1" + "0" * 400, "1" + "0" * 400)
    got = evaluate(None, [item(CAT_BOX), item(DOG_BOX)], raw_completion=text)
    assert got.item_status == ("kept", "invalid_box")
    expected = pycocotools_ap([item(CAT_BOX), item(FAR_BOX)], [item(CAT_BOX), item(DOG_BOX)])
    assert (got.ap, got.ap50) == pytest.approx(expected, abs=1e-12)


def test_only_the_last_fence_of_the_last_answer_counts():
    text = (f"<answer>```json\n{json.dumps([item(CAT_BOX)])}\n```</answer><answer>"
            f"```json\n{json.dumps([item(DOG_BOX)])}\n``` ```json\n{json.dumps([item(CAT_BOX)] * 2)}\n```</answer>")
    result = evaluate(None, [item(CAT_BOX)], raw_completion=text)
    assert result.n_pred == 2


def test_ap_ap50_and_od_length_share_one_evaluation(monkeypatch):
    calls = []
    real = detection.single_image_ap
    monkeypatch.setattr(detection, "single_image_ap", lambda *a: calls.append(1) or real(*a))
    inp = RewardInput(ParsedCompletion(completion([item(CAT_BOX)])), parse_solution(solution([item(CAT_BOX)])))
    values = detection.score_ap(inp), detection.score_ap50(inp), detection.score_od_length(inp)
    assert len(calls) == 1 and values[0] == values[2]
