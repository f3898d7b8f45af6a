"""metrics_totals: the counts of replicas that share no disk (Ray Serve's), reported as deltas and
summed, expose exactly what one process that saw every observation would (the Serve path's /metrics
end to end: tests/deploy/test_ray_serve.py)."""

from __future__ import annotations

import doctest

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from services.reward_api import metrics_totals
from services.reward_api.metrics_totals import Totals, difference, read_counts


def replica() -> tuple[CollectorRegistry, Counter, Histogram]:
    registry = CollectorRegistry()
    requests = Counter("reward_api_requests", "HTTP requests answered.", ["endpoint", "status"], registry=registry)
    values = Histogram("reward_api_reward_value", "Reward values.", ["reward"], buckets=(0.0, 0.5, 1.0),
                       registry=registry)  # fmt: skip
    Counter("other_library_total", "Not the service's: left out.", registry=registry).inc()
    return registry, requests, values


def the_service_s(exposition: bytes) -> list[str]:
    """The service's lines (no ``_created`` timestamps), in an order that does not depend on which
    series was seen first: Prometheus reads a family's series in any order."""
    return sorted(line for line in exposition.decode().splitlines() if "_created" not in line and "other_" not in line)


def test_summed_reports_expose_what_one_process_seeing_everything_would():
    first, second, together = replica(), replica(), replica()
    totals = Totals()
    sent = {0: {}, 1: {}}

    def report(index: int, registry: CollectorRegistry) -> None:
        families, now = read_counts(registry)
        totals.add(families, difference(now, sent[index]))
        sent[index] = now

    observations = [
        (first, "/v1/score", "200", "format", 1.0),
        (second, "/v1/score", "200", "ap", 0.25),
        (first, "/v1/score", "503", "format", 0.0),
        (second, "/metrics", "200", "format", 0.75),
    ]
    for step, (registry_of, endpoint, status, reward, value) in enumerate(observations):
        for _, requests, values in (registry_of, together):
            requests.labels(endpoint, status).inc()
            values.labels(reward).observe(value)
        report(0, first[0])
        if step % 2:  # the second replica reports every other step: late reports add up the same
            report(1, second[0])
    report(1, second[0])
    report(0, first[0])  # nothing new: an empty delta changes nothing
    assert the_service_s(totals.exposition()) == the_service_s(generate_latest(together[0]))
    assert "other_library" not in totals.exposition().decode()


def test_a_series_first_reported_with_zero_buckets_is_exposed_whole():
    registry, _, values = replica()
    values.labels("format").observe(0.75)
    families, counts = read_counts(registry)
    buckets = [key for key in counts if key[1] == "reward_api_reward_value_bucket"]
    assert len(buckets) == 4  # 0.0, 0.5 (zero), 1.0, +Inf
    totals = Totals()
    totals.add(families, difference(counts, {}))
    lines = [line for line in totals.exposition().decode().splitlines() if "_bucket" in line]
    assert [line.split("le=")[1].split('"')[1] for line in lines] == ["0.0", "0.5", "1.0", "+Inf"]


def test_docstring_example():
    assert doctest.testmod(metrics_totals).failed == 0
