"""engine.evaluation: every metric against hand-computed values, dataset mAP against pycocotools'
multi-image COCOeval, NMS-AP with hard-negative labels on the same object."""

from __future__ import annotations

import contextlib
import io
import json
import random

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from services.reward_api.engine.evaluation import (
    EvaluationInputError,
    evaluate_dataset,
    greedy_matches,
    iou_matrix,
    nms_keep,
    read_ground_truth,
    read_predictions,
)


def answer(*items) -> str:
    """A completion whose answer block holds ``items`` as the research's fenced JSON list."""
    return f"<think>looking</think><answer>```json\n{json.dumps(list(items))}\n```</answer>"


def box(label, bbox) -> dict:
    return {"bbox_2d": bbox, "label": label}


CAT = [0, 0, 10, 10]
# pycocotools' precision is tp / (tp + fp + eps): a perfect AP is 1 - 2.2e-16, not 1.0.
ONE = pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------- greedy precision and recall


def test_greedy_precision_recall_by_hand():
    images = [
        (
            # IoU 1 (match), IoU 0.5 with the same gt (already taken), dog at IoU 1/3 (no match)
            answer(box("cat", CAT), box("cat", [0, 0, 10, 5]), box("dog", [25, 20, 35, 30])),
            [box("cat", CAT), box("dog", [20, 20, 30, 30])],
        ),
        (
            # a label outside the set, an item without a label, a cat with an inverted box
            answer(box("zebra", CAT), {"bbox_2d": CAT}, box("cat", [5, 5, 1, 1])),
            [box("cat", CAT)],
        ),
    ]
    result = evaluate_dataset(images)
    assert (result.n_pred, result.n_gt, result.matches) == (6, 3, 1)
    assert result.precision == pytest.approx(1 / 6)
    assert result.recall == pytest.approx(1 / 3)
    assert (result.n_invalid_box, result.n_unknown_label, result.n_no_label) == (1, 1, 1)
    assert result.unknown_labels == {"zebra": 1}
    cat, dog = result.per_category
    assert (cat.category, cat.n_gt, cat.n_pred, cat.matches) == ("cat", 2, 3, 1)
    assert (cat.precision, cat.recall) == (pytest.approx(1 / 3), 0.5)
    assert (dog.category, dog.n_gt, dog.n_pred, dog.matches, dog.precision, dog.recall) == ("dog", 1, 1, 0, 0.0, 0.0)


def test_greedy_matching_takes_the_highest_iou_pair_first():
    # p0 overlaps A (IoU 0.82) and B (0.54); p1 is exactly A (1.0) and B at 0.43. Highest IoU first
    # gives p1-A then p0-B: two matches, where answer-order matching would give one.
    a, b = [0, 0, 10, 10], [4, 0, 14, 10]
    result = evaluate_dataset([(answer(box("cat", [1, 0, 11, 10]), box("cat", a)), [box("cat", a), box("cat", b)])])
    assert result.matches == 2
    assert (result.precision, result.recall) == (1.0, 1.0)


def test_greedy_matching_is_label_aware_and_ties_go_to_the_earlier_prediction():
    preds = read_predictions(answer(box("dog", CAT), box("cat", CAT), box("cat", CAT)))
    truth = read_ground_truth([box("cat", CAT)], 0)
    assert greedy_matches(preds, truth, iou_matrix(preds, truth)) == [(1, 0)]


def test_iou_exactly_one_half_matches():
    result = evaluate_dataset([(answer(box("cat", [0, 0, 10, 5])), [box("cat", CAT)])])
    assert result.matches == 1


def test_no_answer_block_means_no_prediction_and_none_answer_is_fine():
    images = [
        ("```json\n" + json.dumps([box("cat", CAT)]) + "\n```", [box("cat", CAT)]),  # no <answer>
        ("<think>nothing</think><answer>None</answer>", "None"),
    ]
    result = evaluate_dataset(images)
    assert (result.n_images, result.n_answered, result.n_pred, result.n_gt) == (2, 1, 0, 1)
    assert result.precision is None  # nothing predicted: undefined, not 0
    assert result.recall == 0.0
    assert result.ap == 0.0


