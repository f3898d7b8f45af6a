"""POST /v1/openrlhf: OpenRLHF's remote reward model protocol."""

from __future__ import annotations

import pytest

from shared.contract import OpenRLHFResponse

from .test_score import CAT, DOG, completion, solution

PROMPT = "<|im_start|>user\nFind the cat.<|im_end|>\n<|im_start|>assistant\n"


def post(client, body: dict):
    return client.post("/v1/openrlhf", json=body)


def test_rewards_are_the_weighted_default_total(client):
    defaults = client.get("/v1/rewards").json()["defaults"]
    queries = [PROMPT + completion([CAT]) + "<|im_end|>\n<|endoftext|>",  # trailing tokens trimmed
               PROMPT + completion([CAT, DOG]),
               PROMPT + "no idea"]
    answer = post(client, {"query": queries, "prompts": [PROMPT] * 3, "labels": [solution([CAT])] * 3})
    assert answer.status_code == 200, answer.text
    got = OpenRLHFResponse.model_validate(answer.json())
    assert set(got.extra_logs) == set(defaults["rewards"])
    assert got.extra_logs["format"] == [1.0, 1.0, 0.0]  # format would be 0 had the tokens been kept
    for i in range(3):
        expected = sum(defaults["weights"][name] * got.extra_logs[name][i] for name in got.extra_logs)
        assert got.rewards[i] == pytest.approx(expected)
    assert got.scores == got.rewards
    assert got.rewards[0] > got.rewards[2]


def test_same_values_as_score(client):
    text = completion([CAT, DOG])
    via_openrlhf = post(client, {"query": [PROMPT + text], "prompts": [PROMPT], "labels": [solution([CAT])]}).json()
    via_score = client.post("/v1/score", json={"samples": [{"completion": text, "solution": solution([CAT])}]}).json()
    assert via_openrlhf["rewards"] == via_score["total"]
    assert via_openrlhf["extra_logs"] == via_score["rewards"]


def test_empty_lists(client):
    answer = post(client, {"query": [], "prompts": [], "labels": []})
    assert answer.status_code == 200
    assert answer.json()["rewards"] == [] and answer.json()["scores"] == []


def test_unscorable_sample_refuses_the_batch(client):
    answer = post(client, {"query": [PROMPT + completion([CAT])] * 2, "prompts": [PROMPT] * 2,
                           "labels": [solution([CAT]), "<answer>```json\n[{\"bbox_2d\": [1]}]\n```</answer>"]})
    assert answer.status_code == 422
    assert "labels[1]" in answer.json()["detail"]


@pytest.mark.parametrize("body, field", [
    ({"query": ["a"], "prompts": [], "labels": ["None"]}, "same length"),
    ({"query": ["zzz"], "prompts": ["a"], "labels": ["None"]}, "query[0]"),
    ({"query": [1], "prompts": ["a"], "labels": ["None"]}, "query[0]"),
    ({"query": ["a"], "prompts": ["a"]}, "labels"),
])
def test_request_errors(client, body, field):
    answer = post(client, body)
    assert answer.status_code == 422
    assert field in answer.json()["detail"]
