"""engine.matching: its runnable example, and the rule on a hand-made case with ties."""

from __future__ import annotations

import doctest

import numpy as np

from services.reward_api.engine import matching
from services.reward_api.engine.matching import greedy_matching


def test_the_modules_example_runs():
    assert doctest.testmod(matching).failed == 0


def test_ties_go_to_the_lower_prediction_then_the_lower_ground_truth_and_stale_heads_move_on():
    table = np.array([[0.9, 0.9, 0.2], [0.9, 0.8, np.nan], [0.95, 0.1, 0.6]])
    want = [(2, 0, 0.95), (0, 1, 0.9), (1, 2, None)]  # p1's only candidates are taken: unmatched
    got = greedy_matching([0, 1, 2], table.__getitem__, 3, 0.5)
    assert got == [m for m in want if m[2] is not None]
    assert greedy_matching([0, 1, 2], table.__getitem__, 3, 0.5, lambda ps: table[ps]) == got
