"""Prometheus counts summed over processes that share no disk: the replicas of a Ray Serve application.

uvicorn's workers on one host sum their metrics through mmap files (``metrics``); Serve's replicas run
on many hosts. Each replica counts in its own process (prometheus_client's default registry) and sends
what it counted since its last report (:func:`read_counts`, :func:`difference`) to one :class:`Totals`,
which adds the reports up and writes the exposition: the same series, names and help texts as one
uvicorn service. Only counters and histograms exist here (``metrics``): sums of sums stay exact.

>>> totals = Totals()
>>> families = {"reward_api_samples": ("counter", "Samples.")}
>>> key = ("reward_api_samples", "reward_api_samples_total", (("endpoint", "/v1/score"),))
>>> totals.add(families, {key: 3.0})
>>> totals.add(families, difference({key: 5.0}, {key: 3.0}))
>>> [line for line in totals.exposition().decode().splitlines() if not line.startswith("#")]
['reward_api_samples_total{endpoint="/v1/score"} 5.0']
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# (family, sample name, labels in the registry's order): one series of one sample, e.g. a histogram's
# le="0.5" bucket. Every replica runs the same code, so one series has one key everywhere.
Key = tuple[str, str, tuple[tuple[str, str], ...]]
Counts = dict[Key, float]
# family -> (type, help text)
Families = dict[str, tuple[str, str]]

PREFIX = "reward_api_"  # the service's own metrics; the process's and the GC's are per process
SUMMABLE = ("counter", "histogram")


def read_counts(registry: CollectorRegistry = REGISTRY) -> tuple[Families, Counts]:
    """This process's counts of the service's metrics (``_created`` timestamps left out: not summable)."""
    families: Families = {}
    counts: Counts = {}
    for family in registry.collect():
        if not family.name.startswith(PREFIX) or family.type not in SUMMABLE:
            continue
        families[family.name] = (family.type, family.documentation)
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                counts[(family.name, sample.name, tuple(sample.labels.items()))] = sample.value
    return families, counts


def difference(now: Counts, before: Counts) -> Counts:
    """What changed since ``before`` was reported; a series never reported comes whole (its zero
    buckets too: a histogram is exposed with all its buckets)."""
    return {
        key: value - before.get(key, 0.0) for key, value in now.items() if key not in before or value != before[key]
    }


class Totals(Collector):
    """The sums of every replica's reports. Memory is bounded by the number of series (fixed label
    sets), not by the number of replicas or reports."""

    def __init__(self) -> None:
        self.families: Families = {}
        self.counts: Counts = {}

    def add(self, families: Families, delta: Counts) -> None:
        self.families.update(families)
        for key, value in delta.items():
            self.counts[key] = self.counts.get(key, 0.0) + value

    def collect(self):
        by_family: dict[str, list[Key]] = {}
        for key in sorted(self.counts, key=_exposition_order):
            by_family.setdefault(key[0], []).append(key)
        for name, keys in by_family.items():
            kind, documentation = self.families[name]
            metric = Metric(name, documentation, kind)
            for _, sample, labels in keys:
                metric.add_sample(sample, dict(labels), self.counts[(name, sample, labels)])
            yield metric

    def exposition(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(registry)


_SUFFIX_ORDER = {"_bucket": 0, "_count": 1, "_sum": 2}


def _exposition_order(key: Key) -> tuple:
    """A histogram's buckets in ascending ``le``, then its count and sum, series by series."""
    family, sample, labels = key
    series = tuple(item for item in labels if item[0] != "le")
    le = dict(labels).get("le")
    suffix = sample[len(family) :]
    return family, series, _SUFFIX_ORDER.get(suffix, 0), float(le) if le is not None else 0.0
