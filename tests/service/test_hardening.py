"""Issue 11's cases against the real service: each answers a clear 4xx or a correct 200 within 3 s
and a bounded memory increase of the worker, and the service stays healthy."""

from __future__ import annotations

import json
import re
import socket
import time

import httpx
import pytest

from services.reward_api.local import LocalService
from tests.support.waiting import wait_until

from .test_limits import read_until_closed
from .test_score import CAT, completion, solution

ALL = ["format", "ap", "ap50", "od_length", "weighted_sum", "repetition", "cosine"]


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


def timed(client: httpx.Client, path: str, body: dict | bytes) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = client.post(path, content=content, headers={"content-type": "application/json"})
    return answer, time.perf_counter() - start


def box(i: int, label: str = "cat") -> dict:
    return {"bbox_2d": [10, 10, 50, 50], "label": label} if i < 0 else {"bbox_2d": [i, i, i + 10, i + 10],
                                                                          "label": label}


IDENTICAL = [box(-1)] * 2500
DISTINCT_LABELS = [box(i, f"label{i}") for i in range(6000)]


@pytest.mark.parametrize(("name", "path", "body", "status"), [
    ("2,500 identical boxes, weighted_sum", "/v1/score",
     {"samples": [{"completion": completion(IDENTICAL), "solution": solution(IDENTICAL)}],
      "rewards": ["weighted_sum"]}, 200),
    ("2,500 identical boxes, evaluate", "/v1/evaluate",
     {"images": [{"completion": completion(IDENTICAL), "solution": IDENTICAL}]}, 200),
    ("6,000 boxes of 6,000 labels, ap", "/v1/score",
     {"samples": [{"completion": completion(DISTINCT_LABELS[:1000]), "solution": solution(DISTINCT_LABELS[:1000])}],
      "rewards": ["ap", "od_length"]}, 200),
    ("6,000 predictions of 6,000 labels, evaluate", "/v1/evaluate",
     {"images": [{"completion": completion(DISTINCT_LABELS), "solution": DISTINCT_LABELS[:1000]}],
      "categories": [b["label"] for b in DISTINCT_LABELS[:1000]]}, 200),
    ("50,001 categories", "/v1/evaluate",
     {"images": [{"completion": completion([CAT]), "solution": [CAT]}],
      "categories": ["cat"] + [f"c{i}" for i in range(50_000)]}, 422),
    ("a ground truth over the box budget", "/v1/evaluate",
     {"images": [{"completion": completion([CAT]), "solution": [CAT] * 10_001}]}, 422),
])
def test_the_issues_memory_cases_are_bounded(server, client, name, path, body, status):
    before = peak_rss(server.process.pid)
    answer, elapsed = timed(client, path, body)
    grown = peak_rss(server.process.pid) - before
    assert answer.status_code == status, answer.text[:500]
    assert elapsed < 3.0, f"{name}: {elapsed:.1f} s"
    assert grown < 150e6, f"{name}: the worker's peak memory grew by {grown / 1e6:.0f} MB"
    if status == 422:
        assert "limit" in answer.json()["detail"]
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_weighted_sum_of_identical_boxes_is_right(client):
    answer, _ = timed(client, "/v1/score", {"samples": [{"completion": completion(IDENTICAL),
                                                         "solution": solution(IDENTICAL)}],
                                            "rewards": ["weighted_sum"]})
    assert answer.json()["rewards"]["weighted_sum"] == [1.0]


def test_a_ground_truth_over_the_box_budget_is_not_scored_and_says_why(client):
    answer, _ = timed(client, "/v1/score", {"samples": [{"completion": completion([CAT]), "solution": [CAT] * 10_001}],
                                            "rewards": ["ap"]})
    assert answer.status_code == 200
    assert answer.json()["rewards"]["ap"] == [None]
    assert "10001 boxes, more than the limit of 10000" in answer.json()["errors"][0]


# ---------------------------------------------------------------- no input reaches a 500


def test_an_id_beyond_64_bits_is_echoed_exactly(client):
    body = b'{"samples": [{"completion": "x", "solution": "None", "id": 123456789012345678901234567890}], ' \
           b'"rewards": ["format"]}'
    answer, _ = timed(client, "/v1/score", body)
    assert answer.status_code == 200, answer.text
    assert b"123456789012345678901234567890" in answer.content
    assert answer.json()["ids"] == [123456789012345678901234567890]


