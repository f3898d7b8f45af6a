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


def test_malformed_json_is_repaired_when_small_in_version_1():
    text = "```json\n[{'bbox_2d': [1, 2, 3, 4], 'label': 'cat'}, {'bbox_2d': [1, 2, 3, 4], 'label': 'cat'},]\n```"
    assert repetition_reward(ParsedCompletion(text), version="1") == pytest.approx(-0.5)
    # version 2 repairs only box lists cut short (linear time): single quotes are words (a departure)
    assert repetition(ParsedCompletion(text)).source == "words"


def test_malformed_json_longer_than_the_bound_is_not_repaired():
    item = "{'bbox_2d': [1, 2, 3, 4], 'label': 'cat'}, "
    block = "[" + item * (REPAIR_MAX_CHARS // len(item) + 1) + "]"
    result = repetition(ParsedCompletion(f"```json\n{block}\n```"))
    assert result.source == "words"


def test_malformed_json_longer_than_the_bound_is_words_in_version_1_only():
    item = '{"bbox_2d": [1, 2, 3, 4], "label": "cat"}, '
    cut = "```json\n[" + item * 40 + '{"bbox_2d": [1, 2\n```'  # 1,760 characters, cut off, fence closed
    assert len(cut) > REPAIR_MAX_CHARS
    assert repetition(ParsedCompletion(cut), version="1").source == "words"
    result = repetition(ParsedCompletion(cut))
    assert (result.source, result.total, result.distinct) == ("json_fence", 40, 1)
    assert result.value == pytest.approx(-(1 - 1 / 40))


def test_a_cut_list_of_4096_tokens_is_read_as_a_list():
    # the longest completion a recipe allows: about 16 KB of boxes, repeated, cut mid-label
    boxes = [f'{{"bbox_2d": [{i}, {i}, {i + 50}, {i + 60}], "label": "person"}}' for i in range(5)]
    text = "```json\n[" + ", ".join(boxes[i % 5] for i in range(340)) + ', {"bbox_2d": [1, 2, 3, 4], "label": "pe\n```'
    assert len(text) > 16_000
    result = repetition(ParsedCompletion(text))
    assert (result.source, result.total, result.distinct) == ("json_fence", 341, 6)  # the cut label "pe" counts too


def test_version_2_goes_on_after_an_empty_plain_fence():
    text = f"``` ``` then [{A}, {A}, {A}]"
    assert repetition(ParsedCompletion(text), version="1").source == "words"
    result = repetition(ParsedCompletion(text))
    assert (result.source, result.value) == ("bare_list", pytest.approx(-2 / 3))
    # an empty ```json block is "nothing found" in both versions, as in the reference
    assert repetition(ParsedCompletion(f"```json ``` then [{A}, {A}, {A}]")).source == "words"