def test_completion_is_parsed_as_the_rewards_parse_it():
    # The last answer block counts, and in it the last ```json fence.
    completion = (
        "<answer>```json\n" + json.dumps([box("cat", CAT)]) + "\n```</answer> second thoughts "
        "<answer>```json\n" + json.dumps([box("cat", [50, 50, 60, 60])]) + "\n```\n"
        "```json\n" + json.dumps([box("cat", [0, 0, 10, 9])]) + "\n```</answer>"
    )
    preds = read_predictions(completion)
    assert preds.labels == ("cat",)
    assert preds.boxes.tolist() == [[0, 0, 10, 9]]


# ---------------------------------------------------------------- COCO mAP


def test_dataset_map_by_hand_every_box_scored_one_in_image_order():
    # Image 1: exact box. Image 2: IoU 0.78, a true positive for thresholds .50-.75 only.
    # At .80-.95 the ranking is TP (image 1) then FP (image 2): precision 1 up to recall 0.5,
    # i.e. 51 of the 101 recall points.
    images = [(answer(box("cat", CAT)), [box("cat", CAT)]), (answer(box("cat", [0, 0, 10, 7.8])), [box("cat", CAT)])]
    result = evaluate_dataset(images)
    assert result.ap50 == ONE
    assert result.ap == pytest.approx((6 + 4 * 51 / 101) / 10, abs=1e-12)
    # Reversed image order: the false positive ranks first, precision 1/2 up to recall 0.5.
    reversed_result = evaluate_dataset(images[::-1])
    assert reversed_result.ap == pytest.approx((6 + 4 * 0.5 * 51 / 101) / 10, abs=1e-12)


def test_invalid_box_with_a_known_label_is_a_false_positive():
    # [NaN, ...] would match in pycocotools; here it is a false positive ranked first: precision 1/2.
    completion = '<answer>```json\n[{"bbox_2d": [NaN, NaN, NaN, NaN], "label": "cat"}, ' + json.dumps(box("cat", CAT)) + "]\n```</answer>"
    result = evaluate_dataset([(completion, [box("cat", CAT)])])
    assert result.ap == pytest.approx(0.5, abs=1e-12)
    assert result.n_invalid_box == 1


def test_category_without_ground_truth_is_left_out_of_the_mean():
    result = evaluate_dataset([(answer(box("cat", CAT), box("dog", [20, 20, 30, 30])), [box("cat", CAT)])],
                              categories=["cat", "dog"])
    assert result.ap == ONE  # pycocotools: dog has no ground truth, -1, not averaged
    dog = result.per_category[1]
    assert (dog.category, dog.ap, dog.n_pred) == ("dog", None, 1)
    assert result.precision == 0.5  # but the dog box is still a false alarm


def _random_set(seed: int, n_images: int = 12):
    rng = random.Random(seed)
    labels = ["cat", "dog", "car", "bus"]
    images = []
    for _ in range(n_images):
        gts = []
        for _ in range(rng.randint(0, 4)):
            x, y = rng.uniform(0, 80), rng.uniform(0, 80)
            gts.append(box(rng.choice(labels[:3]), [x, y, x + rng.uniform(5, 40), y + rng.uniform(5, 40)]))
        preds = []
        for gt in gts:
            if rng.random() < 0.8:
                j = [v + rng.uniform(-4, 4) for v in gt["bbox_2d"]]
                preds.append(box(gt["label"] if rng.random() < 0.85 else rng.choice(labels), [min(j[0], j[2]), min(j[1], j[3]), max(j[0], j[2]), max(j[1], j[3])]))
        for _ in range(rng.randint(0, 2)):
            x, y = rng.uniform(0, 90), rng.uniform(0, 90)
            preds.append(box(rng.choice(labels + ["zebra"]), [x, y, x + rng.uniform(3, 30), y + rng.uniform(3, 30)]))
        rng.shuffle(preds)
        images.append((answer(*preds), gts))
    return images, labels


