"""metrics.observe_many: the same histogram as one observe() per value (what it replaced, for speed)."""

from __future__ import annotations

import math
import random

from prometheus_client import CollectorRegistry, Histogram

from services.reward_api.metrics import _BOX_BUCKETS, _REWARD_BUCKETS, observe_many


def samples_of(histogram_buckets, observe) -> dict:
    registry = CollectorRegistry()
    histogram = Histogram("h", "test", buckets=histogram_buckets, registry=registry)
    observe(histogram)
    return {(s.name, s.labels.get("le")): s.value for m in registry.collect() for s in m.samples
            if not s.name.endswith("_created")}


def test_observe_many_gives_what_observe_per_value_gives():
    rng = random.Random(5)
    rewards = [rng.choice([-1.0, -0.1, 0.0, 0.1, 0.3, 1.0, round(rng.uniform(-1, 1), 3)]) for _ in range(5000)]
    boxes = [rng.randint(0, 2000) for _ in range(3000)]
    for buckets, values in ((_REWARD_BUCKETS, rewards), (_BOX_BUCKETS, boxes), (_BOX_BUCKETS, [])):
        one_by_one = samples_of(buckets, lambda h, values=values: [h.observe(v) for v in values])
        at_once = samples_of(buckets, lambda h, values=values: observe_many(h, values))
        assert one_by_one.keys() == at_once.keys()
        for key, value in one_by_one.items():
            assert math.isclose(at_once[key], value, rel_tol=1e-9, abs_tol=1e-9), key  # the sum: another order
