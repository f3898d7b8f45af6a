"""The host's scoring pool (services/reward_api/scoring_pool.py): large batches cut into chunks and
scored by processes shared by every worker give exactly the in-process engine's answers, 4xx
included; a scoring process or a worker that dies costs no answer; nothing is left running.

The servers are real (uvicorn on 127.0.0.1, two workers, two scoring processes); tiny chunks
(REWARD_API_CHUNK_SAMPLES) make a few hundred samples travel as dozens of chunks."""

from __future__ import annotations

import asyncio
import doctest
import os
import re
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest

from bench.http import ALL_REWARDS, synthetic_samples
from services.reward_api import scoring_pool
from services.reward_api.engine.scoring import _json_size, score_batch
from services.reward_api.local import LocalService
from services.reward_api.routers import request_handling
from services.reward_api.routers.deps import BatchRunner
from services.reward_api.settings import Settings
from tests.support.waiting import wait_until

from .test_score import CAT, DOG, completion, solution

CHUNK = 8
V1_REWARDS = [{"name": "repetition", "version": "1"}, {"name": "weighted_sum", "version": "1"}, "ap", "format"]
POOL_LINE = re.compile(r"scoring pool: (\d+) processes \(pids ([\d ]+)\) on (\S+)")


def mixed_samples() -> list[dict]:
    """GRPO-shaped samples (broken JSON, missing fences and answers, repeats), plus ground truths
    that cannot be read (null rewards and an error), structured ones, ids and no token count."""
    samples = synthetic_samples(150, seed=3)
    samples[5] = {**samples[5], "solution": "no answer block here", "id": "unreadable"}
    samples[17] = {**samples[17], "solution": [CAT, DOG], "id": 17}
    samples[40] = {"completion": completion([CAT]), "solution": solution([]), "completion_tokens": 9}
    samples[99] = {"completion": "<think>nothing</think>", "solution": solution([DOG]), "completion_tokens": 3}
    return samples


def crowded_sample() -> dict:
    """One sample of 200 x 200 boxes: more pairs alone than the whole mixed batch has."""
    boxes = [{"bbox_2d": [i, i, i + 50, i + 50], "label": "cat"} for i in range(200)]
    return {"completion": completion(boxes), "solution": solution(boxes), "completion_tokens": 50}


SAMPLES = mixed_samples()


def budgets() -> dict[str, str]:
    """Box pairs: the mixed batch's own total (so two copies of it pass the budget only in the
    request's second half, where no chunk alone does). Explain: the details of its first 60 samples."""
    pairs = max(sum(score_batch(SAMPLES, rewards).stats.box_pairs) for rewards in (ALL_REWARDS, V1_REWARDS))
    details = score_batch(SAMPLES, ALL_REWARDS, explain=True).details or []
    return {
        "REWARD_API_MAX_BOX_PAIRS": str(pairs),
        "REWARD_API_MAX_EXPLAIN_BYTES": str(sum(_json_size(d) for d in details[:60])),
        # json_repair's time budget is a clock: generous, so a loaded machine cannot move an answer.
        "REWARD_API_MAX_REPAIR_SECONDS": "60",
        "REWARD_API_SCORING_PROCESSES": "2",
        "REWARD_API_CHUNK_SAMPLES": str(CHUNK),
        "REWARD_API_LOG_LEVEL": "info",
    }


def in_process(endpoint: str, body: dict, env: dict[str, str]) -> tuple[int, bytes | str]:
    """The answer of the engine in this process (no pool here: its variable is not set)."""
    assert scoring_pool.POOL_ENV not in os.environ
    settings = Settings(**{k.removeprefix("REWARD_API_").lower(): v for k, v in env.items()})
    prepare = request_handling.prepare_score if endpoint == "/v1/score" else request_handling.prepare_openrlhf
    try:
        job = prepare(orjson.dumps(body), settings, request_handling.resolve_default_rewards(settings))
    except request_handling.RequestError as exc:
        return exc.status_code, str(exc.detail)
    (result,) = request_handling.score_jobs([job])
    if isinstance(result, request_handling.RequestError):
        return result.status_code, str(result.detail)
    return 200, result


