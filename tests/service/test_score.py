"""POST /v1/score end to end: values known by hand, alignment, nulls, totals, ids, explain."""

from __future__ import annotations

import json
import math

import pytest

from shared.contract import ScoreResponse

CAT = {"bbox_2d": [10, 20, 110, 220], "label": "cat"}
DOG = {"bbox_2d": [300, 300, 400, 380], "label": "dog"}


def fence(items) -> str:
    return "```json\n" + json.dumps(items) + "\n```"


def completion(items, think="I look at the image.") -> str:
    return f"<think>{think}</think>\n<answer>{fence(items)}</answer>"


def solution(items) -> str:
    return f"<answer>{fence(items)}</answer>"


def post_score(client, body: dict):
    answer = client.post("/v1/score", json=body)
    assert answer.status_code == 200, answer.text
    parsed = ScoreResponse.model_validate(answer.json())
    parsed.check_aligned(len(body["samples"]))
    return parsed


def test_hand_known_values(client):
    samples = [
        {"completion": completion([CAT]), "solution": solution([CAT]), "completion_tokens": 0, "id": "exact"},
        # One right box, then a duplicate: AP stays 1 (the right one ranks first), odLength halves it.
        {"completion": completion([CAT, CAT]), "solution": solution([CAT]), "completion_tokens": 1024, "id": 7},
        {"completion": "the cat is at the top left", "solution": solution([CAT]), "completion_tokens": 8},
        {"completion": "<think>nothing</think><answer>None</answer>", "solution": "None", "completion_tokens": 0},
    ]
    got = post_score(client, {"samples": samples, "rewards": ["format", "ap", "ap50", "od_length",
                                                               "weighted_sum", "repetition", "cosine"]})
    assert got.rewards["format"] == [1.0, 1.0, 0.0, 1.0]
    assert got.rewards["ap"] == pytest.approx([1.0, 1.0, 0.0, 1.0], abs=1e-12)
    assert got.rewards["ap50"] == pytest.approx([1.0, 1.0, 0.0, 1.0], abs=1e-12)
    assert got.rewards["od_length"] == pytest.approx([1.0, 0.5, 0.0, 1.0], abs=1e-12)
    assert got.rewards["weighted_sum"][0] == pytest.approx(1.0)
    assert got.rewards["weighted_sum"][3] == pytest.approx(1.0)  # none / none
    assert got.rewards["repetition"][1] == pytest.approx(-0.5)  # two identical items
    assert got.rewards["repetition"][0] == 0.0
    assert got.rewards["cosine"][0] == pytest.approx(1.0)  # correct at L = 0
    # wrong (no boxes) at L = 8: just above -0.5 (version 2, the default: -0.5 at L = 0 rising to 0.0)
    assert got.rewards["cosine"][2] == pytest.approx(-0.5 + 0.5 * (1 - math.cos(math.pi * 8 / 1024)) / 2)
    assert got.errors == [None] * 4
    assert got.ids == ["exact", 7, None, None]
    assert got.versions == {name: "2" for name in got.rewards}
    assert got.details is None
    # default weights for an explicit reward list are 1.0 each
    for i in range(4):
        assert got.total[i] == pytest.approx(sum(got.rewards[name][i] for name in got.rewards))


def test_weights_and_aliases(client):
    samples = [{"completion": completion([CAT, CAT]), "solution": solution([CAT])}]
    got = post_score(client, {"samples": samples, "rewards": ["format", "odLength"],
                              "weights": {"format": 0.25, "odLength": 2.0}})
    assert got.rewards == {"format": [1.0], "od_length": [pytest.approx(0.5, abs=1e-12)]}
    assert got.total == [pytest.approx(0.25 * 1.0 + 2.0 * 0.5)]


def test_pinned_version(client):
    got = post_score(client, {"samples": [{"completion": completion([CAT]), "solution": solution([CAT])}],
                              "rewards": [{"name": "ap", "version": "1"}]})
    assert got.versions == {"ap": "1"} and got.rewards["ap"] == [pytest.approx(1.0, abs=1e-12)]
    # the version of cosine a wrong answer is scored by shows: 0.0 at 0 tokens in 1, -0.5 in 2
    wrong = {"completion": "<think>ok</think><answer>None</answer>", "solution": solution([CAT]),
             "completion_tokens": 0}
    got = post_score(client, {"samples": [wrong], "rewards": [{"name": "cosine", "version": "1"}]})
    assert (got.versions, got.rewards["cosine"]) == ({"cosine": "1"}, [0.0])
    got = post_score(client, {"samples": [wrong], "rewards": ["cosine"]})
    assert (got.versions, got.rewards["cosine"]) == ({"cosine": "2"}, [-0.5])


def test_unreadable_solution_is_null_and_others_are_scored(client):
    samples = [
        {"completion": completion([CAT]), "solution": "<answer>```json\n[{\"bbox_2d\": [1, 2], \"label\": \"cat\"}]\n```</answer>"},
        {"completion": completion([CAT]), "solution": [CAT]},  # structured ground truth
        {"completion": completion([CAT]), "solution": [{"bbox_2d": [1, 2, 3, 4]}]},  # no label
    ]
    got = post_score(client, {"samples": samples, "rewards": ["format", "ap"]})
    assert got.rewards["ap"] == [None, pytest.approx(1.0, abs=1e-12), None]
    assert got.rewards["format"] == [None, 1.0, None]  # a sample is scored whole or not at all
    assert got.total == [None, pytest.approx(2.0, abs=1e-12), None]
    assert got.errors[1] is None
    assert got.errors[0] and got.errors[2]


def test_default_rewards_and_weights(client):
    catalogue = client.get("/v1/rewards").json()["defaults"]
    got = post_score(client, {"samples": [{"completion": completion([CAT, DOG]), "solution": solution([CAT])}]})
    assert list(got.rewards) == catalogue["rewards"]
    expected = sum(catalogue["weights"][name] * got.rewards[name][0] for name in got.rewards)
    assert got.total[0] == pytest.approx(expected)


def test_explain_gives_details(client):
    got = post_score(client, {"samples": [{"completion": completion([CAT, DOG]), "solution": solution([CAT])}],
                              "rewards": ["ap"], "explain": True})
    assert got.details is not None and len(got.details) == 1
    assert isinstance(got.details[0], dict) and got.details[0]


def test_empty_batch(client):
    got = post_score(client, {"samples": [], "rewards": ["format", "ap"]})
    assert got.rewards == {"format": [], "ap": []} and got.total == [] and got.errors == [] and got.ids == []
