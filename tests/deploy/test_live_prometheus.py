"""A real Prometheus (Debian's `prometheus`, on 127.0.0.1) scrapes a real two-worker reward service
and the trainer's real metrics exporter, with the stack's own scrape jobs and rules
(deploy/prometheus). The test scores samples, reads the reward metrics back through Prometheus's
HTTP API and checks them against what the service answered; then it runs every PromQL expression of
the Grafana dashboards against that Prometheus: each must parse and return data.

What differs from the compose stack: targets are static 127.0.0.1 addresses instead of Docker DNS,
and scrape/evaluation intervals are 1 s instead of 5 s so the test is quick. The trainer exporter is
trainer.telemetry.Telemetry (the class the trainer runs) fed by a small loop, not a training run.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from services.reward_api.local import LocalService, free_ports
from tests.support.waiting import TRANSIENT, wait_until

from .conftest import DASHBOARDS, PROMETHEUS_DIR, ROOT, RULES, tool

SOLUTION = '<answer>```json\n[{"bbox_2d": [0, 0, 32, 40], "label": "cat"}]\n```</answer>'
GOOD = '<think>a cat</think><answer>```json\n[{"bbox_2d": [0, 0, 32, 40], "label": "cat"}]\n```</answer>'
PARTIAL = '<think>a cat</think><answer>```json\n[{"bbox_2d": [4, 2, 30, 44], "label": "cat"}]\n```</answer>'
SAMPLES = [
    {"completion": GOOD, "solution": SOLUTION},
    {"completion": PARTIAL, "solution": SOLUTION},
    {"completion": "no answer block at all", "solution": SOLUTION},                  # a parse failure
    {"completion": GOOD, "solution": [{"bbox_2d": [1, 2], "label": "cat"}]},        # unscorable
]
REWARDS = ["format", "ap", "od_length", "weighted_sum"]
REQUESTS = 24

TRAINER_LOOP = """
import sys, time
from trainer.telemetry import Telemetry
telemetry = Telemetry(port=int(sys.argv[1]), reward_names=["format", "od_length"])
step = 0
while True:
    step += 1
    telemetry.step.set(step)
    telemetry.reward_mean.labels(reward="format").set(0.5 + 0.01 * (step % 10))
    telemetry.reward_mean.labels(reward="od_length").set(0.2 + 0.02 * (step % 10))
    telemetry.observe_request(0.02 + 0.001 * (step % 5))
    telemetry.observe_wait(0.01)
    if step % 3 == 0:
        telemetry.observe_retry()
    time.sleep(0.25)
"""


def _wait(predicate, timeout: float, what: str):
    # Assertions inside these predicates are checks on data still arriving: retried too.
    return wait_until(predicate, timeout, what, interval=0.25, retry_on=(*TRANSIENT, AssertionError))


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10.0)

    def query(self, expr: str) -> list[dict]:
        answer = self.http.post("/api/v1/query", data={"query": expr})
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", f"{expr!r}: {body}"
        return body["data"]["result"]

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr!r} gave {result}"
        return float(result[0]["value"][1])


def _prometheus_config(path: Path, targets: dict[str, str]) -> None:
    """deploy/prometheus/prometheus.yml with static loopback targets and 1 s intervals."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(targets), f"prometheus.yml has jobs {sorted(jobs)}: teach this test about them"
    for name, job in jobs.items():
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [targets[name]]}]
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(p) for p in RULES]
    path.write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    prometheus_bin = tool("prometheus", "apt-get install prometheus")
    tmp = tmp_path_factory.mktemp("live-prometheus")
    procs: list[subprocess.Popen] = []
    server = LocalService.start(workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp / "multiproc"),
                                          "REWARD_API_LOG_LEVEL": "warning"})
    try:
        trainer_port, prom_port = free_ports(2)
        trainer_log = open(tmp / "trainer.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-c", TRAINER_LOOP, str(trainer_port)], cwd=ROOT,
                                      stdout=trainer_log, stderr=subprocess.STDOUT))
        _prometheus_config(tmp / "prometheus.yml", {"reward-api": f"127.0.0.1:{server.port}",
                                                     "trainer": f"127.0.0.1:{trainer_port}",
                                                     "prometheus": f"127.0.0.1:{prom_port}"})
        prom_log = open(tmp / "prometheus.log", "w")
        procs.append(subprocess.Popen(
            [prometheus_bin, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=prom_log, stderr=subprocess.STDOUT))
        prom = Prometheus(f"http://127.0.0.1:{prom_port}")
        try:
            _wait(lambda: prom.http.get("/-/ready").status_code == 200, 30, "Prometheus to be ready")
            _wait(lambda: len(prom.query("up == 1")) == 3, 60, "all three targets up")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- prometheus ---\n{(tmp / 'prometheus.log').read_text()[-3000:]}"
                                 f"\n--- trainer exporter ---\n{(tmp / 'trainer.log').read_text()[-3000:]}") from None
        yield server, prom
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()


