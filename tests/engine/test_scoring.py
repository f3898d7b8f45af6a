"""score_batch: per-sample errors, request errors, explain, stats, and hostile input under a second."""

from __future__ import annotations

import json
import time
import warnings
from types import SimpleNamespace

import pytest

from services.reward_api.engine import registry
from services.reward_api.engine.rewards import detection
from services.reward_api.engine.scoring import BatchScores, MissingCompletionTokens, score_batch

ALL = ["format", "ap", "ap50", "od_length", "weighted_sum", "repetition", "cosine"]
CAT = {"bbox_2d": [10, 20, 110, 220], "label": "cat"}
DOG = {"bbox_2d": [200, 200, 260, 300], "label": "dog"}


def answer(items, think="t") -> str:
    return f"<think>{think}</think>\n<answer>```json\n{json.dumps(items)}\n```</answer>"


def gt_text(items) -> str:
    return f"<answer>```json\n{json.dumps(items)}\n```</answer>"


def sample(completion, solution, tokens=10):
    return {"completion": completion, "solution": solution, "completion_tokens": tokens}


def score(samples, rewards=ALL, params=None, explain=False) -> BatchScores:
    return score_batch(samples, registry.resolve_rewards(rewards), params, explain)


def test_a_bad_ground_truth_spoils_only_its_sample():
    scores = score([
        sample(answer([CAT]), gt_text([CAT])),
        sample(answer([CAT]), "```json\n[{\"bbox_2d\": [1, 2, 3], \"label\": \"cat\"}]\n```"),
        sample(answer([CAT]), [CAT]),
    ])
    assert all(scores.values[name][1] is None for name in ALL)
    assert all(scores.values[name][0] == scores.values[name][2] is not None for name in ALL)
    assert scores.errors[0] is None and "bbox_2d has 3 numbers" in scores.errors[1]
    assert scores.error_reasons == [None, "invalid_solution", None]
    assert scores.values["format"][0] == 1.0 and scores.values["weighted_sum"][0] == 1.0
    assert scores.versions == {name: "2" for name in ALL}


def test_missing_completion_tokens_is_a_request_error_listing_samples():
    samples = [sample("a", "None", None), sample("b", "None", 3), sample("c", "None", None)]
    with pytest.raises(MissingCompletionTokens) as caught:
        score(samples)
    assert caught.value.indexes == [0, 2]
    assert "samples[].completion_tokens" in str(caught.value) and "0, 2" in str(caught.value)
    assert score(samples, ["format", "ap"]).values["format"] == [0.0, 0.0, 0.0]  # only cosine needs them


def test_params_are_validated_and_applied():
    pred = [{"bbox_2d": [10, 20, 110, 220], "label": "dog"}]
    samples = [sample(answer(pred), [CAT])]
    assert score(samples, ["weighted_sum"]).values["weighted_sum"] == [pytest.approx(0.3)]
    assert score(samples, ["weighted_sum"], {"weighted_sum": {"gamma": 0.0}}).values["weighted_sum"] == [0.0]
    with pytest.raises(registry.ParamsError):
        score(samples, ["weighted_sum"], {"weighted_sum": {"gamma": -1}})


def test_samples_may_be_objects_or_dicts_and_rewards_names():
    obj = SimpleNamespace(completion=answer([CAT]), solution=gt_text([CAT]), completion_tokens=5)
    scores = score_batch([obj, sample(answer([CAT]), [CAT], 5)], ["od_ap", "length"])
    assert set(scores.values) == {"ap", "cosine"}
    assert scores.values["ap"][0] == scores.values["ap"][1]


def test_empty_batch():
    scores = score([])
    assert scores.values == {name: [] for name in ALL} and scores.errors == [] and scores.stats.predicted_boxes == []


def test_one_coco_evaluation_per_sample(monkeypatch):
    calls = []
    real = detection.single_image_ap
    monkeypatch.setattr(detection, "single_image_ap", lambda *a: calls.append(1) or real(*a))
    score([sample(answer([CAT, DOG]), [CAT, DOG])] * 3, ["ap", "ap50", "od_length"], explain=True)
    assert len(calls) == 3


