"""The reward service as a Ray Serve application (services/reward_api/serve.py, deploy/ray/reward-api.yaml)
on a real Ray cluster of two nodes of one CPU each, started on this machine (services/reward_api/local_ray.py)
and deployed by Serve's own `serve run` from the documented config: scoring through the one ingress URL
equals the plain uvicorn service, the ingress's /metrics sums every replica, a scale-up under load puts a
second replica on the second node, and a replica killed under load loses nothing (the client retries).

The tests share one cluster and run in file order: the scale-up leaves two replicas (downscaling is
delayed for longer than the module runs) that the metrics and kill tests use.

pytest does not collect this module by name: tests/deploy/test_ray_serve.py runs it in a network
namespace of its own with only loopback (local_ray.in_own_network), where every Ray node is 127.0.0.1
and nothing the cluster listens on is reachable from outside. The cluster fixture refuses to start
anywhere else.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import subprocess
import threading
import time

import httpx
import pytest

from bench.http import ALL_REWARDS, synthetic_samples
from services.reward_api.local import LocalService
from shared.client import AsyncRewardClient, RewardClient
from tests.support.tools import executable
from tests.support.waiting import wait_until

ray = pytest.importorskip("ray", reason="ray[serve] is not installed (extra `serve`: make install)")
serve = pytest.importorskip("ray.serve", reason="ray[serve] is not installed (extra `serve`: make install)")

from services.reward_api.local_ray import APP, LocalRayCluster, only_loopback  # noqa: E402 (imports ray)

pytestmark = pytest.mark.timeout(300)

SAMPLES = synthetic_samples(1024, seed=15)
INGRESS = "RewardService"
# Fast to scale up (every ongoing request above 1 per replica asks for another), slow to scale down.
AUTOSCALING = {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1,
               "upscale_delay_s": 0, "downscale_delay_s": 600}


@pytest.fixture(scope="module")
def plain() -> LocalService:
    with LocalService.start(workers=1, env={"REWARD_API_LOG_LEVEL": "warning"}) as running:
        yield running


@pytest.fixture(scope="module")
def cluster() -> LocalRayCluster:
    assert only_loopback(), "run in a network namespace of its own: pytest tests/deploy/test_ray_serve.py"
    with LocalRayCluster(nodes=2, cpus_per_node=1) as running:  # stopped on the way out, failures included
        running.start()
        ray.init(address=running.address, namespace="serve", log_to_driver=False)
        try:
            running.wait_for_nodes()
            assert [node["NodeManagerAddress"] for node in ray.nodes()] == ["127.0.0.1"] * 2, ray.nodes()
            running.deploy(running.local_config(**AUTOSCALING))
            yield running
        finally:
            ray.shutdown()


def running_replicas() -> int:
    deployment = serve.status().applications[APP].deployments[INGRESS]
    return deployment.replica_states.get("RUNNING", 0)


def replica_names() -> list[str]:
    prefix = f"SERVE_REPLICA::{APP}#{INGRESS}#"
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]


def scrape(url: str) -> dict[str, float]:
    """The ingress's /metrics: series -> value."""
    answer = httpx.get(f"{url}/metrics", timeout=10)
    answer.raise_for_status()
    series = {}
    for line in answer.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            series[name] = float(value)
    return series


SCORE = '{endpoint="/v1/score"}'
SAMPLES_SCORED = f"reward_api_samples_total{SCORE}"
SCORE_DURATIONS = f"reward_api_request_duration_seconds_count{SCORE}"


def score_answers(status: int) -> str:
    return f'reward_api_requests_total{{endpoint="/v1/score",status="{status}"}}'


