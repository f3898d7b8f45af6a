"""metrics.add_buckets of a metrics_tally: the same histogram as one observe() per value (what it
replaced, for speed), and a large batch's tally merged from its chunks' tallies is the batch's own."""

from __future__ import annotations

import doctest
import math
import random

from prometheus_client import CollectorRegistry, Histogram

from bench.http import ALL_REWARDS, synthetic_samples
from services.reward_api import metrics, metrics_tally
from services.reward_api.engine.scoring import score_batch
from services.reward_api.metrics_tally import BOX_BUCKETS, REWARD_BUCKETS, Buckets, merged, tally_batch
from services.reward_api.scoring_pool import chunk_ranges


def samples_of(histogram_buckets, observe) -> dict:
    registry = CollectorRegistry()
    histogram = Histogram("h", "test", buckets=histogram_buckets, registry=registry)
    observe(histogram)
    return {(s.name, s.labels.get("le")): s.value for m in registry.collect() for s in m.samples
            if not s.name.endswith("_created")}


def test_added_buckets_give_what_observe_per_value_gives():
    rng = random.Random(5)
    rewards = [rng.choice([-1.0, -0.1, 0.0, 0.1, 0.3, 1.0, round(rng.uniform(-1, 1), 3)]) for _ in range(5000)]
    boxes = [rng.randint(0, 2000) for _ in range(3000)]
    for bounds, values in ((REWARD_BUCKETS, rewards), (BOX_BUCKETS, boxes), (BOX_BUCKETS, [])):
        one_by_one = samples_of(bounds, lambda h, values=values: [h.observe(v) for v in values])
        at_once = samples_of(bounds, lambda h, values=values, bounds=bounds: metrics.add_buckets(
            h, Buckets.of(bounds, values)))
        assert one_by_one.keys() == at_once.keys()
        for key, value in one_by_one.items():
            assert math.isclose(at_once[key], value, rel_tol=1e-9, abs_tol=1e-9), key  # the sum: another order


def test_the_service_histograms_have_the_tallys_bounds():
    assert metrics.REWARD_VALUE.labels("ap")._upper_bounds == [*REWARD_BUCKETS, math.inf]
    assert metrics.PREDICTED_BOXES._upper_bounds == [*BOX_BUCKETS, math.inf]


def test_chunks_tallies_merged_are_the_whole_batchs_tally():
    samples = synthetic_samples(600, seed=7)
    whole = tally_batch(score_batch(samples, ALL_REWARDS))
    parts = [tally_batch(score_batch(samples[lo:hi], ALL_REWARDS))
             for ranges, _ in chunk_ranges([600], 64) for lo, hi in ranges]
    together = merged(parts)
    assert (together.samples, together.sample_errors, together.parse_failures) == (
        whole.samples, whole.sample_errors, whole.parse_failures)
    assert together.boxes.counts == whole.boxes.counts and together.boxes.total == whole.boxes.total
    assert together.rewards.keys() == whole.rewards.keys()
    for name, buckets in whole.rewards.items():
        assert together.rewards[name].counts == buckets.counts
        assert math.isclose(together.rewards[name].total, buckets.total, rel_tol=1e-12), name


def test_docstring_examples():
    result = doctest.testmod(metrics_tally, report=True)
    assert result.attempted >= 4 and result.failed == 0