def test_a_crashing_reward_marks_its_sample_not_the_batch(monkeypatch):
    def broken(parsed, truth, version):
        if truth.n == 2:
            raise RuntimeError("boom")
        return real(parsed, truth, version)

    real = detection.evaluate_detection
    monkeypatch.setattr(detection, "evaluate_detection", broken)
    scores = score([sample(answer([CAT]), [CAT]), sample(answer([CAT]), [CAT, DOG])], ["format", "ap"], explain=True)
    assert scores.values["ap"][1] is None and scores.values["format"][1] is None
    assert scores.error_reasons == [None, "reward_error"] and "boom" in scores.errors[1]
    assert scores.values["ap"][0] is not None


def test_stats_count_boxes_and_parse_failures():
    scores = score([
        sample(answer([CAT, "x", {"bbox_2d": [1, 2, 3]}, {"bbox_2d": [1, 2, 3, 4]}]), [CAT]),
        sample("<answer>no fence</answer>", [CAT]),
        sample("nothing", [CAT]),
        sample("<answer>```json\n[1,\n```</answer>", "bad ground truth"),
    ], ["format"])
    assert scores.stats.predicted_boxes == [4, 0, None, 0]
    assert scores.stats.sample_failures == [
        ("not_an_object", "no_label", "invalid_box"), ("no_json_fence",), ("no_answer",), ("invalid_json",),
    ]
    assert scores.stats.parse_failures == {
        "not_an_object": 1, "no_label": 1, "invalid_box": 1, "no_json_fence": 1, "no_answer": 1, "invalid_json": 1,
    }


def test_explain_says_what_was_parsed_kept_dropped_and_matched():
    preds = [CAT, {"bbox_2d": [10, 20, 110, 220], "label": "bird"}, {"bbox_2d": [3, 3, 1, 1], "label": "cat"}, 7,
             {"bbox_2d": [1, 2, 3, 4]}]
    scores = score([sample(answer(preds), [CAT, DOG], 99), sample("x", "broken", 1)], explain=True)
    details = scores.details[0]
    json.dumps(scores.details)  # JSON-ready
    assert details["completion"]["answer_found"] and details["completion"]["n_items"] == 5
    statuses = [(i["index"], i["status"]) for i in details["completion"]["items"]]
    assert statuses == [(0, "kept"), (1, "unknown_label"), (2, "invalid_box"), (3, "not_an_object"), (4, "no_label")]
    assert details["completion"]["items"][2]["box_problem"].startswith("is inverted")
    assert details["ground_truth"]["labels"] == ["cat", "dog"]
    assert (details["detection"]["n_pred"], details["detection"]["n_gt"]) == (5, 2)
    assert details["detection"]["n_evaluated"] == 2
    match = details["weighted_sum"]["matches"][0]
    assert match == {"pred": 0, "gt": 0, "iou": 1.0, "labels_equal": True}
    assert details["cosine"]["acc"] == scores.values["weighted_sum"][0]
    assert details["repetition"]["source"] == "json_fence"
    assert details["format"] == {"matches": True}
    assert scores.details[1]["error"]["reason"] == "invalid_solution"
    assert score([sample("x", "None")], ["format"]).details is None


def test_structured_and_text_ground_truth_score_identically():
    gt = [{"bbox_2d": [0, 0, 50.5, 40], "label": "Red Car"}, {"bbox_2d": [60, 10, 90, 80], "label": "tree"}]
    text = "<answer>\n```json\n" + json.dumps(gt, indent=1) + "\n```\n</answer>"
    completions = [
        answer([{"bbox_2d": [1, 1, 50, 40], "label": "red car"}, {"bbox_2d": [60, 10, 90, 80], "label": "Tree"}]),
        answer([{"bbox_2d": [1, 1, 50, 40], "label": "Red Car"}, {"bbox_2d": [60, 12, 88, 80], "label": "tree"}] * 2),
        "<answer>None</answer>",
        "no answer at all, just words words words words words words words words",
    ]
    structured = score([sample(c, gt) for c in completions])
    textual = score([sample(c, text) for c in completions])
    assert structured.values == textual.values
    assert structured.values["ap"][1] > 0 and structured.values["weighted_sum"][0] > 0.5
    none_structured = score([sample(c, []) for c in completions])
    none_text = score([sample(c, "<answer>None</answer>") for c in completions])
    assert none_structured.values == none_text.values
    assert none_structured.values["ap"][2] == 1.0