@pytest.fixture(scope="module")
def scored(stack):
    """Scores REQUESTS batches concurrently, in two rounds with a scrape between them (so that rates
    are not zero: a counter's first scraped value is not an increase), plus one invalid request."""
    server, prom = stack

    # Fresh connections, several at a time: the kernel spreads accepted connections over workers.
    def healthz_pid(_):
        return httpx.get(server.url + "/healthz", timeout=10).json()["pid"]

    pids: set[int] = set()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for _ in range(30):  # until both workers answered (a paused worker may accept none of a round)
            pids |= set(pool.map(healthz_pid, range(32)))
            if len(pids) == 2:
                break

    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        def score(_):
            answer = http.post("/v1/score", json={"samples": SAMPLES, "rewards": REWARDS})
            assert answer.status_code == 200, answer.text
            return answer.json()

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(score, range(REQUESTS // 2)))
        _wait(lambda: prom.query("reward_api_sample_errors_total"), 30, "the first round to be scraped")
        bad = http.post("/v1/score", json={"samples": [{"completion": 3}]})
        assert bad.status_code == 422
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers += list(pool.map(score, range(REQUESTS - REQUESTS // 2)))
    return server, prom, answers, pids


def test_the_service_runs_two_workers(scored):
    _server, _prom, _answers, pids = scored
    assert len(pids) == 2, f"/healthz answered from pids {pids}"


def test_prometheus_reads_back_what_the_service_scored(scored):
    _server, prom, answers, _pids = scored
    n = REQUESTS * len(SAMPLES)
    errors = sum(1 for a in answers for e in a["errors"] if e is not None)
    assert errors == REQUESTS  # one unscorable sample per request

    # Polled as a whole: requests_total is counted after the answer is sent (a scrape can see the
    # samples first), and one slow scrape leaves every series of the target stale until the next.
    def read_back() -> bool:
        assert prom.scalar('sum(reward_api_samples_total{endpoint="/v1/score"})') == n
        assert prom.scalar('sum(reward_api_requests_total{endpoint="/v1/score", status="200"})') == REQUESTS
        assert prom.scalar('sum(reward_api_requests_total{endpoint="/v1/score", status="422"})') == 1
        for reward in REWARDS:
            values = [v for a in answers for v in a["rewards"][reward] if v is not None]
            assert values, reward
            count = prom.scalar(f'sum(reward_api_reward_value_count{{reward="{reward}"}})')
            total = prom.scalar(f'sum(reward_api_reward_value_sum{{reward="{reward}"}})')
            assert count == len(values), (reward, count, len(values))
            assert math.isclose(total, sum(values), rel_tol=1e-9, abs_tol=1e-9), (reward, total, sum(values))
            # the histogram's cumulative buckets agree with the values (all within [-1, 1])
            at_most_half = prom.scalar(f'sum(reward_api_reward_value_bucket{{reward="{reward}", le="0.5"}})')
            assert at_most_half == sum(1 for v in values if v <= 0.5 + 1e-12), reward
        assert prom.scalar("sum(reward_api_sample_errors_total)") == errors
        assert prom.scalar("sum(reward_api_parse_failures_total)") >= REQUESTS
        assert 0 < prom.scalar("sum(reward_api_predicted_boxes_count)") <= n
        return True

    _wait(read_back, 30, f"Prometheus to read back the {n} samples, {REQUESTS + 1} requests and their values")


def test_every_rule_evaluates_cleanly_on_real_data(scored):
    _server, prom, _answers, _pids = scored

    def rules_evaluated():
        groups = prom.http.get("/api/v1/rules").json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None

    rules = _wait(rules_evaluated, 30, "every rule to be evaluated")
    expected = sum(len(g["rules"]) for p in RULES for g in yaml.safe_load(p.read_text())["groups"])
    assert len(rules) == expected
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken, broken
    # the recording rules the dashboard and alerts build on produce series from the real metrics
    for record in ("job:reward_api_replicas_up:sum", "reason:reward_api_sample_errors:ratio_rate5m",
                   "kind:reward_api_parse_failures:ratio_rate10m", "reward:reward_api_reward_value:mean5m",
                   "endpoint:reward_api_request_duration_seconds:p99_5m"):
        _wait(lambda: prom.query(record), 20, f"{record} to have data")

    # Until a second scrape after the first round, both rates are 0 and the ratio is 0/0 = NaN.
    def ratios_in_range() -> list[dict]:
        ratio = prom.query("reason:reward_api_sample_errors:ratio_rate5m")
        values = [float(r["value"][1]) for r in ratio]
        assert ratio and all(math.isfinite(v) and 0 < v <= 1 for v in values), ratio
        return ratio

    ratio = _wait(ratios_in_range, 20, "every sample-error ratio to be a number in (0, 1]")
    assert {r["metric"]["reason"] for r in ratio}


GRAFANA_VARS = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}


def _dashboard_queries() -> list[tuple[str, str, str, str | None]]:
    """(dashboard, panel title, expr, repeat variable) for every target of every dashboard."""
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                out.append((path.name, panel["title"], target["expr"], panel.get("repeat")))
    return out


def test_dashboard_variables_resolve(scored):
    _server, prom, _answers, _pids = scored
    for path in DASHBOARDS:
        for variable in json.loads(path.read_text())["templating"]["list"]:
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
            assert match, f"{path.name}: variable {variable['name']}: unsupported query {variable['definition']}"
            answer = prom.http.get(f"/api/v1/label/{match[2]}/values", params={"match[]": match[1]}).json()
            assert answer["status"] == "success" and set(REWARDS) <= set(answer["data"]), answer


DASHBOARD_QUERIES = _dashboard_queries()


@pytest.mark.parametrize("dashboard,title,expr,repeat", DASHBOARD_QUERIES,
                         ids=[f"{d}:{t}:{i}" for i, (d, t, _e, _r) in enumerate(DASHBOARD_QUERIES)])
def test_dashboard_query_parses_and_returns_data(scored, dashboard, title, expr, repeat):
    _server, prom, _answers, _pids = scored
    for name, value in GRAFANA_VARS.items():
        expr = expr.replace(name, value)
    if "$reward" in expr:
        # a repeated panel runs once per value; otherwise the "All" value (allValue .*)
        exprs = [expr.replace("$reward", r) for r in REWARDS] if repeat == "reward" else [expr.replace("$reward", ".*")]
    else:
        exprs = [expr]
    for query in exprs:
        assert "$" not in query, f"unsubstituted variable in {query!r}"
        _wait(lambda: prom.query(query), 30, f"{dashboard} / {title}: {query!r} to return data")
