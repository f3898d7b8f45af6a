r"""What one scored batch adds to the service's Prometheus metrics, as plain numbers.

A batch's tally is computed where the batch was scored: in the worker, or for a large batch in
each scoring process of the pool for its own chunk (scoring_pool.py), beside the other chunks, so
that bucketing 4,096 x 7 reward values is not left to the worker after the pool is done. The
worker adds the chunks' tallies up (`merged`) and writes them (metrics.observe_batch). No
prometheus_client here: the scoring processes import this module and must not open metrics files.

>>> from .engine.scoring import score_batch
>>> box = '[{"bbox_2d": [10, 20, 110, 220], "label": "cat"}]'
>>> answer = f"<answer>```json\n{box}\n```</answer>"
>>> good = {"completion": f"<think>a cat</think>{answer}", "solution": answer}
>>> tally = tally_batch(score_batch([good, {"completion": "none", "solution": "?"}], ["format", "ap"]))
>>> tally.samples, tally.rewards["ap"].counts[-2:], round(tally.rewards["ap"].total, 9)
(2, [1, 0], 1.0)
>>> tally.sample_errors, tally.boxes.counts[:2], tally.parse_failures
({'invalid_solution': 1}, [0, 1], {'no_answer': 1})
>>> merged([tally, tally]).rewards["format"].total
2.0
"""

from __future__ import annotations

import bisect
import functools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .engine.scoring import BatchScores

# Every reward lies in [-1, 1] (repetition and cosine go below 0): steps of 0.1.
REWARD_BUCKETS = tuple(round(-1.0 + 0.1 * i, 1) for i in range(21))
BOX_BUCKETS = (0, 1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 100, 1000)


@dataclass(frozen=True)
class Buckets:
    """One histogram's share of a batch: ``counts[i]`` values fall in bucket i (the first whose upper
    bound is at least the value, as ``Histogram.observe`` puts it; the last bucket is +Inf), and
    their sum."""

    counts: list[int]
    total: float

    @classmethod
    def of(cls, bounds: Sequence[float], values: list[float]) -> Buckets:
        upper = [*bounds, math.inf]
        counts = [0] * len(upper)
        for index, count in Counter(map(functools.partial(bisect.bisect_left, upper), values)).items():
            counts[index] = count
        return cls(counts, float(sum(values)))

    def __add__(self, other: Buckets) -> Buckets:
        return Buckets([a + b for a, b in zip(self.counts, other.counts, strict=True)], self.total + other.total)


@dataclass(frozen=True)
class BatchTally:
    """A batch's samples, reward values and boxes bucketed, errors and parse failures counted."""

    samples: int
    rewards: dict[str, Buckets]
    boxes: Buckets
    sample_errors: dict[str, int]
    parse_failures: dict[str, int]


def tally_batch(scores: BatchScores) -> BatchTally:
    """The tally of one scored batch: its reward values (None and non-finite values left out: one
    NaN would make a histogram's sum NaN for good), the samples' error reasons, the items of each
    answer's box list (None: no answer block) and the parse failures by kind."""
    return BatchTally(
        samples=len(scores.error_reasons),
        rewards={
            name: Buckets.of(REWARD_BUCKETS, [v for v in column if v is not None and math.isfinite(v)])
            for name, column in scores.values.items()
        },
        boxes=Buckets.of(BOX_BUCKETS, [n for n in scores.stats.predicted_boxes if n is not None]),
        sample_errors=dict(Counter(reason for reason in scores.error_reasons if reason is not None)),
        parse_failures=dict(scores.stats.parse_failures),
    )


def merged(parts: Sequence[BatchTally]) -> BatchTally:
    """The tally of the batch whose chunks ``parts`` are (each tallied where it was scored)."""
    first = parts[0]
    errors: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for part in parts:
        errors.update(part.sample_errors)
        failures.update(part.parse_failures)
    rewards = dict(first.rewards)
    boxes = first.boxes
    for part in parts[1:]:
        rewards = {name: rewards[name] + part.rewards[name] for name in rewards}
        boxes = boxes + part.boxes
    return BatchTally(sum(p.samples for p in parts), rewards, boxes, dict(errors), dict(failures))
