"""Admission: a slot is taken only once the body is in, a body must arrive within its deadline,
and requests beyond the queued-samples budget wait for room instead of being refused."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

from services.reward_api.local import LocalService

from .test_score import CAT, completion, solution


@pytest.fixture(scope="module")
def tight():
    env = {"REWARD_API_BODY_READ_SECONDS": "2", "REWARD_API_MAX_QUEUED_SAMPLES": "20",
           "REWARD_API_MAX_BODY_BYTES": "1048576", "REWARD_API_MAX_QUEUED_BYTES": "1048576",
           "REWARD_API_QUEUE_WAIT_SECONDS": "30", "REWARD_API_LOG_LEVEL": "warning"}
    with LocalService.start(workers=1, env=env) as running:
        yield running


def stalled_upload(server: LocalService) -> socket.socket:
    """Headers of a 1 MB body (the whole byte budget, were it reserved from Content-Length), then
    one byte of it, then nothing."""
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    conn.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000000\r\n\r\n{")
    return conn


def read_until_closed(conn: socket.socket) -> str:
    reply = b""
    while chunk := conn.recv(4096):
        reply += chunk
    return reply.decode(errors="replace")


def one_sample() -> dict:
    return {"samples": [{"completion": completion([CAT]), "solution": solution([CAT])}], "rewards": ["format", "ap"]}


def test_stalled_uploads_block_no_one_and_are_cut_off(tight):
    stalled = [stalled_upload(tight) for _ in range(24)]  # 3x the old 8-slot limit
    try:
        time.sleep(0.3)
        start = time.perf_counter()
        answer = httpx.post(tight.url + "/v1/score", json=one_sample(), timeout=10)
        assert answer.status_code == 200 and time.perf_counter() - start < 2.0, answer.text
        replies = [read_until_closed(conn) for conn in stalled]  # after the 2 s deadline
    finally:
        for conn in stalled:
            conn.close()
    assert all(r.startswith("HTTP/1.1 408") and "REWARD_API_BODY_READ_SECONDS" in r for r in replies), replies[0]
    assert "POST /v1/score answered 408" in tight.log()


def test_requests_beyond_the_budgets_wait_instead_of_503(tight):
    body = json.dumps({"samples": [{"completion": completion([CAT]) * 30, "solution": solution([CAT])}] * 10,
                       "rewards": ["format", "ap", "od_length", "repetition"]})

    async def burst():
        async with httpx.AsyncClient(base_url=tight.url, timeout=60) as client:
            posts = [client.post("/v1/score", content=body, headers={"content-type": "application/json"})
                     for _ in range(40)]  # 400 samples against a budget of 20, 1.5 MB against 1 MiB
            return await asyncio.gather(*posts)

    answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200] * 40
    assert all(len(a.json()["total"]) == 10 for a in answers)


# ---------------------------------------------------------------- the budget itself (no server)

from services.reward_api.routers.deps import Budget, Overloaded  # noqa: E402


def test_budget_grants_in_arrival_order_and_times_out_with_its_name():
    async def scenario():
        budget = Budget("samples (X)", capacity=10, wait_seconds=30)
        order = []
        first = await budget.take(8)

        async def waiter(name, amount):
            await budget.take(amount)
            order.append(name)

        big = asyncio.ensure_future(waiter("big", 9))  # waits for room
        await asyncio.sleep(0)
        small = asyncio.ensure_future(waiter("small", 1))  # would fit now, but arrived later: waits its turn
        for _ in range(5):
            await asyncio.sleep(0)
        assert order == [] and budget.used == 8
        budget.give(first)
        await asyncio.gather(big, small)
        assert order == ["big", "small"] and budget.used == 10
        budget.wait_seconds = 0.05
        with pytest.raises(Overloaded) as refused:
            await budget.take(1)
        assert refused.value.what == "samples (X)" and budget.used == 10

    asyncio.run(scenario())


def test_the_rest_of_a_half_read_body_goes_before_new_requests():
    # A new request waiting for room must not block the body that holds most of the budget: that
    # body can only free its bytes once it is in (before, both waited a whole queue wait).
    async def scenario():
        budget = Budget("bytes", capacity=10, wait_seconds=5)
        body = await budget.take(6)  # a body's first chunks
        newcomer = asyncio.ensure_future(budget.take(5))  # waits: 6 + 5 > 10
        await asyncio.sleep(0)
        body += await budget.take(3, wait_seconds=0, holder=True)  # its next chunk: at once, past the queue
        other = await budget.take(1, wait_seconds=0, holder=True)  # another half-read body: 10 of 10
        rest = asyncio.ensure_future(budget.take(2, holder=True))  # no room: waits, but at the head
        await asyncio.sleep(0)
        budget.give(other)  # 9 used: the head (2 more for a half-read body) does not fit yet
        await asyncio.sleep(0)
        assert not rest.done() and not newcomer.done()
        budget.give(body)  # the half-read body is in and answered: 0 used
        assert await rest == 2 and await newcomer == 5 and budget.used == 7

    asyncio.run(scenario())


def test_a_request_larger_than_the_budget_runs_alone():
    async def scenario():
        budget = Budget("bytes", capacity=10, wait_seconds=1)
        taken = await budget.take(50)
        assert taken == 10 and budget.used == 10
        budget.give(taken)
        assert budget.used == 0

    asyncio.run(scenario())


def test_a_waiter_that_gives_up_leaves_no_trace():
    async def scenario():
        budget = Budget("bytes", capacity=4, wait_seconds=5)
        held = await budget.take(4)
        gone = asyncio.ensure_future(budget.take(2))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        budget.give(held)
        assert budget.used == 0 and await budget.take(4) == 4

    asyncio.run(scenario())


def test_the_byte_budget_must_hold_one_whole_body():
    from services.reward_api.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="MAX_QUEUED_BYTES .* must be at least REWARD_API_MAX_BODY_BYTES"):
        Settings.from_env(max_body_bytes=2048, max_queued_bytes=1024)
    assert Settings().max_queued_bytes >= Settings().max_body_bytes


# ---------------------------------------------------------------- the body's clock (no server)

from types import SimpleNamespace  # noqa: E402

from services.reward_api.routers.deps import BatchRunner, BodyTimeout, received_body  # noqa: E402


class Upload:
    """A request whose body arrives in ``parts`` of (seconds before it, bytes)."""

    def __init__(self, body_read_seconds: int, parts: list[tuple[float, bytes]]) -> None:
        self.app = SimpleNamespace(state=SimpleNamespace(settings=SimpleNamespace(body_read_seconds=body_read_seconds)))
        self.parts = parts

    async def stream(self):
        for seconds, data in self.parts:
            await asyncio.sleep(seconds)
            yield data


def read_while_the_budget_is_full_for(seconds: float, upload: Upload) -> bytes:
    async def scenario():
        runner = BatchRunner(max_queued_bytes=10, max_queued_samples=10, queue_wait_seconds=30)
        other = await runner.bytes.take(10)  # another request's body fills the budget
        asyncio.get_running_loop().call_later(seconds, runner.bytes.give, other)
        async with received_body(upload, runner) as body:
            pass
        assert runner.bytes.used == 0  # its bytes are given back once answered
        return body

    return asyncio.run(scenario())


def test_waiting_for_room_in_the_budget_does_not_count_against_the_body_deadline():
    # 1.5 s with no room against a 1 s deadline: with the wait counted this would be a 408, which
    # blames the sender for the service's queue (the wait has its own bound and answer, a 503).
    upload = Upload(1, [(0.0, b'{"a": '), (0.1, b"1}")])
    assert read_while_the_budget_is_full_for(1.5, upload) == b'{"a": 1}'


def test_the_sender_time_around_a_wait_for_room_still_counts():
    # 0.6 s to send the first part, then 1.5 s of waiting for room (not counted), then 0.6 s more
    # from the sender: 1.2 s of the sender's time against a 1 s deadline.
    upload = Upload(1, [(0.6, b'{"a": '), (0.6, b"1}")])
    with pytest.raises(BodyTimeout):
        read_while_the_budget_is_full_for(0.6 + 1.5, upload)


def test_waiting_for_room_is_bounded_over_the_whole_body_not_per_chunk():
    # queue wait 1 s in all: the first chunk waits 0.6 s for room, so the second may wait only 0.4 s
    # more; the budget stays full for 0.9 s then, and the request is refused (per chunk it would
    # have waited up to 1 s again and got in: a body could wait a queue wait per chunk).
    async def scenario():
        runner = BatchRunner(max_queued_bytes=10, max_queued_samples=10, queue_wait_seconds=1)
        loop = asyncio.get_running_loop()
        first = await runner.bytes.take(10)
        loop.call_later(0.6, runner.bytes.give, first)  # room for the first chunk at 0.6 s

        async def refill():  # then someone else fills the budget until 1.5 s
            await asyncio.sleep(0.62)
            again = await runner.bytes.take(4)
            loop.call_later(0.9, runner.bytes.give, again)

        filler = asyncio.ensure_future(refill())
        upload = Upload(5, [(0.0, b'{"a": '), (0.1, b"1}")])  # 6 bytes, then 2 at 0.7 s
        with pytest.raises(Overloaded):
            async with received_body(upload, runner):
                pass
        await filler

    asyncio.run(scenario())
