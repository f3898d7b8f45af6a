"""RewardClient and AsyncRewardClient against real servers that fail on purpose.

Successful answers come from the real reward service (proxied by the faulty server), so every
"success" is compared with what the service says when asked directly. Requests are counted on the
server side.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from shared.client import AsyncRewardClient, RewardClient, RewardRequestError, RewardServiceError
from tests.shared.conftest import FAST, direct_score
from tests.shared.faulty_server import Drop, Hang, Proxy, Reply, Trickle, short_lists

REWARDS = ["format", "ap", "od_length"]
BUSY = Reply(503, {"detail": "overloaded"}, {"Retry-After": "0"})


def expected(service, samples):
    return direct_score(service, samples, rewards=REWARDS)


def as_dict(response) -> dict:
    return response.model_dump(exclude={"details"})


def without_details(answer: dict) -> dict:
    return {key: value for key, value in answer.items() if key != "details"}


# ------------------------------------------------------------------------------------ sync


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param([BUSY, BUSY], id="503-with-retry-after"),
        pytest.param([Reply(429, {"detail": "slow down"}), Reply(500, {"detail": "boom"})], id="429-then-500"),
        pytest.param([Drop(), Drop()], id="dropped-connections"),
        pytest.param([Proxy(edit=short_lists)], id="short-list"),
        pytest.param([Reply(200, {"not": "a score answer"})], id="wrong-shape"),
    ],
)
def test_transient_faults_are_retried_then_the_service_answer_is_returned(service, faulty, samples, faults):
    retries = []
    faulty.script("/v1/score", *faults)
    with RewardClient(faulty.url, on_retry=retries.append, **FAST) as client:
        response = client.score(samples, rewards=REWARDS)
    assert as_dict(response) == without_details(expected(service, samples))
    assert len(faulty.seen("/v1/score")) == len(faults) + 1
    assert len(retries) == client.retry_count == len(faults)


def test_a_request_past_the_timeout_is_retried(service, faulty, samples):
    # 2 s: far below the hang, far above what the retry (a real scoring call) takes on a loaded machine
    faulty.script("/v1/score", Hang(seconds=30))
    with RewardClient(faulty.url, **{**FAST, "timeout": 2.0}) as client:
        response = client.score(samples, rewards=REWARDS)
    assert as_dict(response) == without_details(expected(service, samples))
    assert client.retry_count == 1


def test_retry_after_is_honoured(faulty, samples):
    faulty.script("/v1/score", Reply(503, {"detail": "overloaded"}, {"Retry-After": "1"}))
    with RewardClient(faulty.url, **FAST) as client:
        started = time.monotonic()
        client.score(samples[:2], rewards=REWARDS)
    assert time.monotonic() - started >= 0.95  # the backoff alone would be milliseconds


def test_fails_over_from_a_dead_url_to_a_live_one(service, faulty, dead_url, samples):
    retries = []
    with RewardClient([dead_url, faulty.url], on_retry=retries.append, **FAST) as client:
        response = client.score(samples, rewards=REWARDS)
    assert as_dict(response) == without_details(expected(service, samples))
    assert len(faulty.seen("/v1/score")) == 1
    assert [(event.failed.url, event.url) for event in retries] == [(dead_url, faulty.url)]
    assert "ConnectError" in retries[0].failed.reason


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        pytest.param(Reply(422, {"detail": "rewards.0: unknown reward 'apx'"}), "unknown reward 'apx'", id="422"),
        pytest.param(Reply(401, {"detail": "missing bearer token"}), "missing bearer token", id="401"),
        pytest.param(Reply(413, {"detail": "body larger than 32 MiB"}), "larger than 32 MiB", id="413"),
    ],
)
def test_client_errors_are_not_retried(faulty, samples, fault, message):
    faulty.script("/v1/score", fault)
    with RewardClient(faulty.url, **FAST) as client, pytest.raises(RewardRequestError, match=message) as caught:
        client.score(samples, rewards=REWARDS)
    assert caught.value.status == fault.status
    assert len(faulty.seen("/v1/score")) == 1
    assert client.retry_count == 0


def test_the_services_own_refusal_is_raised_with_its_message(faulty, samples):
    with RewardClient(faulty.url, **FAST) as client, pytest.raises(RewardRequestError) as caught:
        client.score(samples, rewards=["no_such_reward"])
    assert caught.value.status == 422 and "no_such_reward" in str(caught.value)
    assert len(faulty.seen("/v1/score")) == 1


def test_a_sample_that_is_wrong_here_is_refused_before_sending(faulty):
    with RewardClient(faulty.url, **FAST) as client, pytest.raises(RewardRequestError, match="solution"):
        client.score([{"completion": "x"}])
    assert faulty.seen() == []


def test_short_lists_every_time_end_in_an_error(faulty, samples):
    faulty.default = Proxy(edit=short_lists)
    with RewardClient(faulty.url, **{**FAST, "max_retries": 2}) as client, pytest.raises(RewardServiceError) as caught:
        client.score(samples, rewards=REWARDS)
    assert not isinstance(caught.value, RewardRequestError)
    assert "not aligned with the 10 samples" in str(caught.value)
    assert len(faulty.seen("/v1/score")) == 3


def test_an_exhausted_retry_budget_says_what_failed_where_and_how_often(faulty, dead_url, samples):
    faulty.default = Reply(503, {"detail": "still overloaded"})
    with RewardClient([dead_url, faulty.url], **{**FAST, "max_retries": 3}) as client, \
            pytest.raises(RewardServiceError) as caught:
        client.score(samples, rewards=REWARDS)
    message = str(caught.value)
    assert "POST /v1/score failed after 4 attempts (max_retries=3)" in message
    assert dead_url in message and faulty.url in message
    assert "ConnectError" in message and "HTTP 503: still overloaded" in message
    assert len(caught.value.attempts) == 4
    assert len(faulty.seen("/v1/score")) == 2  # the other two went to the dead URL


def test_large_batches_are_split_spread_and_merged_in_order(service, faulty, faulty_b, samples):
    faulty_b.script("/v1/score", BUSY)  # one chunk fails once on the way
    with RewardClient([faulty.url, faulty_b.url], max_batch_size=3, **FAST) as client:
        response = client.score(samples, rewards=REWARDS)
    assert as_dict(response) == without_details(expected(service, samples))
    assert response.ids == [f"s{i}" for i in range(10)]
    chunks = [len(r.json()["samples"]) for r in faulty.seen("/v1/score") + faulty_b.seen("/v1/score")]
    assert sorted(chunks) == [1, 3, 3, 3, 3]  # 4 chunks + 1 retry, none larger than 3
    assert faulty.seen("/v1/score") and faulty_b.seen("/v1/score")


def test_explain_details_survive_the_merge(service, faulty, samples):
    with RewardClient(faulty.url, max_batch_size=4, **FAST) as client:
        response = client.score(samples[:6], rewards=["ap"], explain=True)
    assert response.details == direct_score(service, samples[:6], rewards=["ap"], explain=True)["details"]


def test_an_empty_batch_gets_the_services_empty_answer(faulty):
    with RewardClient(faulty.url, **FAST) as client:
        response = client.score([], rewards=["ap"])
    assert response.total == [] and response.rewards == {"ap": []}


def test_catalogue_health_token_and_evaluate(service, faulty, dead_url):
    payload = {"images": [{"completion": "x", "solution": "None"}] * 3}
    evaluation = httpx.post(service.url + "/v1/evaluate", json=payload).json()
    faulty.script("/v1/evaluate", BUSY)
    with RewardClient([faulty.url, dead_url], token="s3cret", **FAST) as client:
        assert client.rewards_catalogue() == direct_catalogue(service)
        assert client.health() == {faulty.url: True, dead_url: False}
        assert client.evaluate(payload) == evaluation
    evaluated = faulty.seen("/v1/evaluate")
    assert [r.json() for r in evaluated] == [payload, payload]  # retried, never split
    assert all(r.headers["authorization"] == "Bearer s3cret" for r in faulty.seen())


def test_evaluate_does_not_retry_a_refusal(faulty):
    faulty.script("/v1/evaluate", Reply(422, {"detail": "samples: field required"}))
    with RewardClient(faulty.url, **FAST) as client, pytest.raises(RewardRequestError, match="field required"):
        client.evaluate({})
    assert len(faulty.seen("/v1/evaluate")) == 1


def direct_catalogue(service) -> dict:
    import httpx

    return httpx.get(service.url + "/v1/rewards").json()


# ------------------------------------------------------------------------------------ async


def run(coroutine):
    return asyncio.run(coroutine)


def test_async_retries_then_returns_the_service_answer(service, faulty, samples):
    faulty.script("/v1/score", BUSY, Drop(), Proxy(edit=short_lists))

    async def go():
        async with AsyncRewardClient(faulty.url, **FAST) as client:
            return await client.score(samples, rewards=REWARDS), client.retry_count

    response, retries = run(go())
    assert as_dict(response) == without_details(expected(service, samples))
    assert retries == 3 and len(faulty.seen("/v1/score")) == 4


def test_async_fails_over_and_does_not_retry_client_errors(service, faulty, dead_url, samples):
    async def go():
        async with AsyncRewardClient([dead_url, faulty.url], **FAST) as client:
            good = await client.score(samples, rewards=REWARDS)
            faulty.script("/v1/score", Reply(422, {"detail": "weights.ap: not a number"}))
            with pytest.raises(RewardRequestError, match="weights.ap"):
                await client.score(samples, rewards=REWARDS)
            return good

    assert as_dict(run(go())) == without_details(expected(service, samples))
    assert len(faulty.seen("/v1/score")) == 2


def test_async_gives_up_with_the_story(faulty, dead_url, samples):
    faulty.default = Drop()

    async def go():
        async with AsyncRewardClient([faulty.url, dead_url], **{**FAST, "max_retries": 2}) as client:
            await client.score(samples, rewards=REWARDS)

    with pytest.raises(RewardServiceError, match=r"failed after 3 attempts") as caught:
        run(go())
    assert "RemoteProtocolError" in str(caught.value) and "ConnectError" in str(caught.value)


def test_async_chunks_go_out_concurrently_to_all_urls_and_merge_in_order(service, faulty, faulty_b, samples):
    # Every answer takes 1 s: one after the other, the 5 chunks (and a retry) would take over 5 s;
    # concurrently about 2 s (a busy answer, then its retry).
    faulty.default = faulty_b.default = Proxy(delay=1.0)
    faulty_b.script("/v1/score", BUSY)  # and one chunk fails once on the way

    async def go():
        async with AsyncRewardClient([faulty.url, faulty_b.url], max_batch_size=2, **FAST) as client:
            return await client.score(samples, rewards=REWARDS)

    started = time.monotonic()
    response = run(go())
    assert time.monotonic() - started < 4.0
    assert as_dict(response) == without_details(expected(service, samples))
    assert response.ids == [f"s{i}" for i in range(10)]
    sizes = [len(r.json()["samples"]) for r in faulty.seen("/v1/score") + faulty_b.seen("/v1/score")]
    assert sorted(sizes) == [2] * 6  # 5 chunks + 1 retry
    assert faulty.seen("/v1/score") and faulty_b.seen("/v1/score")


def test_async_catalogue_health_evaluate(service, faulty, dead_url):
    payload = {"images": [{"completion": "x", "solution": "None"}]}
    faulty.script("/v1/evaluate", Drop())

    async def go():
        async with AsyncRewardClient([faulty.url, dead_url], **FAST) as client:
            return await client.rewards_catalogue(), await client.health(), await client.evaluate(payload)

    catalogue, health, evaluation = run(go())
    assert catalogue == direct_catalogue(service)
    assert health == {faulty.url: True, dead_url: False}
    assert evaluation == httpx.post(service.url + "/v1/evaluate", json=payload).json()


# ------------------------------------------------------------------------------------ deadlines, strict answers

GOOD = {"rewards": {"ap": [0.5]}, "total": [0.5], "versions": {"ap": "1"}, "errors": [None], "ids": [None]}
ONE = [{"completion": "x", "solution": "None"}]


def test_a_trickled_answer_is_cut_off_at_the_attempt_timeout_then_retried(faulty):
    faulty.script("/v1/score", Trickle(Reply(200, GOOD), interval=0.1), Reply(200, GOOD))
    started = time.monotonic()
    with RewardClient(faulty.url, **{**FAST, "timeout": 1.0}) as client:
        answer = client.score(ONE, rewards=["ap"])
    assert answer.total == [0.5]
    assert time.monotonic() - started < 6.0  # not the ~15 s the trickle would take (loose: a loaded CI machine)


def test_the_call_deadline_bounds_everything_retries_included(faulty):
    faulty.script("/v1/score", *[Trickle(Reply(200, GOOD), interval=0.1)] * 25)
    started = time.monotonic()
    with RewardClient(faulty.url, **{**FAST, "timeout": 0.6, "deadline": 1.5, "max_retries": 20}) as client:
        with pytest.raises(RewardServiceError, match="within the attempt"):
            client.score(ONE, rewards=["ap"])
    assert time.monotonic() - started < 6.0  # ignoring the deadline, 21 attempts would take over 10 s


def test_async_trickle_is_cut_off_too(faulty):
    faulty.script("/v1/score", *[Trickle(Reply(200, GOOD), interval=0.1)] * 25)

    async def go():
        async with AsyncRewardClient(faulty.url, **{**FAST, "timeout": 0.5, "deadline": 1.2, "max_retries": 20}) as client:
            return await client.score(ONE, rewards=["ap"])

    started = time.monotonic()
    with pytest.raises(RewardServiceError):
        run(go())
    assert time.monotonic() - started < 6.0  # ignoring the deadline, 21 attempts would take over 10 s


@pytest.mark.parametrize("header", ["3600", "1e308"])
def test_a_huge_retry_after_is_capped_and_never_outlives_the_deadline(faulty, header):
    faulty.script("/v1/score", Reply(503, {"detail": "busy"}, {"Retry-After": header}))
    started = time.monotonic()
    with RewardClient(faulty.url, **{**FAST, "max_retry_after": 0.3}) as client:
        assert client.score(ONE, rewards=["ap"]).rewards == {"ap": [0.0]}  # waited 0.3 s, then the service
    assert 0.25 < time.monotonic() - started < 3
    faulty.script("/v1/score", Reply(503, {"detail": "busy"}, {"Retry-After": header}))
    with RewardClient(faulty.url, **{**FAST, "deadline": 1.0}) as client:
        with pytest.raises(RewardServiceError, match="deadline"):
            client.score(ONE, rewards=["ap"])  # a 30 s wait cannot end within 1 s: raised at once


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        ({"total": [float("nan")]}, "finite"),
        ({"rewards": {"ap": [float("inf")]}}, "finite"),
        ({"total": ["0.5"]}, "number"),
        ({"rewards": {"ap": [True]}}, "number"),
        ({"versions": {"ap": "2"}}, "pinned"),
        ({"rewards": {"format": [1.0]}, "versions": {"format": "1"}}, "lacks"),
    ],
)
def test_answers_outside_the_contract_are_never_returned(faulty, edit, why):
    bad = {**GOOD, **edit}
    body = json.dumps(bad).encode()  # NaN/Infinity as Python's json writes them
    faulty.script("/v1/score", *[Reply(200, json.loads(body))] * 3)
    with RewardClient(faulty.url, **{**FAST, "max_retries": 2}) as client:
        with pytest.raises(RewardServiceError, match="invalid body") as raised:
            client.score(ONE, rewards=[{"name": "ap", "version": "1"}])
    assert len(raised.value.attempts) == 3
    assert why in str(raised.value).lower() or why in " ".join(a.reason.lower() for a in raised.value.attempts)


def test_client_settings_come_from_one_place():
    env = {"REWARD_API_URL": "http://a:1,http://b:2", "REWARD_API_TOKEN": "t", "REWARD_API_TIMEOUT": "7",
           "REWARD_API_DEADLINE": "30", "REWARD_API_MAX_RETRIES": "1"}
    with RewardClient.from_env(env) as client:
        assert client.base_urls == ["http://a:1", "http://b:2"]
        assert (client.timeout, client.deadline, client.policy.max_retries) == (7.0, 30.0, 1)
    with pytest.raises(ValueError, match="REWARD_API_.*timeout"):
        RewardClient.from_env({"REWARD_API_TIMEOUT": "soon"})