class Answered:
    """The /v1/score answers the ingress gave this module's tests before the metrics test, as their
    clients saw them: once every replica has reported them, the ingress's /metrics counts exactly these.
    (A replica reports on its own clock; a request is counted after its answer is sent.)"""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.samples = 0
        self.requests: dict[int, int] = {}  # status -> requests

    def add(self, status: int, requests: int, samples: int = 0) -> None:
        with self.lock:
            self.samples += samples
            self.requests[status] = self.requests.get(status, 0) + requests

    def add_call(self, client: RewardClient, samples: int) -> None:
        """One ``client.score`` call answered: its chunks of at most max_batch_size samples, each a 200."""
        self.add(200, math.ceil(samples / client.max_batch_size), samples)

    def expected(self) -> dict[str, float]:
        with self.lock:
            series = {score_answers(status): n for status, n in self.requests.items()}
            return series | {SAMPLES_SCORED: self.samples, SCORE_DURATIONS: sum(self.requests.values())}


ANSWERED = Answered()


def counted(url: str, expected: dict[str, float], timeout: float) -> dict[str, float]:
    """The first scrape of the ingress's /metrics whose ``expected`` series have exactly their values."""
    last: dict[str, float] = {}

    def exact() -> dict[str, float] | None:
        nonlocal last
        last = scrape(url)
        return last if all(last.get(name, 0.0) == value for name, value in expected.items()) else None

    def shown() -> str:
        return f"expected {expected}, counted { {name: last.get(name) for name in expected} }"

    return wait_until(exact, timeout, "the ingress's /metrics to count every answer given", interval=0.5,
                      diagnostics=shown)


def test_scoring_through_the_ingress_equals_the_plain_service(cluster: LocalRayCluster, plain: LocalService):
    body = {"samples": SAMPLES[:64], "rewards": ALL_REWARDS}
    through_serve = httpx.post(f"{cluster.url}/v1/score", json=body, timeout=60)
    ANSWERED.add(through_serve.status_code, 1, len(body["samples"]) if through_serve.status_code == 200 else 0)
    direct = httpx.post(f"{plain.url}/v1/score", json=body, timeout=60)
    assert through_serve.status_code == direct.status_code == 200, through_serve.text
    assert through_serve.json() == direct.json()
    # Our client, unchanged, at the ingress URL; errors answered as the service answers them.
    with RewardClient(cluster.url) as client:
        answer = client.score(SAMPLES[:64], rewards=ALL_REWARDS)
        ANSWERED.add_call(client, 64)
        assert answer.model_dump() == direct.json()
    unknown = {"samples": SAMPLES[:1], "rewards": ["no_such_reward"]}
    refused = httpx.post(f"{cluster.url}/v1/score", json=unknown, timeout=60)
    ANSWERED.add(refused.status_code, 1)  # refused before scoring: no sample counted
    assert refused.status_code == 422 and refused.json() == httpx.post(f"{plain.url}/v1/score", json=unknown).json()


def test_scale_up_under_load_puts_a_second_replica_on_the_second_node(cluster: LocalRayCluster):
    assert running_replicas() == 1
    stop = threading.Event()
    failures: list[BaseException] = []

    def load() -> None:
        with RewardClient(cluster.url, max_batch_size=128) as client:
            while not stop.is_set():
                try:
                    client.score(SAMPLES[:256], rewards=ALL_REWARDS)
                    ANSWERED.add_call(client, 256)
                except BaseException as exc:
                    failures.append(exc)
                    return

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: running_replicas() >= 2, 90, "a second replica under load", interval=0.5,
                   diagnostics=lambda: str(serve.status().applications[APP]))
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not failures, failures
    # One CPU per node and one per replica: two replicas take both nodes' CPUs, one on each node.
    assert ray.available_resources().get("CPU", 0) == 0
    assert len({node["NodeID"] for node in ray.nodes() if node["Alive"]}) == 2