def over_http(client: httpx.Client, endpoint: str, body: dict) -> tuple[int, bytes | str]:
    answer = client.post(endpoint, content=orjson.dumps(body), headers={"content-type": "application/json"})
    return answer.status_code, answer.content if answer.status_code == 200 else answer.json()["detail"]


def pool_pids(service: LocalService) -> list[int]:
    """The scoring processes now: those the pool started, each replaced by the one started after it died."""
    log = service.log()
    found = POOL_LINE.findall(log)
    assert found, f"the service logged no scoring pool:\n{log[-2000:]}"
    pids = [int(pid) for pid in found[0][1].split()]
    for dead, new in re.findall(r"scoring process (\d+) died .*; started again as pid (\d+)", log):
        pids[pids.index(int(dead))] = int(new)
    return pids


def alive(pid: int) -> bool:
    """Running (a zombie is not: the container's init may be slow to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def idle_open_files(pid: int, seconds: float = 0.5) -> int:
    """``pid``'s open files when it holds no chunk's connection: the fewest seen over ``seconds``.
    Read once, right after a request, a loaded machine can catch a process that has answered its
    last chunk but not yet closed that connection, and nothing later would ever exceed that."""
    fewest = open_files(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
        fewest = min(fewest, open_files(pid))
    return fewest


def cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and b"resource_tracker" not in cmdline(stat.parent):
            found.add(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return budgets()


@pytest.fixture(scope="module")
def pooled(env):
    with LocalService.start(workers=2, env=env) as service:
        yield service


CASES = {
    "all rewards": ("/v1/score", {"samples": SAMPLES, "rewards": ALL_REWARDS, "weights": {"ap": 2.5, "cosine": -1}}),
    "default rewards": ("/v1/score", {"samples": SAMPLES}),
    "params": ("/v1/score", {"samples": SAMPLES, "rewards": ALL_REWARDS, "params": {"weighted_sum": {"alpha": 0.5}}}),
    "version 1 rewards": ("/v1/score", {"samples": SAMPLES, "rewards": V1_REWARDS}),
    "explain, under its budget": ("/v1/score", {"samples": SAMPLES[:50], "rewards": ALL_REWARDS, "explain": True}),
    "explain, over its budget after sample 60": (
        "/v1/score",
        {"samples": SAMPLES, "rewards": ALL_REWARDS, "explain": True},
    ),
    "box pairs passed in the second half only": ("/v1/score", {"samples": SAMPLES + SAMPLES, "rewards": ALL_REWARDS}),
    "box pairs passed inside one chunk": (
        "/v1/score",
        {"samples": SAMPLES[:20] + [crowded_sample()] + SAMPLES[20:], "rewards": ["ap"]},
    ),
    "openrlhf": (
        "/v1/openrlhf",
        {
            "query": [f"Find the animals.{s['completion']}" for s in SAMPLES[100:140]],
            "prompts": ["Find the animals."] * 40,
            "labels": [s["solution"] for s in SAMPLES[100:140]],
        },
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_pooled_answers_are_the_in_process_engines(pooled, env, case):
    endpoint, body = CASES[case]
    with httpx.Client(base_url=pooled.url, timeout=60.0) as client:
        status, answer = over_http(client, endpoint, body)
    expected_status, expected = in_process(endpoint, body, env)
    assert (status, answer) == (expected_status, expected)  # byte for byte, 4xx details included
    if case.startswith("box pairs") or case.startswith("explain, over"):
        assert status == 422, answer  # the budgets really were passed (else this case tests nothing)
    elif case != "openrlhf":
        assert status == 200, answer


def test_concurrent_requests_coalesced_and_chunked(pooled, env):
    # Requests arriving together are scored together: small ones packed whole into chunks, large
    # ones cut; every caller still gets exactly its own answer.
    bodies = [{"samples": SAMPLES[i : i + n], "rewards": ALL_REWARDS} for i, n in [(0, 3), (3, 40), (43, 1), (44, 100)]]
    with httpx.Client(base_url=pooled.url, timeout=60.0) as client, ThreadPoolExecutor(8) as threads:
        answers = list(threads.map(lambda b: over_http(client, "/v1/score", b), bodies * 2))
    assert answers == [in_process("/v1/score", b, env) for b in bodies * 2]


def test_a_dead_scoring_process_or_worker_costs_no_answer_and_nothing_is_left_running(env):
    big = {"samples": SAMPLES * 16, "rewards": ALL_REWARDS}  # 2,400 samples: 75 chunks
    # The box-pair budget is the mixed batch's; chunks long enough to be caught in the middle of one.
    env = {k: v for k, v in env.items() if "BOX_PAIRS" not in k} | {"REWARD_API_CHUNK_SAMPLES": "32"}
    with LocalService.start(workers=2, env=env) as service:
        pids = pool_pids(service)
        socket_dir = Path(POOL_LINE.findall(service.log())[0][2]).parent
        assert len(pids) == 2 and all(alive(p) for p in pids) and socket_dir.is_dir()
        with httpx.Client(base_url=service.url, timeout=120.0) as client:
            expected = over_http(client, "/v1/score", big)
            assert expected[0] == 200

            # A scoring process killed mid-request: its chunk is scored again, the pool replaces it.
            # (Caught holding a chunk's connection: one more open file than when idle; it may just
            # have answered that chunk, so up to three tries for a kill that really loses one.)
            for _ in range(3):
                pids = pool_pids(service)
                idle = idle_open_files(pids[0])
                with ThreadPoolExecutor(1) as thread:
                    answer = thread.submit(over_http, client, "/v1/score", big)
                    wait_until(lambda: open_files(pids[0]) > idle, 30, "a chunk in the process", interval=0.002)  # noqa: B023
                    os.kill(pids[0], signal.SIGKILL)
                    assert answer.result() == expected
                wait_until(lambda: pids[0] not in pool_pids(service), 20, "a new scoring process")  # noqa: B023
                if "was lost with a chunk" in service.log():
                    break
            assert "was lost with a chunk" in service.log()
            pids = pool_pids(service)
            assert len(pids) == 2 and all(alive(p) for p in pids)

            # Every uvicorn worker killed mid-request: the pool's processes, whose answers nobody
            # reads any more, carry on; the new workers score with them.
            workers = children(service.process.pid) - set(pids)
            assert len(workers) == 2, workers
            idle = sum(idle_open_files(p) for p in pids)
            with ThreadPoolExecutor(1) as thread:
                answer = thread.submit(over_http, client, "/v1/score", big)
                wait_until(lambda: sum(open_files(p) for p in pids) > idle, 30, "chunks in the pool", interval=0.002)
                for worker in workers:
                    os.kill(worker, signal.SIGKILL)
                with pytest.raises(httpx.HTTPError):
                    answer.result()
        wait_until(lambda: httpx.get(service.url + "/readyz").status_code == 200, 30, "new workers ready")
        with httpx.Client(base_url=service.url, timeout=120.0) as client:
            assert over_http(client, "/v1/score", big) == expected
        assert all(alive(p) for p in pids), "a scoring process died with the workers"
        assert service.stop() is not None
    assert not [p for p in pids if alive(p)], "scoring processes left running after the service stopped"
    assert not socket_dir.exists()


def test_one_worker_stops_cleanly(env, tmp_path):
    # One worker runs in uvicorn's own process, which ends by SIGTERM after its shutdown: the pool
    # is stopped first, and the group's SIGTERM never reached it (no process died and was replaced).
    with LocalService.start(workers=1, env=env, log_path=tmp_path / "service.log") as service:
        pids = pool_pids(service)
        socket_dir = Path(POOL_LINE.findall(service.log())[0][2]).parent
        assert service.stop() == -signal.SIGTERM
        assert "died" not in service.log()
    assert not [p for p in pids if alive(p)] and not socket_dir.exists()


def test_scoring_processes_leave_when_the_service_is_killed(env):
    # SIGKILL runs no shutdown code: each process notices its parent is gone and leaves.
    with LocalService.start(workers=1, env=env) as service:
        pids = pool_pids(service)
        os.kill(service.process.pid, signal.SIGKILL)
        service.process.wait()
        wait_until(lambda: not any(alive(p) for p in pids), 10, "the scoring processes to leave")
        shutil.rmtree(Path(POOL_LINE.findall(service.log())[0][2]).parent)  # what nobody could remove


def test_no_pool_when_switched_off():
    with LocalService.start(workers=1, env={"REWARD_API_SCORING_PROCESSES": "0", "REWARD_API_LOG_LEVEL": "info"}) as s:
        assert not POOL_LINE.search(s.log())
        assert not children(s.process.pid)
        body = {"samples": SAMPLES[:30], "rewards": ALL_REWARDS}
        with httpx.Client(base_url=s.url, timeout=60.0) as client:
            assert over_http(client, "/v1/score", body) == in_process("/v1/score", body, {})


def test_chunk_ranges_cover_every_sample_once_in_order():
    for sizes in ([4096], [1] * 300, [3, 700, 2, 2, 256, 257, 0, 9], [0]):
        chunks = scoring_pool.chunk_ranges(sizes, 256)
        flat = [i for ranges, _ in chunks for lo, hi in ranges for i in range(lo, hi)]
        assert flat == list(range(sum(sizes)))
        assert all(sum(hi - lo for lo, hi in ranges) <= 256 for ranges, _ in chunks)
    assert len(scoring_pool.chunk_ranges([4096], 256)) == 16


def test_docstring_examples():
    result = doctest.testmod(scoring_pool, report=True)
    assert result.attempted >= 2 and result.failed == 0


def cpu_ns(pid: int) -> int:
    """Time the process has spent on a core so far (ns)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def connected_to(client: httpx.Client, worker: int, others: set[int]) -> None:
    """Open ``client``'s keep-alive connection on ``worker``: the other workers are stopped while it
    is accepted (the kernel hands a connection to whichever worker accepts first, so left to chance
    a loaded machine may never put two on one worker)."""
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        answered_by = client.get("/healthz").json()["pid"]
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)
    assert answered_by == worker


