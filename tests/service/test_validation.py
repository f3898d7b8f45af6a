"""Errors of the request itself: a 4xx whose message names the field, never a 5xx."""

from __future__ import annotations

import pytest

from .test_score import CAT, completion, solution

GOOD = {"completion": completion([CAT]), "solution": solution([CAT]), "completion_tokens": 5}


def body(**fields) -> dict:
    return {"samples": [GOOD], **fields}


CASES = {
    "wrong type": ({"samples": [{**GOOD, "completion": 42}]}, "samples[0].completion"),
    "bool tokens": ({"samples": [{**GOOD, "completion_tokens": True}]}, "samples[0].completion_tokens"),
    "negative tokens": ({"samples": [{**GOOD, "completion_tokens": -1}]}, "samples[0].completion_tokens"),
    "samples not a list": ({"samples": {"a": 1}}, "samples"),
    "missing samples": ({"rewards": ["ap"]}, "samples"),
    "misspelt field": (body(reward=["ap"]), "reward"),
    "unknown reward": (body(rewards=["ap", "nope"]), "rewards"),
    "unknown version": (body(rewards=[{"name": "ap", "version": "99"}]), "rewards"),
    "reward twice": (body(rewards=["od_length", "odLength"]), "rewards"),
    "weight not requested": (body(rewards=["format"], weights={"ap": 1.0}), "weights.ap"),
    "weight a string": (body(rewards=["format"], weights={"format": "1"}), "weights.format"),
    "param wrong type": (body(rewards=["weighted_sum"], params={"weighted_sum": {"alpha": "x"}}),
                         "params.weighted_sum.alpha"),
    "unknown param": (body(rewards=["weighted_sum"], params={"weighted_sum": {"bogus": 1.0}}), "params"),
    "explain not bool": (body(explain="yes"), "explain"),
    "too many samples": ({"samples": [GOOD] * 101, "rewards": ["format"]}, "samples"),
}


@pytest.mark.parametrize("case", CASES)
def test_request_errors_name_the_field(client, case):
    request, field = CASES[case]
    answer = client.post("/v1/score", json=request)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and field in detail, detail


def test_cosine_without_tokens_lists_the_samples(client):
    samples = [GOOD, {**GOOD, "completion_tokens": None}, GOOD, {"completion": "x", "solution": "None"}]
    answer = client.post("/v1/score", json={"samples": samples, "rewards": ["cosine"]})
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert "completion_tokens" in detail and "cosine" in detail and "1, 3" in detail, detail


@pytest.mark.parametrize("raw", [b"[]", b"42", b'"samples"', b"null", b"{", b"", b"\xff\xfe{\x00",
                                 b'{"samples": [{"completion": "\xff", "solution": "None"}]}'])
def test_bodies_that_are_not_a_request_object(client, raw):
    answer = client.post("/v1/score", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"]
