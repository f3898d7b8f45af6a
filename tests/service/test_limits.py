"""Body-size limit, hostile input and overload, over real HTTP: answered quickly, never a 5xx."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

from services.reward_api.local import LocalService

from .conftest import LIMITS
from .test_score import CAT, completion, solution

LIMIT = int(LIMITS["REWARD_API_MAX_BODY_BYTES"])
ALL = ["format", "ap", "ap50", "od_length", "weighted_sum", "repetition", "cosine"]


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (it answers 413 with Connection: close);
    one recv() may return the headers without the body."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_413_from_content_length_without_reading_the_body(server):
    # Only the headers are sent: the answer must come before (and without) the body.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + server.token.encode() + b"\r\n"
                     b"Content-Length: 1000000000000\r\n\r\n")
        head = read_until_closed(sock).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head
    assert "REWARD_API_MAX_BODY_BYTES" in head


def test_413_for_an_ordinary_large_body(client):
    answer = client.post("/v1/score", content=b" " * (LIMIT + 1), headers={"content-type": "application/json"})
    assert answer.status_code == 413


def _chunks(total: int, size: int = 256 * 1024):
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


def test_413_for_a_chunked_body_without_content_length(client):
    # A generator body goes out with Transfer-Encoding: chunked: the server must count the bytes.
    answer = client.post("/v1/score", content=_chunks(LIMIT * 3), headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert "REWARD_API_MAX_BODY_BYTES" in answer.json()["detail"]


def test_chunked_body_under_the_limit_is_scored(client):
    payload = json.dumps({"samples": [{"completion": completion([CAT]), "solution": solution([CAT])}],
                          "rewards": ["ap"]}).encode()
    answer = client.post("/v1/score", content=iter([payload[:10], payload[10:]]),
                         headers={"content-type": "application/json"})
    assert answer.status_code == 200 and answer.json()["rewards"]["ap"] == [pytest.approx(1.0, abs=1e-12)]


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def hostile_bodies() -> dict[str, bytes]:
    mb = 1024 * 1024
    items = [{"bbox_2d": [i % 500, i % 300, i % 500 + 20, i % 300 + 20], "label": "cat"} for i in range(10_000)]
    cases = {
        "repeated answer tags": "<answer>" * (mb // 8),
        "repeated closed answers": "<answer>x</answer>" * (mb // 18),
        "repeated fences": "```json" * (mb // 7),
        "fences inside an answer": "<think>" + "<answer>```json [" * (mb // 17),
        "repeated think": "<think>" * (mb // 7) + "</think><answer>None</answer>",
        "bbox_2d soup": '[{"bbox_2d": "label", ' * (mb // 22),
        "10,000 boxes": f"<think>x</think><answer>```json\n{json.dumps(items)}\n```</answer>",
        "nested brackets in a fence": "<answer>```json\n" + _nested(mb // 4) + "\n```</answer>",
        "one megabyte of words": "the cat " * (mb // 8),
    }
    bodies = {name: json.dumps({"samples": [{"completion": text, "solution": solution([CAT]), "completion_tokens": 3}],
                                "rewards": ALL}).encode() for name, text in cases.items()}
    bodies["deeply nested solution"] = (b'{"samples": [{"completion": "x", "solution": ' + _nested(100_000).encode()
                                        + b'}]}')
    bodies["deeply nested field"] = b'{"samples": [], "params": {"ap": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001 + b"}"
    bodies["solution with 10,000 boxes"] = json.dumps(
        {"samples": [{"completion": completion([CAT]), "solution": items, "completion_tokens": 3}],
         "rewards": ALL}).encode()
    bodies["NaN weight"] = b'{"samples": [], "rewards": ["ap"], "weights": {"ap": NaN}}'
    bodies["huge integer"] = b'{"samples": [{"completion": "x", "solution": "None", "completion_tokens": 1' + b"0" * 5000 + b"}]}"
    bodies["non-UTF-8 in a string"] = b'{"samples": [{"completion": "\xc3\x28\xa0\xa1", "solution": "None"}]}'
    bodies["lone surrogate escape"] = b'{"samples": [{"completion": "\\ud800", "solution": "None"}], "rewards": ["format"]}'
    return bodies


HOSTILE = hostile_bodies()
# Malformed requests are refused with a message; every other hostile body must be scored (a 413
# would prove nothing: all of them are under the limit).
REFUSED = {"deeply nested solution", "deeply nested field", "NaN weight", "huge integer",
           "non-UTF-8 in a string", "lone surrogate escape"}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_input_is_answered_quickly_without_5xx(client, name):
    start = time.perf_counter()
    answer = client.post("/v1/score", content=HOSTILE[name], headers={"content-type": "application/json"})
    elapsed = time.perf_counter() - start
    assert answer.status_code == (422 if name in REFUSED else 200), (answer.status_code, answer.text[:500])
    assert elapsed < 5.0, f"{name} took {elapsed:.1f} s"
    if answer.status_code == 200:
        body = answer.json()
        assert len(body["total"]) == 1
        assert all(v is None or -1.0 <= v <= 1.0 for values in body["rewards"].values() for v in values)
    else:
        assert answer.json()["detail"]


@pytest.fixture(scope="module")
def one_body_budget():
    """A worker whose byte budget holds exactly one whole body. Its queue wait is not 0: a probe
    that slips in before the server has read the holder's body is answered while the holder's last
    chunk waits, instead of the holder being refused."""
    env = {**LIMITS, "REWARD_API_MAX_BODY_BYTES": "1048576", "REWARD_API_MAX_QUEUED_BYTES": "1048576",
           "REWARD_API_BODY_READ_SECONDS": "30", "REWARD_API_QUEUE_WAIT_SECONDS": "2"}
    with LocalService.start(workers=1, env=env) as running:
        yield running


def test_overload_answers_503_with_retry_after_while_healthz_answers(one_body_budget):
    # Deterministic overload: an upload that has sent all but its last byte holds the whole byte
    # budget (bytes are counted as they arrive), so the next request finds no room and is refused
    # after the queue wait (2 s). A burst of real batches would depend on how fast this machine
    # scores against how fast it uploads (on a loaded CI machine every request of such a burst fit).
    server = one_body_budget
    body = json.dumps({"samples": [{"completion": completion([CAT]), "solution": solution([CAT])}],
                       "rewards": ["format", "ap"]}).encode()
    padded = body[:-1] + b" " * (1_048_576 - len(body)) + b"}"  # one whole legal body; whitespace is valid JSON
    holder = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        holder.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(padded) + padded[:-1])
        refused = None
        deadline = time.monotonic() + 10  # until the server has read what was sent
        while time.monotonic() < deadline:
            refused = httpx.post(server.url + "/v1/score", content=body,
                                 headers={"content-type": "application/json"}, timeout=10)
            if refused.status_code == 503:
                break
            time.sleep(0.05)
        assert refused is not None and refused.status_code == 503, refused.text if refused else None
        assert refused.headers["retry-after"] == LIMITS["REWARD_API_RETRY_AFTER_SECONDS"]
        detail = refused.json()["detail"]
        assert "overloaded" in detail and "REWARD_API_MAX_QUEUED_BYTES" in detail, detail
        assert refused.headers["connection"] == "close"  # what is left of its body is not read
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200  # overload is not ill health
        holder.sendall(padded[-1:])
        reply = read_until_closed_or_answered(holder)
    finally:
        holder.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    retried = httpx.post(server.url + "/v1/score", content=body, headers={"content-type": "application/json"},
                         timeout=10)
    assert retried.status_code == 200 and len(retried.json()["total"]) == 1, retried.text  # the budget is back


def read_until_closed_or_answered(sock: socket.socket) -> bytes:
    """The whole answer to one request on a kept-alive connection (headers and Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the answer's headers: {data[:300]!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    while len(rest) < lengths[0]:
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of the answer's body"
        rest += chunk
    return head + b"\r\n\r\n" + rest


def test_healthz_answers_while_batches_are_scoring(server):
    # A heavy batch: 100 samples of 10,000-item answers would be too slow; 100 samples of 15 boxes,
    # all seven rewards, keep the single batch thread busy for a while.
    boxes = [{"bbox_2d": [i, i, i + 30, i + 40], "label": "cat"} for i in range(15)]
    heavy = json.dumps({"samples": [{"completion": completion(boxes) * 20, "solution": solution(boxes),
                                     "completion_tokens": 9}] * 100, "rewards": ALL}).encode()

    async def burst():
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers(), limits=limits, timeout=60) as http:
            async def post():
                answer = await http.post("/v1/score", content=heavy, headers={"content-type": "application/json"})
                return answer, time.perf_counter()

            tasks = [asyncio.ensure_future(post()) for _ in range(24)]
            await asyncio.sleep(0.05)
            start = time.perf_counter()
            health = await http.get("/healthz")
            health_done = time.perf_counter()
            return await asyncio.gather(*tasks), health, health_done - start, health_done

    timed_answers, health, health_seconds, health_done = asyncio.run(burst())
    statuses = [answer.status_code for answer, _ in timed_answers]
    # 200, or 503 where this machine uploads faster than it scores (queue wait 0); never anything else
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 2, statuses
    # /healthz is answered while batches are still scoring, not queued behind them (the absolute cap
    # is loose: a loaded CI machine shares its 2 cores with the load generator)
    last_scored = max(done for answer, done in timed_answers if answer.status_code == 200)
    assert health.status_code == 200
    assert health_done < last_scored and health_seconds < 5.0, (health_seconds, last_scored - health_done)