def test_two_connections_are_never_left_on_one_worker(env):
    # The case: one client, two keep-alive connections, both accepted by the same worker of
    # two. Its batches are scored by both scoring processes all the same, and so when the two
    # connections landed on different workers.
    env = {k: v for k, v in env.items() if "BOX_PAIRS" not in k} | {"REWARD_API_CHUNK_SAMPLES": "32"}
    big = {"samples": SAMPLES * 4, "rewards": ALL_REWARDS}  # 600 samples: 19 chunks
    with LocalService.start(workers=2, env=env) as service:
        processes = pool_pids(service)
        first, second = sorted(children(service.process.pid) - set(processes))
        expected = in_process("/v1/score", big, env)
        seen: dict[str, list[int]] = {}
        for case, workers in {"both on one worker": (first, first), "one on each worker": (first, second)}.items():
            with httpx.Client(base_url=service.url, timeout=120.0) as a, httpx.Client(base_url=service.url,
                                                                                        timeout=120.0) as b:
                for client, worker in zip((a, b), workers, strict=True):
                    connected_to(client, worker, {first, second} - {worker})
                before = [cpu_ns(pid) for pid in processes]
                with ThreadPoolExecutor(2) as threads:
                    answers = list(threads.map(lambda c: [over_http(c, "/v1/score", big) for _ in range(2)], (a, b)))
                assert answers == [[expected] * 2] * 2
                assert {client.get("/healthz").json()["pid"] for client in (a, b)} == set(workers)  # kept alive
                seen[case] = [cpu_ns(pid) - start for pid, start in zip(processes, before, strict=True)]
        for case, spent in seen.items():
            assert min(spent) > 0.1 * sum(spent), f"{case}: the scoring processes' CPU ns {spent}"


def test_a_body_is_parsed_while_the_scoring_thread_waits():
    # Two requests in flight on one worker: the second's body is parsed while the first is in the
    # pool (its scoring thread only waits), not after it.
    async def main() -> None:
        runner = BatchRunner(1 << 20, 1 << 20, 5.0)
        scoring, release = threading.Event(), threading.Event()

        def score(items: list) -> list:
            scoring.set()
            release.wait(10)
            return [f"scored {item}" for item in items]

        first = runner.submit(score, "a")
        assert await asyncio.to_thread(scoring.wait, 10)
        parsed = await asyncio.wait_for(runner.parse(str.upper, "b"), 5)
        assert parsed == "B" and not first.done()
        release.set()
        assert await first == "scored a"

    asyncio.run(main())
