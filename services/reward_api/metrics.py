"""Prometheus metrics, correct with several worker processes.

prometheus_client picks its storage when it is first imported: with ``PROMETHEUS_MULTIPROC_DIR``
set, every process writes its samples to mmap files in that directory and /metrics sums them with
a MultiProcessCollector. ``__main__`` sets the variable before anything imports this module.
Without it (the app built in-process, e.g. by a test) the default registry is used.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Latency of a whole request: from a tiny batch (~1 ms) to a 4096-sample one.
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Every reward lies in [-1, 1] (repetition and cosine go below 0): steps of 0.1.
_REWARD_BUCKETS = tuple(round(-1.0 + 0.1 * i, 1) for i in range(21))
_BOX_BUCKETS = (0, 1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 100, 1000)

REQUESTS = Counter("reward_api_requests", "HTTP requests answered.", ["endpoint", "status"])
REQUEST_DURATION = Histogram(
    "reward_api_request_duration_seconds", "Time to answer a request.", ["endpoint"], buckets=_DURATION_BUCKETS
)
SAMPLES = Counter("reward_api_samples", "Samples received in accepted requests.", ["endpoint"])
REWARD_VALUE = Histogram("reward_api_reward_value", "Reward values computed.", ["reward"], buckets=_REWARD_BUCKETS)
SAMPLE_ERRORS = Counter("reward_api_sample_errors", "Samples that could not be scored.", ["reason"])
PREDICTED_BOXES = Histogram(
    "reward_api_predicted_boxes", "Items in the answer's box list, per completion.", buckets=_BOX_BUCKETS
)
PARSE_FAILURES = Counter("reward_api_parse_failures", "Completions whose parsing failed, by what failed.", ["kind"])


def observe_request(endpoint: str, status: int, seconds: float) -> None:
    REQUESTS.labels(endpoint, str(status)).inc()
    REQUEST_DURATION.labels(endpoint).observe(seconds)


def observe_batch(endpoint: str, n_samples: int, values: dict, error_reasons, stats) -> None:
    """Record one scored batch. ``stats`` are the engine's per-sample stats: nothing is re-parsed."""
    SAMPLES.labels(endpoint).inc(n_samples)
    for name, column in values.items():
        histogram = REWARD_VALUE.labels(name)
        for value in column:
            if value is not None:
                histogram.observe(value)
    for reason in error_reasons:
        if reason is not None:
            SAMPLE_ERRORS.labels(reason).inc()
    for n_boxes in stats.predicted_boxes:
        if n_boxes is not None:
            PREDICTED_BOXES.observe(n_boxes)
    for kind, count in stats.parse_failures.items():  # a Counter's items: every count is positive
        PARSE_FAILURES.labels(kind).inc(count)


def multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def exposition() -> tuple[bytes, str]:
    """The text exposition of all processes' metrics (summed), and its content type."""
    directory = multiproc_dir()
    if directory is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_dead(pid: int) -> None:
    """Drop a finished process's live-gauge files (the counters and histograms stay summed)."""
    if multiproc_dir() is not None:
        multiprocess.mark_process_dead(pid)
