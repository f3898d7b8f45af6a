"""cosine: length-aware correctness (Demystifying Long Chain-of-Thought, arXiv 2502.03373).

``acc`` is the sample's real ``weighted_sum`` value (with the request's weighted_sum parameters);
the answer is correct when ``acc >= correct_threshold`` (0.7). ``L`` = completion_tokens clamped to
``[0, max_length]`` (1024). A correct answer scores from 1.0 at ``L = 0`` down to 0.5 at
``max_length``, a wrong one from 0.0 down to -0.5, along half a cosine::

    value = hi - (hi - lo) * (1 - cos(pi * L / max_length)) / 2

Departures from the reference: it set ``acc`` to 1.0 (every answer "correct"), and it did not
clamp ``L``, so past ``max_length`` the cosine rose again and a longer answer could score higher.
"""

from __future__ import annotations

import math

from . import RewardInput
from . import weighted_sum as weighted_sum_reward

__all__ = ["cosine_reward", "score", "DEFAULT_MAX_LENGTH", "DEFAULT_CORRECT_THRESHOLD"]

DEFAULT_MAX_LENGTH = 1024
DEFAULT_CORRECT_THRESHOLD = 0.7


def cosine_reward(
    acc: float,
    completion_tokens: int,
    max_length: float = DEFAULT_MAX_LENGTH,
    correct_threshold: float = DEFAULT_CORRECT_THRESHOLD,
) -> float:
    """The cosine-scaled reward of an answer of accuracy ``acc`` that took ``completion_tokens``."""
    length = min(max(completion_tokens, 0), max_length)
    hi, lo = (1.0, 0.5) if acc >= correct_threshold else (0.0, -0.5)
    return hi - (hi - lo) * (1 - math.cos(math.pi * length / max_length)) / 2


def score(inp: RewardInput) -> float:
    if inp.completion_tokens is None:
        # scoring.score_batch refuses such a request before any reward runs.
        raise ValueError("cosine needs completion_tokens")
    params = inp.params_of("cosine")
    acc = weighted_sum_reward.shared_result(inp).value
    return cosine_reward(
        acc,
        inp.completion_tokens,
        params.get("max_length", DEFAULT_MAX_LENGTH),
        params.get("correct_threshold", DEFAULT_CORRECT_THRESHOLD),
    )