def test_metrics_at_the_ingress_sum_every_replica(cluster: LocalRayCluster):
    assert running_replicas() == 2
    # Every answer so far (the scale-up's load) reported by both replicas.
    before = counted(cluster.url, ANSWERED.expected(), 60)
    n_requests, batch = 24, 16

    async def send() -> None:  # 24 requests, 8 at a time: Serve spreads them over both replicas
        async with AsyncRewardClient(cluster.url, max_batch_size=batch, max_concurrency=8) as client:
            await client.score(SAMPLES[: n_requests * batch], rewards=ALL_REWARDS)

    asyncio.run(send())
    ANSWERED.add(200, n_requests, n_requests * batch)

    # Each replica reports on its own clock: the totals grow by exactly what was sent once both have.
    grown = {SAMPLES_SCORED: n_requests * batch, score_answers(200): n_requests, SCORE_DURATIONS: n_requests,
             'reward_api_reward_value_count{reward="format"}': n_requests * batch}
    after = counted(cluster.url, {name: before.get(name, 0.0) + n for name, n in grown.items()}, 30)
    # A histogram comes whole, buckets ascending to +Inf, the +Inf bucket equal to the count.
    buckets = [name for name in after if name.startswith("reward_api_reward_value_bucket") and "format" in name]
    les = [re.search(r'le="([^"]+)"', name)[1] for name in buckets]
    assert les[-1] == "+Inf" and [float(le) for le in les] == sorted(float(le) for le in les)
    assert after[buckets[-1]] == after['reward_api_reward_value_count{reward="format"}']


def test_promtool_accepts_the_summed_exposition(cluster: LocalRayCluster):
    promtool = executable("promtool", "apt-get install prometheus")
    text = httpx.get(f"{cluster.url}/metrics", timeout=10).text
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_replica_killed_under_load_loses_nothing(cluster: LocalRayCluster, plain: LocalService):
    assert running_replicas() == 2
    load = SAMPLES * 4  # a round: 4,096 samples, a second or so on the two replicas
    with RewardClient(plain.url, max_batch_size=len(load)) as client:
        expected = client.score(load, rewards=ALL_REWARDS).model_dump()
    replicas = set(replica_names())
    # The victim: the replica the proxy prefers (Serve routes to its own node's replicas first), the
    # one that answers an idle ingress. Its process is killed, as a crash would: no goodbye to Serve.
    victim = httpx.get(f"{cluster.url}/healthz", timeout=10).json()["pid"]
    retries = []
    answers: list[dict] = []
    failures: list[BaseException] = []

    killed = threading.Event()

    # Rounds in requests of 256 samples (tens of ms of scoring each), 8 in flight: the victim's 4 slots
    # (max_ongoing_requests) stay busy. Serve itself re-routes what a dead replica had not yet
    # accepted; what it was scoring fails (HTTP 500) and the client retries it.
    async def score_until_after_the_kill() -> None:
        async with AsyncRewardClient(cluster.url, max_batch_size=256, max_concurrency=8,
                                     on_retry=retries.append) as client:  # fmt: skip
            rounds_after_kill = 0
            while rounds_after_kill < 2:
                rounds_after_kill += killed.is_set()
                answers.append((await client.score(load, rewards=ALL_REWARDS)).model_dump())

    def run() -> None:
        try:
            asyncio.run(score_until_after_the_kill())
        except BaseException as exc:
            failures.append(exc)

    loader = threading.Thread(target=run)
    loader.start()
    wait_until(lambda: answers or failures, 60, "the load to run", interval=0.05)
    time.sleep(0.2)  # into the next round
    os.kill(victim, signal.SIGKILL)  # mid-round: requests in flight
    killed.set()
    loader.join(180)
    assert not loader.is_alive() and not failures, failures
    for answer in answers:  # every sample scored, in its place, with its value: none lost, none twice
        assert answer == expected
    assert retries, "the killed replica had no request in flight: the test did not test a kill under load"
    # Serve replaces the replica.
    wait_until(lambda: running_replicas() == 2 and len(set(replica_names()) - replicas) == 1, 90,
               "a replacement replica", diagnostics=lambda: str(serve.status().applications[APP]))
