"""format reward: full match of <think>.*?</think>\\s*<answer>.*?</answer>."""

import pytest

from services.reward_api.engine.parsing import ParsedCompletion
from services.reward_api.engine.rewards.format import format_reward


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>t</think><answer>a</answer>", 1.0),
        ("<think>\nmulti\nline\n</think>\n\t <answer>\n```json\n[]\n```\n</answer>", 1.0),
        ("<think></think><answer></answer>", 1.0),
        ("<think>a</think>b<answer>c</answer>", 0.0),  # text between the blocks
        (" <think>t</think><answer>a</answer>", 0.0),  # leading space: not a full match
        ("<think>t</think><answer>a</answer>\n", 0.0),  # trailing newline
        ("<think>t</think><answer>a</answer><answer>b</answer>", 1.0),  # lazy .*? may still stretch
        ("<think>t</think>\u00a0<answer>a</answer>", 1.0),  # \s is Unicode white space
        ("<think>t</think>\u200b<answer>a</answer>", 0.0),  # zero-width space is not \s
        ("<think>a</think>x</think> <answer>b</answer>", 1.0),  # a later </think> can work
        ("<answer>a</answer>", 0.0),
        ("", 0.0),
    ],
)
def test_format(text, expected):
    assert format_reward(ParsedCompletion(text)) == expected