def _pycocotools(images, categories):
    """COCOeval over the same data: image ids 1..N in order, detections all 1.0 in answer order."""
    cat_id = {name: k + 1 for k, name in enumerate(categories)}
    gt = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for n, i in cat_id.items()]}
    dts = []
    for image_id, (completion, truth) in enumerate(images, 1):
        gt["images"].append({"id": image_id, "width": 200, "height": 200})
        for item in truth:
            x1, y1, x2, y2 = item["bbox_2d"]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": cat_id[item["label"]],
                                      "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        for item in json.loads(completion.split("```json\n")[1].split("\n```")[0]):
            if item["label"] in cat_id:
                x1, y1, x2, y2 = item["bbox_2d"]
                dts.append({"image_id": image_id, "category_id": cat_id[item["label"]], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 1.0})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dts) if dts else COCO()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # area all, maxDets 100
    per_category = {}
    for k, name in enumerate(categories):
        valid = precision[:, :, k][precision[:, :, k] > -1]
        per_category[name] = float(np.mean(valid)) if valid.size else None
    return evaluator.stats[0], evaluator.stats[1], per_category


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_dataset_map_equals_pycocotools_multi_image_cocoeval(seed):
    images, categories = _random_set(seed)
    ap, ap50, per_category = _pycocotools(images, categories)
    result = evaluate_dataset(images, categories)
    assert result.ap == pytest.approx(ap, abs=1e-12)
    assert result.ap50 == pytest.approx(ap50, abs=1e-12)
    for row in result.per_category:
        if per_category[row.category] is None:
            assert row.ap is None
        else:
            assert row.ap == pytest.approx(per_category[row.category], abs=1e-12)


# ---------------------------------------------------------------- NMS-AP


def test_hard_negative_label_first_on_the_same_object_removes_the_right_one():
    images = [(answer(box("dog", CAT), box("cat", CAT)), [box("cat", CAT)])]
    result = evaluate_dataset(images, categories=["cat", "dog"])
    assert result.ap == ONE  # plain COCO AP does not see the dog (no dog ground truth anywhere)
    assert result.nms_ap == 0.0  # NMS keeps the earlier dog box: the cat is lost
    assert result.per_category[0].nms_ap == 0.0


def test_right_label_first_survives_the_hard_negative():
    images = [(answer(box("cat", CAT), box("dog", [0, 0, 10, 9])), [box("cat", CAT)])]
    result = evaluate_dataset(images, categories=["cat", "dog"])
    assert (result.ap, result.nms_ap) == (ONE, ONE)


def test_hard_negative_that_is_a_positive_elsewhere_by_hand():
    # Image 1: dog (negative here) then cat on the cat. Image 2: a dog found exactly.
    # COCO: cat AP 1; dog ranking FP (image 1) then TP: precision 1/2 at every recall point -> 0.5.
    # NMS: image 1 keeps the dog and loses the cat: cat AP 0, dog still 0.5.
    images = [
        (answer(box("dog", CAT), box("cat", CAT)), [box("cat", CAT)]),
        (answer(box("dog", CAT)), [box("dog", CAT)]),
    ]
    result = evaluate_dataset(images)
    assert result.ap == pytest.approx(0.75, abs=1e-12)
    assert result.nms_ap == pytest.approx(0.25, abs=1e-12)
    assert result.nms_ap50 == pytest.approx(0.25, abs=1e-12)
    cat, dog = result.per_category
    assert (cat.nms_ap, dog.nms_ap) == (0.0, pytest.approx(0.5, abs=1e-12))


