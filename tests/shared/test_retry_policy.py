"""The pure retry machinery shared by both clients: backoff, URL choice, attempt plans, answers."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pytest

from shared.client import (
    AttemptPlan,
    BackoffPolicy,
    RewardRequestError,
    RewardServiceError,
    TransientFailure,
    UrlPool,
    merge_responses,
    parse_retry_after,
    read_answer,
    response_reader,
)
from shared.contract import ScoreResponse


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_full_jitter_stays_under_an_exponential_ceiling():
    assert BackoffPolicy(base=0.5, cap=3.0, rng=lambda: 1.0).jitter(1) == 0.5
    assert [BackoffPolicy(base=0.5, cap=3.0, rng=lambda: 1.0).jitter(r) for r in (2, 3, 4)] == [1.0, 2.0, 3.0]
    assert BackoffPolicy(base=0.5, cap=3.0, rng=lambda: 0.25).jitter(3) == 0.5


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), (" 0 ", 0.0), ("-2", 0.0), ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
     ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0), ("soon", None), (None, None), ("nan", None)],
)
def test_retry_after_reads_seconds_and_http_dates(header, seconds):
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=timezone.utc)
    assert parse_retry_after(header, now) == seconds


def test_pool_prefers_healthy_urls_and_waits_only_for_retry_after():
    clock = FakeClock()
    pool = UrlPool(["a", "b", "c"], clock)
    assert [pool.next_start() for _ in range(4)] == [0, 1, 2, 0]
    pool.failed(0, retry_after=None, suspect_for=5.0)
    assert pool.pick(0) == (1, 0.0)  # a is suspect: b first
    pool.failed(1, retry_after=10.0, suspect_for=1.0)
    assert pool.pick(0) == (2, 0.0)
    pool.failed(2, retry_after=None, suspect_for=1.0)
    assert pool.pick(1) == (2, 0.0)  # all failed: c and a are only suspect, b is blocked
    pool.failed(0, retry_after=4.0, suspect_for=1.0)
    pool.failed(2, retry_after=2.0, suspect_for=1.0)
    assert pool.pick(0) == (2, 2.0)  # all blocked: the soonest, and how long until then
    clock.now += 20
    assert pool.pick(1) == (1, 0.0)


def test_plan_fails_over_reports_retries_and_gives_up_with_the_story():
    clock = FakeClock()
    events = []
    plan = AttemptPlan("POST", "/v1/score", UrlPool(["http://a", "http://b"], clock),
                       BackoffPolicy(max_retries=2, base=0.0, cap=0.0), start=0, on_retry=events.append)
    first = plan.next_attempt()
    assert (first.number, first.url, first.delay) == (1, "http://a", 0.0)
    plan.failed(TransientFailure(None, "ConnectError: refused"))
    second = plan.next_attempt()
    assert (second.number, second.url) == (2, "http://b")
    plan.failed(TransientFailure(503, "HTTP 503: busy", retry_after=7.0))
    third = plan.next_attempt()
    assert third.url == "http://a"  # b asked for 7 s, a is merely suspect
    plan.failed(TransientFailure(500, "HTTP 500: boom"))
    with pytest.raises(RewardServiceError) as caught:
        plan.next_attempt()
    message = str(caught.value)
    assert "failed after 3 attempts (max_retries=2) on http://a, http://b" in message
    assert "last: http://a: HTTP 500: boom" in message and "ConnectError: refused" in message
    assert caught.value.last_status == 500
    assert [(e.attempt, e.url, e.failed.reason) for e in events] == [
        (2, "http://b", "ConnectError: refused"), (3, "http://a", "HTTP 503: busy")]


def test_plan_waits_for_retry_after_when_no_other_url_is_free():
    clock = FakeClock()
    plan = AttemptPlan("GET", "/v1/rewards", UrlPool(["http://a"], clock),
                       BackoffPolicy(max_retries=1, base=0.01, cap=0.01, rng=lambda: 1.0), start=0)
    plan.next_attempt()
    plan.failed(TransientFailure(429, "HTTP 429", retry_after=3.0))
    assert plan.next_attempt().delay == 3.0


def _answer(status: int, body=None, headers=None) -> httpx.Response:
    request = httpx.Request("POST", "http://a/v1/score")
    return httpx.Response(status, json=body, headers=headers, request=request)


def _good_body(n: int) -> dict:
    return {"rewards": {"ap": [0.5] * n}, "total": [0.5] * n, "versions": {"ap": "1"},
            "errors": [None] * n, "ids": [None] * n}


def test_answers_are_classified():
    assert read_answer(_answer(200, _good_body(2)), response_reader(2)).total == [0.5, 0.5]
    with pytest.raises(TransientFailure, match="not aligned"):
        read_answer(_answer(200, _good_body(1)), response_reader(2))
    with pytest.raises(TransientFailure) as overloaded:
        read_answer(_answer(503, {"detail": "overloaded"}, {"Retry-After": "2"}), response_reader(2))
    assert (overloaded.value.status, overloaded.value.retry_after) == (503, 2.0)
    with pytest.raises(RewardRequestError, match=r"samples.0.completion: Input should be a valid string") as bad:
        read_answer(_answer(422, {"detail": [{"loc": ["body", "samples", 0, "completion"],
                                              "msg": "Input should be a valid string"}]}), response_reader(2))
    assert bad.value.status == 422
    with pytest.raises(RewardServiceError, match="unexpected HTTP 302"):
        read_answer(_answer(302), response_reader(2))


def test_merging_chunks_scored_by_different_versions_is_refused():
    one = ScoreResponse.model_validate(_good_body(1))
    other = ScoreResponse.model_validate({**_good_body(1), "versions": {"ap": "2"}})
    assert merge_responses([one, one]).rewards == {"ap": [0.5, 0.5]}
    with pytest.raises(RewardServiceError, match="different service versions"):
        merge_responses([one, other])