def test_a_lone_surrogate_label_is_answered_not_a_500(client):
    # The completion is valid text; the JSON inside it spells a label as the escape \ud800.
    text = '<think>x</think><answer>```json\n[{"bbox_2d": [10, 20, 110, 220], "label": "\\ud800"}]\n```</answer>'
    evaluated, _ = timed(client, "/v1/evaluate", {"images": [{"completion": text, "solution": [CAT]}]})
    assert evaluated.status_code == 200, evaluated.text
    assert evaluated.json()["unknown_labels"] == {"\ud800": 1}
    explained, _ = timed(client, "/v1/score", {"samples": [{"completion": text, "solution": solution([CAT])}],
                                               "rewards": ["ap"], "explain": True})
    assert explained.status_code == 200, explained.text
    assert explained.json()["details"][0]["completion"]["items"][0]["label"] == "\ud800"


def test_a_client_that_disconnects_mid_upload_is_no_500(server):
    def answered(status: str) -> float:
        text = httpx.get(server.url + "/metrics").text
        pattern = r'^reward_api_requests_total\{[^}]*status="' + status + r'"[^}]*\} (\S+)$'
        return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))

    errors_before, closed_before = answered(r"5\d\d"), answered("499")
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Authorization: Bearer " + server.token.encode() + b"\r\n"
                         b"Content-Length: 100000\r\n\r\n" + b"{" * 1000)
            time.sleep(0.1)
    # Each cut upload is counted once the service notices the disconnect: on its own clock.
    wait_until(lambda: answered("499") >= closed_before + 3, 10, "the 3 cut uploads to be counted as 499",
               interval=0.1)
    assert answered(r"5\d\d") == errors_before
    assert "Traceback" not in server.log()


# ---------------------------------------------------------------- overflow: a clear 422 or a finite value


def test_weights_that_overflow_the_total_are_a_422(client):
    sample = {"completion": completion([CAT]), "solution": solution([CAT])}
    answer, _ = timed(client, "/v1/score", {"samples": [sample], "rewards": ["format", "ap"],
                                            "weights": {"format": 1e308, "ap": 1e308}})
    assert answer.status_code == 422 and "overflow" in answer.json()["detail"]


@pytest.mark.parametrize("params", [
    {"alpha": 1e308, "beta": 1e308, "gamma": 1e308},
    {"alpha": 1e308, "beta": 0, "gamma": 1e308},
    {"alpha": 1e308, "beta": 1e308, "gamma": 0.3},
])
def test_weighted_sum_parameters_near_the_double_range_give_finite_values(server, client, params):
    sample = {"completion": completion([CAT]), "solution": solution([CAT]), "completion_tokens": 5}
    answer, _ = timed(client, "/v1/score", {"samples": [sample], "rewards": ["weighted_sum", "cosine"],
                                            "params": {"weighted_sum": params}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["rewards"]["weighted_sum"] == [1.0]  # a perfect answer, whatever the weights
    assert answer.json()["total"][0] is not None
    sums = re.findall(r'^reward_api_reward_value_sum\{reward="weighted_sum"\} (\S+)$',
                      httpx.get(server.url + "/metrics").text, re.MULTILINE)
    assert sums and all(s not in ("NaN", "+Inf", "-Inf") for s in sums)


def test_an_empty_reward_list_is_a_422(client):
    answer, _ = timed(client, "/v1/score", {"samples": [{"completion": "x", "solution": "None"}], "rewards": []})
    assert answer.status_code == 422 and "rewards" in answer.json()["detail"]


# ---------------------------------------------------------------- amplification and headers


def test_explain_output_is_bounded():
    many = [box(i) for i in range(300)]
    samples = [{"completion": completion(many), "solution": solution([CAT])}] * 40
    with LocalService.start(env={"REWARD_API_MAX_EXPLAIN_BYTES": "200000", "REWARD_API_LOG_LEVEL": "warning"}) as small:
        answer = httpx.post(small.url + "/v1/score", json={"samples": samples, "rewards": ["ap"], "explain": True},
                            timeout=30)
        assert answer.status_code == 422
        assert "REWARD_API_MAX_EXPLAIN_BYTES" in answer.json()["detail"]
        fits = httpx.post(small.url + "/v1/score", json={"samples": samples[:1], "rewards": ["ap"], "explain": True})
        assert fits.status_code == 200 and len(fits.content) < 200_000


def test_oversized_headers_get_431_at_once(server):
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 * 1024 * 1024) + b"\r\n\r\n")
        except OSError:
            pass  # the server may close while we still send: it answered first
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"REWARD_API_MAX_HEADER_BYTES" in answer
    assert time.perf_counter() - start < 3.0
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_an_h2c_upgrade_offer_keeps_the_body(server):
    body = json.dumps({"samples": [{"completion": completion([CAT]), "solution": solution([CAT])}],
                       "rewards": ["format"]}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\n"
                     b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
                     b"Authorization: Bearer " + server.token.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                     + body)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b'"format":[1.0]' in answer