def test_labels_outside_the_categories_take_no_part_in_nms():
    images = [(answer(box("zebra", CAT), box("cat", CAT)), [box("cat", CAT)])]
    assert evaluate_dataset(images, categories=["cat", "dog"]).nms_ap == ONE


def test_duplicates_of_one_object_count_once_after_nms():
    # Two cat boxes on one cat and none on the second cat: COCO AP counts the duplicate as a false
    # positive after the match; NMS removes it. Second image: an exact second cat.
    images = [
        (answer(box("cat", CAT), box("cat", [0, 0, 10, 9])), [box("cat", CAT)]),
        (answer(box("cat", CAT)), [box("cat", CAT)]),
    ]
    result = evaluate_dataset(images)
    # COCO at every IoU threshold: ranking TP, FP (the duplicate, its cat already taken), TP ->
    # precision envelope 1 up to recall 0.5 (51 points), 2/3 after (50 points).
    assert result.ap == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)
    assert result.ap50 == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)
    assert result.nms_ap == ONE


def test_nms_keep_only_kept_predictions_suppress():
    # p0 holds g0; p1 overlaps g0 and g1: removed; p2 overlaps g1 only, which nobody kept holds: kept.
    iou = np.array([[0.9, 0.0], [0.6, 0.7], [0.0, 0.8]])
    assert nms_keep(iou).tolist() == [True, False, True]
    assert nms_keep(np.array([[0.5], [0.9]])).tolist() == [True, True]  # IoU 0.5 is not "above 0.5"
    assert nms_keep(np.zeros((2, 0))).tolist() == [True, True]


# ---------------------------------------------------------------- inputs


def test_unreadable_ground_truth_names_the_image():
    with pytest.raises(EvaluationInputError, match=r"images\[1\]\.solution"):
        evaluate_dataset([(answer(), [box("cat", CAT)]), (answer(), [{"bbox_2d": [1, 2], "label": "cat"}])])


def test_categories_must_cover_the_ground_truth_and_be_distinct():
    with pytest.raises(EvaluationInputError, match="'cat'"):
        evaluate_dataset([(answer(), [box("cat", CAT)])], categories=["dog"])
    with pytest.raises(EvaluationInputError, match="more than once"):
        evaluate_dataset([(answer(), [box("cat", CAT)])], categories=["cat", "cat"])


def test_empty_set_has_no_values():
    result = evaluate_dataset([])
    assert (result.n_images, result.ap, result.precision, result.recall, result.nms_ap) == (0, None, None, None, None)
    assert result.per_category == []


# ---------------------------------------------------------------- bounded memory (issue 11)


def _peak(fn):
    import tracemalloc

    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_thousands_of_identical_boxes_evaluate_in_bounded_memory():
    items = [box("cat", CAT)] * 2500
    result, peak = _peak(lambda: evaluate_dataset([(answer(*items), items)]))
    assert (result.matches, result.precision, result.recall) == (2500, 1.0, 1.0)
    assert peak < 80e6, f"peak {peak / 1e6:.0f} MB"


def test_thousands_of_distinct_labels_evaluate_in_memory_linear_in_the_boxes():
    items = [box(f"l{i}", [i, i, i + 10, i + 10]) for i in range(6000)]
    result, peak = _peak(lambda: evaluate_dataset([(answer(*items), items)]))
    assert result.matches == 6000 and result.ap == ONE
    assert peak < 250e6, f"peak {peak / 1e6:.0f} MB"


def test_the_number_of_categories_is_bounded():
    image = (answer(box("cat", CAT)), [box("cat", CAT)])
    with pytest.raises(EvaluationInputError, match="50001 categories, more than the limit of 10000"):
        evaluate_dataset([image], ["cat"] + [f"c{i}" for i in range(50_000)], max_categories=10_000)
    items = [box(f"l{i}", CAT) for i in range(30)]
    with pytest.raises(EvaluationInputError, match="30 ground-truth labels"):
        evaluate_dataset([(answer(), items)], max_categories=20)
