"""The ``>>>`` examples in the reward modules' docstrings run, and pass (TRL's style: every reward
shows what it gives). ``make test`` runs this file like any other."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "services.reward_api.engine.rewards.format",
    "services.reward_api.engine.rewards.detection",
    "services.reward_api.engine.rewards.weighted_sum",
    "services.reward_api.engine.rewards.repetition",
    "services.reward_api.engine.rewards.cosine",
    "services.reward_api.engine.repair",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, report=True)
    assert result.attempted >= 3, f"{name} shows too few examples"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (see the output above)"
