"""format: does the completion follow ``<think>...</think> <answer>...</answer>``?

``1.0`` if the whole completion matches ``<think>.*?</think>\\s*<answer>.*?</answer>`` (full
match, dot matches newline), else ``0.0``. The match itself is ``parsing.format_matches``, a
linear scan equal to ``re.fullmatch`` on that pattern. Versions 1 and 2 are the same function
(format has nothing to mend; version 2 exists so that a client can pin every reward at "2").
"""

from __future__ import annotations

from ..parsing import ParsedCompletion
from . import RewardInput

__all__ = ["format_reward", "score"]


def format_reward(parsed: ParsedCompletion) -> float:
    """1.0 when the completion is exactly a think block, white space, then an answer block.

    >>> from services.reward_api.engine.parsing import ParsedCompletion
    >>> format_reward(ParsedCompletion("<think>a cat</think>\\n<answer>None</answer>"))
    1.0
    >>> format_reward(ParsedCompletion("<answer>None</answer>"))
    0.0
    >>> format_reward(ParsedCompletion("<think>a</think><answer>None</answer> trailing"))
    0.0
    """
    return 1.0 if parsed.format_ok else 0.0


def score(inp: RewardInput) -> float:
    return format_reward(inp.parsed)
