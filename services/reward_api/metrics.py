"""Prometheus metrics, correct with several worker processes.

prometheus_client picks its storage when it is first imported: with ``PROMETHEUS_MULTIPROC_DIR``
set, every process writes its samples to mmap files in that directory and /metrics sums them with
a MultiProcessCollector. ``__main__`` sets the variable before anything imports this module.
Without it (the app built in-process, e.g. by a test) the default registry is used. When the
directory cannot hold the files, metrics are off (``metrics_storage``): recorded in memory only,
and /metrics answers 503 with the reason.
"""

from __future__ import annotations

import os

from . import metrics_storage
from .metrics_tally import BOX_BUCKETS, REWARD_BUCKETS, BatchTally, Buckets

# Before prometheus_client picks its storage: a worker restarted on a full disk must not crash.
metrics_storage.check_worker()

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = metrics_storage.MULTIPROC_ENV

# Latency of a whole request: from a tiny batch (~1 ms) to a 4096-sample one.
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter("reward_api_requests", "HTTP requests answered.", ["endpoint", "status"])
REQUEST_DURATION = Histogram(
    "reward_api_request_duration_seconds", "Time to answer a request.", ["endpoint"], buckets=_DURATION_BUCKETS
)
SAMPLES = Counter("reward_api_samples", "Samples received in accepted requests.", ["endpoint"])
REWARD_VALUE = Histogram("reward_api_reward_value", "Reward values computed.", ["reward"], buckets=REWARD_BUCKETS)
SAMPLE_ERRORS = Counter("reward_api_sample_errors", "Samples that could not be scored.", ["reason"])
PREDICTED_BOXES = Histogram(
    "reward_api_predicted_boxes", "Items in the answer's box list, per completion.", buckets=BOX_BUCKETS
)
PARSE_FAILURES = Counter("reward_api_parse_failures", "Completions whose parsing failed, by what failed.", ["kind"])


def observe_request(endpoint: str, status: int, seconds: float) -> None:
    REQUESTS.labels(endpoint, str(status)).inc()
    REQUEST_DURATION.labels(endpoint).observe(seconds)


def observe_batch(endpoint: str, tally: BatchTally) -> None:
    """Record one scored batch, tallied where it was scored (metrics_tally): nothing is re-parsed."""
    SAMPLES.labels(endpoint).inc(tally.samples)
    for name, buckets in tally.rewards.items():
        add_buckets(REWARD_VALUE.labels(name), buckets)
    for reason, count in tally.sample_errors.items():
        SAMPLE_ERRORS.labels(reason).inc(count)
    add_buckets(PREDICTED_BOXES, tally.boxes)
    for kind, count in tally.parse_failures.items():  # only kinds that occurred: every count is positive
        PARSE_FAILURES.labels(kind).inc(count)


def add_buckets(histogram: Histogram, buckets: Buckets) -> None:
    """What ``histogram.observe(v)`` for every value of ``buckets`` gives, with one write per bucket
    touched instead of two per value: in multiprocess mode each write goes to an mmap file, and a
    4,096-sample batch of seven rewards took 60 ms of its worker's time, one by one. ``buckets``
    were counted against the histogram's own bounds (metrics_tally; tests/service/test_metrics_bulk.py)."""
    if not any(buckets.counts):
        return
    for index, count in enumerate(buckets.counts):
        if count:
            histogram._buckets[index].inc(count)  # prometheus_client's own fields: the version is pinned
    histogram._sum.inc(buckets.total)


def multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class MetricsOff(Exception):
    """Metrics storage failed at start; the message says why (answered 503 by /metrics)."""


def exposition() -> tuple[bytes, str]:
    """The text exposition of all processes' metrics (summed), and its content type."""
    reason = metrics_storage.off_reason()
    if reason is not None:
        raise MetricsOff(f"metrics are off: {reason}")
    directory = multiproc_dir()
    if directory is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    for attempt in range(3):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        try:
            return generate_latest(registry), CONTENT_TYPE_LATEST
        except FileNotFoundError:  # a dead worker's file folded away between listing and reading
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def host_exposition() -> tuple[bytes, str]:
    """:func:`exposition`, as the /metrics route awaits it (a Ray Serve replica's source asks the cluster)."""
    return exposition()


def fold_dead_workers() -> int:
    """At a worker's start: fold the files of workers that are gone (metrics_storage)."""
    directory = multiproc_dir()
    return 0 if directory is None else metrics_storage.fold_dead_workers(directory)
