"""The compose stack in real containers: builds Dockerfile.reward and the load balancer, brings up the
`scoring` profile with `docker compose up --wait` (three reward-api replicas of two workers each,
reward-lb, Prometheus), scores through the published port, checks that Prometheus scrapes every
replica and that the load balancer spreads requests over them, then stops one replica gracefully and
kills another while requests are flowing, and checks that no request failed.

BASE IMAGES ARE LOCAL STAND-INS. Registries (Docker Hub) are unreachable on the CI machine, so
deploy/base-images/build.sh (run by deploy/ci-setup.sh, or here when missing) builds
`debian:bookworm-slim`, `python:3.11-slim-bookworm` and the `prom/prometheus` tag of
docker-compose.yml from Debian packages (debootstrap) and tags them with those names. Dockerfile.reward
and docker-compose.yml are used unchanged; what the stand-ins do not prove is that the official
images behave the same (they have their own CPython build, busybox, Prometheus 2.53 vs Debian's 2.42).
Grafana is not started: its image cannot be pulled and Debian does not package it. Its dashboard's
queries are checked against a live Prometheus in test_live_prometheus.py.

Needs a Docker engine. Without one the tests are skipped, except under CI (env CI set): there they fail.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import threading
import time

import httpx
import pytest
import yaml

from services.reward_api.local import free_ports
from tests.support.waiting import wait_until

from .conftest import COMPOSE_FILE, ROOT, RULES, compose_command, docker_cli, ensure_base_images, run

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPLICAS = 3
SOLUTION = '<answer>```json\n[{"bbox_2d": [0, 0, 32, 40], "label": "cat"}]\n```</answer>'
GOOD = '<think>a cat</think><answer>```json\n[{"bbox_2d": [0, 0, 32, 40], "label": "cat"}]\n```</answer>'
BATCH = {
    "samples": [{"completion": GOOD, "solution": SOLUTION, "id": "good"},
                {"completion": "no answer", "solution": SOLUTION, "id": "no-answer"},
                {"completion": GOOD, "solution": [{"bbox_2d": [1, 2], "label": "cat"}], "id": "unscorable"}]
              + [{"completion": GOOD, "solution": SOLUTION, "id": f"s{i}"} for i in range(13)],
    "rewards": ["format", "ap", "od_length"],
}


def _prometheus_image() -> str:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]["prometheus"]["image"]


class Stack:
    def __init__(self, docker: str) -> None:
        self.docker = docker
        self.project = f"vlmodrl-test-{os.getpid()}"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("COMPOSE_", "REWARD_API_", "TRAINER_", "STACK_", "PROMETHEUS_", "GRAFANA_"))}
        self.env.update(COMPOSE_PROFILES="scoring", REWARD_API_REPLICAS=str(REPLICAS), REWARD_API_WORKERS="2")
        self.prom = httpx.Client(timeout=10.0)

    def publish_on_free_ports(self) -> None:
        """Chosen just before `up` (a build can take minutes, and a port picked then may be gone)."""
        api_port, prom_port, grafana_port = free_ports(3)
        self.env.update(REWARD_API_HOST_PORT=str(api_port), PROMETHEUS_HOST_PORT=str(prom_port),
                        GRAFANA_HOST_PORT=str(grafana_port))
        self.api = f"http://127.0.0.1:{api_port}"
        self.prom.base_url = f"http://127.0.0.1:{prom_port}"

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        return run([*compose_command(), "-f", str(COMPOSE_FILE), "-p", self.project, *args],
                   timeout=timeout, check=check, env=self.env, cwd=ROOT)

    def containers(self, service: str) -> list[dict]:
        ids = self.compose("ps", "-q", service).stdout.split()
        if not ids:
            return []
        return json.loads(run([self.docker, "inspect", *ids]).stdout)

    def query(self, expr: str) -> list[dict]:
        body = self.prom.get("/api/v1/query", params={"query": expr}).json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def diagnostics(self) -> str:
        ps = self.compose("ps", "-a", check=False).stdout
        logs = self.compose("logs", "--no-color", "--tail", "40", check=False).stdout
        return f"--- compose ps ---\n{ps}\n--- compose logs ---\n{logs[-12000:]}"


def _wait(predicate, timeout: float, what: str, stack: Stack):
    return wait_until(predicate, timeout, what, diagnostics=stack.diagnostics)


@pytest.fixture(scope="module")
def stack():
    docker = docker_cli()
    compose_command()
    # Registries are unreachable here: local stand-ins from Debian packages (see the module doc).
    ensure_base_images(docker, ("debian:bookworm-slim", "python:3.11-slim-bookworm", _prometheus_image()))
    s = Stack(docker)
    try:
        s.compose("build", "reward-api", "reward-lb", timeout=900)
        s.publish_on_free_ports()
        # Grafana is left out: see the module doc.
        up = s.compose("up", "-d", "--wait", "--wait-timeout", "240", "reward-api", "reward-lb", "prometheus",
                       timeout=300, check=False)
        assert up.returncode == 0, f"docker compose up --wait failed:\n{up.stderr[-4000:]}\n{s.diagnostics()}"
        yield s
    finally:
        print(s.diagnostics())
        s.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout=180, check=False)
        s.prom.close()


def test_replicas_are_healthy_non_root_and_read_only(stack):
    replicas = stack.containers("reward-api")
    assert len(replicas) == REPLICAS
    for c in replicas:
        assert c["State"]["Health"]["Status"] == "healthy", c["Name"]
        assert c["Config"]["User"] == "10001:10001" and c["HostConfig"]["ReadonlyRootfs"] is True
        assert not c["HostConfig"]["PortBindings"], "replicas must not publish ports"
        uid = run([stack.docker, "exec", c["Id"], "id", "-u"]).stdout.strip()
        assert uid == "10001"
    [lb] = stack.containers("reward-lb")
    assert lb["State"]["Health"]["Status"] == "healthy"


def test_scores_a_batch_through_the_published_port(stack):
    answer = httpx.post(stack.api + "/v1/score", json=BATCH, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    n = len(BATCH["samples"])
    assert body["ids"] == [s["id"] for s in BATCH["samples"]]
    assert all(len(body["rewards"][r]) == n for r in BATCH["rewards"]) and len(body["total"]) == n
    assert body["rewards"]["format"][0] == 1.0 and body["rewards"]["ap"][0] == pytest.approx(1.0, abs=1e-9)
    assert body["rewards"]["format"][1] == 0.0 and body["rewards"]["ap"][1] == 0.0
    assert all(body["rewards"][r][2] is None for r in BATCH["rewards"]) and body["total"][2] is None
    assert body["errors"][2] and body["errors"][0] is None
    # metrics are per replica: the balancer does not serve them
    assert httpx.get(stack.api + "/metrics").status_code == 404


def test_prometheus_scrapes_every_replica_and_the_balancer_spreads_the_load(stack):
    ips = {net["IPAddress"] for c in stack.containers("reward-api")
           for net in c["NetworkSettings"]["Networks"].values()}
    assert len(ips) == REPLICAS

    def all_up():
        up = stack.query('up{job="reward-api"} == 1')
        return {r["metric"]["instance"].rsplit(":", 1)[0] for r in up} == ips

    _wait(all_up, 60, f"Prometheus to scrape the {REPLICAS} replicas {ips}", stack)
    with httpx.Client(timeout=30) as http:
        for _ in range(30):
            assert http.post(stack.api + "/v1/score", json=BATCH).status_code == 200

    # Each replica is scraped on its own 5 s clock, so a replica can show its first request before
    # another has been scraped since its last one: wait for the totals, not for one scrape.
    def every_replica_scored_and_every_sample_counted():
        per = stack.query('sum by (instance) (reward_api_requests_total{endpoint="/v1/score", status="200"})')
        samples = stack.query('sum(reward_api_samples_total{endpoint="/v1/score"})')
        return (len(per) == REPLICAS and all(float(r["value"][1]) > 0 for r in per)
                and sum(float(r["value"][1]) for r in per) >= 30
                and bool(samples) and float(samples[0]["value"][1]) >= 30 * len(BATCH["samples"]))

    _wait(every_replica_scored_and_every_sample_counted, 45,
          "every replica to have scored requests (round robin through reward-lb) and all 30 batches counted", stack)


def test_prometheus_in_the_stack_loads_and_evaluates_every_rule(stack):
    expected = sum(len(g["rules"]) for p in RULES for g in yaml.safe_load(p.read_text())["groups"])

    def evaluated():
        rules = [r for g in stack.prom.get("/api/v1/rules").json()["data"]["groups"] for r in g["rules"]]
        return rules if len(rules) == expected and all(r["health"] == "ok" for r in rules) else None

    _wait(evaluated, 30, f"{expected} healthy rules in the stack's Prometheus", stack)


def test_losing_replicas_under_load_loses_no_scoring(stack):
    """6 clients score continuously through reward-lb; one replica is stopped (SIGTERM, graceful), then
    another is killed (SIGKILL, in-flight requests cut). Every request must still succeed, with no
    client-side retry: reward-lb re-sends what a lost replica did not answer."""
    replicas = stack.containers("reward-api")
    assert len(replicas) == REPLICAS
    stop = threading.Event()
    results: list[tuple[float, int | str]] = []
    lock = threading.Lock()

    def client():
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                try:
                    answer = http.post(stack.api + "/v1/score", json=BATCH)
                    ok = answer.status_code == 200 and len(answer.json()["total"]) == len(BATCH["samples"])
                    outcome: int | str = answer.status_code if ok or answer.status_code != 200 else "short answer"
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                with lock:
                    results.append((time.monotonic(), outcome))

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(client) for _ in range(6)]
        time.sleep(3)
        t_stop = time.monotonic()
        run([stack.docker, "stop", "--time", "20", replicas[0]["Id"]], timeout=60)
        time.sleep(3)
        t_kill = time.monotonic()
        run([stack.docker, "kill", "--signal", "KILL", replicas[1]["Id"]], timeout=60)
        time.sleep(5)
        stop.set()
        for f in futures:
            f.result()

    failures = [(round(t - t_stop, 2), o) for t, o in results if o != 200]
    print(f"load: {len(results)} requests, {sum(1 for t, _ in results if t >= t_stop)} after the stop, "
          f"{sum(1 for t, _ in results if t >= t_kill)} after the kill, {len(failures)} failed")
    during = sum(1 for t, _ in results if t >= t_stop)
    after_kill = sum(1 for t, _ in results if t >= t_kill)
    assert not failures, f"{len(failures)} of {len(results)} requests failed (s after the stop, outcome): {failures[:20]}"
    assert during >= 30 and after_kill >= 20, f"too little load to prove anything: {len(results)} requests, " \
                                              f"{during} after the stop, {after_kill} after the kill"

    # Prometheus notices: fewer replicas up, and RewardApiReplicaLost goes pending (it fires after 1m).
    running = [c for c in stack.containers("reward-api") if c["State"]["Running"]]
    assert len(running) < REPLICAS

    def replica_lost_pending():
        up = stack.query('job:reward_api_replicas_up:sum')
        alerts = stack.query('ALERTS{alertname="RewardApiReplicaLost"}')
        return up and float(up[0]["value"][1]) < REPLICAS and alerts

    _wait(replica_lost_pending, 45, "Prometheus to see the lost replicas (RewardApiReplicaLost pending)", stack)
    # and the survivors still answer
    assert httpx.post(stack.api + "/v1/score", json=BATCH, timeout=30).status_code == 200