MB = 1_000_000
BOX = '{"bbox_2d": [1, 2, 30, 40], "label": "cat"}'
HOSTILE = {
    "answer_tags": "<answer>" * (MB // 8),
    "answer_pairs": "<answer>```json [" * (MB // 17) + "</answer>",
    "fences": "```" * (MB // 3),
    "json_fences": "```json [{" * (MB // 10),
    "think": "<think>" * (MB // 14) + "</think>" * (MB // 16),
    "bbox_fragments": '[{"bbox_2d"' * (MB // 11),
    "bbox_label_pairs": '[{"bbox_2d": [1, 2, 3, 4], "label": "a"' * (MB // 40) + "}]",
    "malformed_fenced_list": "```json\n[" + "{'bbox_2d': [1,2,3,4], 'label': 'a'}, " * (MB // 38) + "]\n```",
    "words": "the cat " * (MB // 8),
    # json_repair's slowest inputs we found, just under the size it is still given
    "repair_braces": "```json\n" + "{" * 1020 + "\n```",
    "repair_quotes": "```json\n[" + '"a' * 510 + "]\n```",
    "nested_json": "<answer>```json\n" + "[" * MB + "\n```</answer>",
    "huge_integers": "<answer>```json\n[" + f'{{"bbox_2d": [1, 2, {"9" * 4000}, 4], "label": "cat"}},' * 200
                     + BOX + "]\n```</answer>",
    "ten_thousand_boxes": answer([{"bbox_2d": [i % 300, i % 200, i % 300 + 40, i % 200 + 50], "label": "cat"}
                                  for i in range(10_000)]),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_completion_is_scored_in_well_under_a_second(name):
    completion = HOSTILE[name]
    gt = [{"bbox_2d": [i * 20, i * 10, i * 20 + 40, i * 10 + 50], "label": "cat"} for i in range(20)]
    # CPU time, not wall time: the bound is on our work, not on a loaded machine's scheduling
    started = time.process_time()
    scores = score([sample(completion, gt, 2048)], explain=True)
    elapsed = time.process_time() - started
    assert scores.errors == [None]
    assert all(scores.values[n][0] is not None for n in ALL)
    assert elapsed < 1.0, f"{name}: {elapsed:.2f} s"


def test_thousands_of_boxes_against_thousands_of_ground_truths():
    # weighted_sum computes every (prediction, ground truth) IoU: cost grows with n_pred * n_gt
    boxes = [{"bbox_2d": [i % 500, i % 300, i % 500 + 30, i % 300 + 30], "label": "cat"} for i in range(2_000)]
    started = time.process_time()
    scores = score([sample(answer(boxes), boxes, 1)], ["weighted_sum", "repetition"])
    assert time.process_time() - started < 2.0
    assert scores.values["weighted_sum"][0] == pytest.approx(1.0)


def test_hostile_ground_truth_is_an_error_not_a_hang():
    started = time.process_time()
    scores = score([sample("x", "```json\n" + "[" * MB + "\n```", 1), sample("x", '[{"bbox_2d"' * (MB // 11), 1)])
    assert time.process_time() - started < 1.0
    assert scores.error_reasons == ["invalid_solution", "invalid_solution"]


ALL_SEVEN = ["format", "ap", "ap50", "od_length", "weighted_sum", "repetition", "cosine"]


def test_a_valid_box_with_huge_integers_is_scored_not_crashed():
    # 10**155 fits in a double, so the box is valid; multiplied as Python ints its area (1e310)
    # used to overflow against a float area and null every reward of the sample.
    big = "1" + "0" * 155
    completion = ('<think>t</think><answer>```json\n[{"bbox_2d": [0, 0, %s, %s], "label": "a"}]\n```</answer>'
                  % (big, big))
    solution = '```json\n[{"bbox_2d": [0, 0, 10.5, 10], "label": "a"}]\n```'
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings either: they would flood the logs
        scores = score_batch([{"completion": completion, "solution": solution, "completion_tokens": 5}], ALL_SEVEN)
    assert scores.errors == [None]
    values = {name: column[0] for name, column in scores.values.items()}
    assert values["format"] == 1.0 and values["weighted_sum"] == 0.0 and values["ap"] == 0.0
    assert values["od_length"] == 0.0 and values["repetition"] == 0.0 and values["cosine"] < 0


def test_a_ground_truth_box_beyond_cocos_area_range_is_refused_not_scored_minus_one():
    solution = [{"bbox_2d": [0, 0, 200_000, 60_000], "label": "a"}]  # 1.2e10 px²: pycocotools' AP would be -1
    completion = '<think>t</think><answer>```json\n[{"bbox_2d": [0, 0, 200000, 60000], "label": "a"}]\n```</answer>'
    scores = score_batch([{"completion": completion, "solution": solution}], ["ap"])
    assert scores.values["ap"] == [None] and scores.error_reasons == ["invalid_solution"]
    assert "area" in scores.errors[0] and "1e10" in scores.errors[0]


def test_a_batch_reads_each_distinct_solution_once_lists_included(monkeypatch):
    from services.reward_api.engine import scoring

    reads = []
    real = scoring.parse_solution
    monkeypatch.setattr(scoring, "parse_solution", lambda solution: reads.append(solution) or real(solution))
    box = [{"bbox_2d": [0, 0, 10, 10], "label": "cat"}]
    text = '```json\n[{"bbox_2d": [0, 0, 10, 10], "label": "cat"}]\n```'
    broken = [{"bbox_2d": [0, 0, 10], "label": "cat"}]
    samples = [{"completion": "x", "solution": s} for s in (box, [dict(box[0])], text, text, broken, broken)]
    scores = score_batch(samples, ["ap"])
    assert len(reads) == 2  # the list (its equal copy shares it) and the text; the broken list never parses
    assert scores.errors[:4] == [None] * 4
    assert scores.errors[4] == scores.errors[5] == "solution item 0: bbox_2d has 3 numbers, not 4"


def test_coalesced_requests_keep_their_own_budgets():
    """The service scores concurrent requests in one call (``request_sizes``): each request's
    json_repair time, box pairs and explain bytes are its own, so none spends another's."""
    malformed = "<think>t</think><answer>```json\n" + "1{" * 64 + "\n```</answer>"
    batch = [sample(malformed + f" {i}", gt_text([CAT])) for i in range(4)]
    v1 = [{"name": "repetition", "version": "1"}]
    # A budget that admits one repair (the first starts with time left) and no more.
    one_request = score_batch(batch, v1, repair_seconds=1e-9)
    assert [e is None for e in one_request.errors] == [True, False, False, False]
    two_requests = score_batch(batch, v1, repair_seconds=1e-9, request_sizes=[2, 2])
    assert [e is None for e in two_requests.errors] == [True, False, True, False]
    assert "REWARD_API_MAX_REPAIR_SECONDS" in two_requests.errors[1]
    assert score_batch(batch, ["repetition"], repair_seconds=1e-9).errors == [None] * 4  # version 2: no json_repair

    boxes = [sample(answer([CAT] * 3), gt_text([CAT] * 2)) for _ in range(4)]  # 6 pairs each
    assert score_batch(boxes, ["ap"], max_box_pairs=12, request_sizes=[2, 2]).errors == [None] * 4
    with pytest.raises(registry.RegistryError, match=r"samples 0\.\.2 already need more than 12"):
        score_batch(boxes, ["ap"], max_box_pairs=12)
    with pytest.raises(ValueError, match="do not add up"):
        score_batch(boxes, ["ap"], request_sizes=[3])
