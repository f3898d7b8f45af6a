"""repetition reward: box items, then word 6-grams; hand-computed values."""

import math

import pytest

from services.reward_api.engine.parsing import REPAIR_MAX_CHARS, ParsedCompletion
from services.reward_api.engine.rewards.repetition import repetition, repetition_reward

A = '{"bbox_2d": [1, 2, 3, 4], "label": "cat"}'
B = '{"bbox_2d": [5, 6, 7, 8], "label": "cat"}'


def reward(text: str) -> float:
    return repetition_reward(ParsedCompletion(text))


def test_empty_completion():
    assert reward("") == 0.0


def test_repeated_boxes():
    assert reward(f"```json\n[{A}, {A}, {B}]\n```") == pytest.approx(-1 / 3)
    assert reward(f"```json\n[{A}, {A}, {A}, {A}]\n```") == pytest.approx(-0.75)


def test_no_repeat_is_plain_zero_not_negative_zero():
    value = reward(f"```json\n[{A}, {B}]\n```")
    assert value == 0.0 and math.copysign(1.0, value) == 1.0


def test_items_compare_as_python_str_of_the_parsed_values():
    # [1, 2, 3, 4] and [1.0, 2, 3, 4] are different strings, so not repeats
    other = '{"bbox_2d": [1.0, 2, 3, 4], "label": "cat"}'
    assert reward(f"```json\n[{A}, {other}]\n```") == 0.0
    assert repetition(ParsedCompletion(f"```json\n[{A}, {A}]\n```")).total == 2


def test_departure_non_object_items_are_skipped():
    assert reward(f'```json\n[1, "bbox_2d label", [1], {A}, {A}]\n```') == pytest.approx(-0.5)


def test_objects_without_both_keys_give_zero():
    assert reward('```json\n[{"bbox_2d": [1, 2, 3, 4]}, {"label": "a"}, 3]\n```') == 0.0


def test_plain_fence_and_bare_list_fallbacks():
    assert reward(f"```\n[{A}, {A}]\n```") == pytest.approx(-0.5)
    assert reward(f"I see [ {A}, {A} ] here") == pytest.approx(-0.5)


def test_word_six_grams():
    # 12 words, 7 six-grams, the first and last equal: -(1 - 6/7)
    assert reward("a b c d e f A B C D E F") == pytest.approx(-1 / 7)
    assert reward("one two three four five") == 0.0  # fewer than 6 words
    assert reward("the the the the the the the the") == pytest.approx(-(1 - 1 / 3))


@pytest.mark.parametrize(
    "block, expected",
    [
        # words: ```json [] ``` w*18 -> 16 six-grams, 3 distinct ones then 13 of (w,)*6: -(1 - 4/16)
        ("[]", -(1 - 4 / 16)),
        ("{}", -(1 - 4 / 16)),
        # one more word: 17 six-grams, 5 distinct
        ("@@@ ###", -(1 - 5 / 17)),
    ],
)
def test_unusable_block_falls_back_to_words(block, expected):
    text = f"```json\n{block}\n```" + " w" * 18
    result = repetition(ParsedCompletion(text))
    assert result.source == "words"
    assert result.value == pytest.approx(expected)


def test_malformed_json_is_repaired_when_small():
    text = "```json\n[{'bbox_2d': [1, 2, 3, 4], 'label': 'cat'}, {'bbox_2d': [1, 2, 3, 4], 'label': 'cat'},]\n```"
    assert reward(text) == pytest.approx(-0.5)


def test_malformed_json_longer_than_the_bound_is_not_repaired():
    item = "{'bbox_2d': [1, 2, 3, 4], 'label': 'cat'}, "
    block = "[" + item * (REPAIR_MAX_CHARS // len(item) + 1) + "]"
    result = repetition(ParsedCompletion(f"```json\n{block}\n```"))
    assert result.source == "words"
