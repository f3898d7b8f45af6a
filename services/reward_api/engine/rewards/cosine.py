"""cosine: length-aware correctness (Demystifying Long Chain-of-Thought, arXiv 2502.03373).

``acc`` is the sample's real ``weighted_sum`` value (with the request's weighted_sum parameters,
of the same version); the answer is correct when ``acc >= correct_threshold`` (0.7). ``L`` =
completion_tokens clamped to ``[0, max_length]`` (1024). Along half a cosine of ``L``::

    value = start - (start - end) * (1 - cos(pi * L / max_length)) / 2

A correct answer goes from ``start`` 1.0 at ``L = 0`` down to ``end`` 0.5 at ``max_length``. A
wrong one, in version 2 (the default), from -0.5 at ``L = 0`` up to 0.0 at ``max_length``: the
reference's arithmetic, where a wrong answer is penalised less the longer it explores. Version 1
read the reference's variable names instead of its formula and ran wrong answers the other way,
0.0 down to -0.5.

Departures from the reference (both versions): it set ``acc`` to 1.0 (every answer "correct"),
and it did not clamp ``L``, so past ``max_length`` the cosine rose again and a longer answer could
score higher.
"""

from __future__ import annotations

import math

from . import RewardInput
from . import weighted_sum as weighted_sum_reward

__all__ = ["DEFAULT_CORRECT_THRESHOLD", "DEFAULT_MAX_LENGTH", "cosine_reward", "score", "score_v2"]

DEFAULT_MAX_LENGTH = 1024
DEFAULT_CORRECT_THRESHOLD = 0.7
# (value at L = 0, value at L = max_length) of each branch, per version.
_CORRECT = (1.0, 0.5)
_WRONG = {"1": (0.0, -0.5), "2": (-0.5, 0.0)}


def cosine_reward(
    acc: float,
    completion_tokens: int,
    max_length: float = DEFAULT_MAX_LENGTH,
    correct_threshold: float = DEFAULT_CORRECT_THRESHOLD,
    version: str = "2",
) -> float:
    """The cosine-scaled reward of an answer of accuracy ``acc`` that took ``completion_tokens``.

    >>> cosine_reward(1.0, 0), cosine_reward(1.0, 512), cosine_reward(1.0, 1024)
    (1.0, 0.75, 0.5)
    >>> cosine_reward(0.0, 0), round(cosine_reward(0.0, 256), 4), cosine_reward(0.0, 1024)
    (-0.5, -0.4268, 0.0)
    >>> cosine_reward(0.0, 0, version="1"), round(cosine_reward(0.0, 256, version="1"), 4)
    (0.0, -0.0732)
    >>> cosine_reward(1.0, 5000)  # clamped: never higher than at max_length
    0.5
    """
    length = min(max(completion_tokens, 0), max_length)
    start, end = _CORRECT if acc >= correct_threshold else _WRONG[version]
    return start - (start - end) * (1 - math.cos(math.pi * length / max_length)) / 2


def _score(inp: RewardInput, version: str) -> float:
    if inp.completion_tokens is None:
        # scoring.score_batch refuses such a request before any reward runs.
        raise ValueError("cosine needs completion_tokens")
    params = inp.params_of("cosine")
    acc = weighted_sum_reward.shared_result(inp, version).value
    return cosine_reward(
        acc,
        inp.completion_tokens,
        params.get("max_length", DEFAULT_MAX_LENGTH),
        params.get("correct_threshold", DEFAULT_CORRECT_THRESHOLD),
        version,
    )


def score(inp: RewardInput) -> float:
    return _score(inp, "1")


def score_v2(inp: RewardInput) -> float:
    return _score(inp, "2")