def test_the_matching_work_of_a_request_is_bounded(client):
    # 10,000 x 10,000 identical boxes: 100 million pairs, twice the default budget: refused at once.
    items = [box(-1)] * 10_000
    answer, elapsed = timed(client, "/v1/score", {"samples": [{"completion": completion(items), "solution": items}],
                                                  "rewards": ["weighted_sum"]})
    assert answer.status_code == 422 and "REWARD_API_MAX_BOX_PAIRS" in answer.json()["detail"]
    assert elapsed < 3.0


def test_trimming_end_tokens_is_linear_and_unchanged():
    import random

    from shared.contract import END_TOKENS, trim_end_tokens

    def reference(text: str) -> str:  # the former definition, quadratic
        while True:
            stripped = text.rstrip()
            token = next((t for t in END_TOKENS if stripped.endswith(t)), None)
            if token is None:
                return text
            text = stripped[: -len(token)]

    rng = random.Random(11)
    for _ in range(3000):
        text = "".join(rng.choice(["x", " ", "\n", "<", "/s>", *END_TOKENS]) for _ in range(rng.randint(0, 12)))
        assert trim_end_tokens(text) == reference(text), repr(text)
    start = time.perf_counter()
    assert trim_end_tokens("<answer>None</answer>" + "</s>" * 400_000) == "<answer>None</answer>"  # 1.6 MB
    assert time.perf_counter() - start < 1.0
    import doctest

    from shared import contract

    assert doctest.testmod(contract).failed == 0


def test_json_repair_time_is_a_request_budget(client):
    """json_repair takes ~0.35 s on a 1 KB block of "1{" (issue 11: 16 such samples took 5-6 s,
    4,096 could take 24 minutes). Past the request's REWARD_API_MAX_REPAIR_SECONDS (1 s), a sample
    needing a repair is not scored (null and a message), never scored differently. Only repetition
    version 1 repairs with json_repair; version 2's own repair is linear and needs no budget."""
    slow = "<think>x</think><answer>```json\n" + "1{" * 512 + "\n```</answer>"
    # 100 of them: ~35 s unbounded, so the loose cap below (a loaded 2-core CI machine) still catches it
    samples = [{"completion": slow + f" {i}", "solution": solution([CAT])} for i in range(100)]
    answer, elapsed = timed(client, "/v1/score", {"samples": samples,
                                                  "rewards": [{"name": "repetition", "version": "1"}, "format"]})
    assert answer.status_code == 200, answer.text[:300]
    assert elapsed < 8.0, f"{elapsed:.1f} s"
    body = answer.json()
    unscored = [i for i, e in enumerate(body["errors"]) if e is not None]
    assert unscored and "REWARD_API_MAX_REPAIR_SECONDS" in body["errors"][unscored[0]]
    assert all(body["rewards"]["repetition"][i] is None for i in unscored)
    scored = [v for v in body["rewards"]["repetition"] if v is not None]
    assert scored and all(v == scored[0] for v in scored)  # those scored, scored as ever

    answer, elapsed = timed(client, "/v1/score", {"samples": samples, "rewards": ["repetition", "format"]})
    assert answer.status_code == 200 and elapsed < 8.0, (answer.text[:300], elapsed)
    assert answer.json()["versions"]["repetition"] == "2" and not any(answer.json()["errors"])
