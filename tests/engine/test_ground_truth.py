"""Ground truth: text and structured forms read alike; anything unreadable is a SolutionError."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.reward_api.engine.ground_truth import SolutionError, canonical_text, parse_solution

CAT = {"bbox_2d": [10, 20, 110, 220], "label": "Cat"}
DOG = {"bbox_2d": [1.5, 2.5, 30.25, 40], "label": "dog"}


def fenced(items, wrap=True, ensure_ascii=True) -> str:
    block = f"```json\n{json.dumps(items, ensure_ascii=ensure_ascii)}\n```"
    return f"<answer>{block}</answer>" if wrap else block


@pytest.mark.parametrize("text", ["None", " None\n", "<answer>None</answer>", "<answer>\n None \n</answer>"])
def test_none_text(text):
    truth = parse_solution(text)
    assert truth.is_none and truth.n == 0 and truth.boxes.shape == (0, 4)
    assert truth.ws_is_none


def test_empty_structured_list_is_none():
    truth = parse_solution([])
    assert truth.is_none and truth.ws_is_none and truth.labels == ()


@pytest.mark.parametrize("wrap", [True, False])
def test_text_with_a_fence(wrap):
    truth = parse_solution(fenced([CAT, DOG], wrap))
    assert not truth.is_none
    assert truth.labels == ("Cat", "dog")
    assert truth.raw_boxes == ((10, 20, 110, 220), (1.5, 2.5, 30.25, 40))
    np.testing.assert_array_equal(truth.boxes, [[10, 20, 110, 220], [1.5, 2.5, 30.25, 40]])
    assert truth.boxes.dtype == np.float64
    # weighted_sum's view is lower-cased, boxes unchanged
    assert [item["label"] for item in truth.ws_items] == ["cat", "dog"]


def test_empty_fenced_list_is_not_none():
    truth = parse_solution("```json\n[]\n```")
    assert not truth.is_none and truth.n == 0 and not truth.ws_is_none


def test_structured_equals_text():
    structured = parse_solution([CAT, DOG])
    text = parse_solution(f"<answer>\n```json\n[\n  {json.dumps(CAT)},\n  {json.dumps(DOG)}\n]\n```\n</answer>")
    assert structured.labels == text.labels and structured.raw_boxes == text.raw_boxes
    assert structured.ws_items == text.ws_items
    assert canonical_text([]) == "None"


@pytest.mark.parametrize(
    "solution, fragment",
    [
        ("<answer>```json\n[{\"bbox_2d\": [1, 2, 3, 4], \"label\": \"a\"},]\n```</answer>", "not valid JSON"),
        ("```json\n[{\"bbox_2d\": [1, 2, 3], \"label\": \"a\"}]\n```", "has 3 numbers, not 4"),
        ("```json\n[{\"bbox_2d\": [1, 2, NaN, 4], \"label\": \"a\"}]\n```", "not a finite number"),
        ("```json\n[{\"bbox_2d\": [1, 2, Infinity, 4], \"label\": \"a\"}]\n```", "not a finite number"),
        ("```json\n[{\"bbox_2d\": [1, 2, true, 4], \"label\": \"a\"}]\n```", "not a finite number"),
        ("```json\n[{\"bbox_2d\": [1, 2, 1" + "0" * 400 + ", 4], \"label\": \"a\"}]\n```", "not a finite number"),
        ("```json\n[{\"bbox_2d\": [5, 2, 3, 4], \"label\": \"a\"}]\n```", "inverted"),
        ("```json\n[{\"bbox_2d\": [1, 2, 3, 4]}]\n```", "label is missing"),
        ("```json\n[{\"bbox_2d\": [1, 2, 3, 4], \"label\": 7}]\n```", "label is a number, not a string"),
        ("```json\n[{\"label\": \"a\"}]\n```", "bbox_2d is missing"),
        ("```json\n{\"bbox_2d\": [1, 2, 3, 4], \"label\": \"a\"}\n```", "not a list"),
        ("```json\n[[1, 2, 3, 4]]\n```", "not an object"),
        ("a cat at 1, 2, 3, 4", "no ```json block and is not None"),
        ("none", "no ```json block and is not None"),
        ("```json\n[]\n``` ```json\n[]\n```", "more than one"),
        ("```json\n" + "[" * 100_000 + "\n```", "not valid JSON"),
    ],
)
def test_unreadable_text_is_an_error(solution, fragment):
    with pytest.raises(SolutionError) as caught:
        parse_solution(solution)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    "solution, fragment",
    [
        ([{"bbox_2d": [1, 2, 3, 4]}], "item 0: label is missing"),
        ([CAT, {"bbox_2d": [1, 2, 3], "label": "a"}], "item 1: bbox_2d has 3 numbers"),
        ([CAT, {"bbox_2d": [1, 2, float("nan"), 4], "label": "a"}], "item 1: bbox_2d holds something"),
        ([{"bbox_2d": [3, 2, 1, 4], "label": "a"}], "inverted"),
        (["not an object"], "item 0 is a string, not an object"),
        ([{"bbox_2d": [1, 2, 3, 4], "label": "has ``` inside"}], "no text form"),
        ({"bbox_2d": [1, 2, 3, 4], "label": "a"}, "must be a string or a list"),
        (None, "must be a string or a list"),
    ],
)
def test_unreadable_structured_is_an_error(solution, fragment):
    with pytest.raises(SolutionError) as caught:
        parse_solution(solution)
    assert fragment in str(caught.value)


def test_uppercase_fence_is_not_a_fence_even_though_weighted_sum_would_lower_case_it():
    with pytest.raises(SolutionError):
        parse_solution('```JSON\n[{"bbox_2d": [1, 2, 3, 4], "label": "a"}]\n```')


def test_extra_keys_and_unicode_labels_are_kept():
    items = [{"bbox_2d": [0, 0, 5, 5], "label": "Ölkanne ΣΟΦΟΣ", "score": 0.3}]
    truth = parse_solution(items)
    assert truth.labels == ("Ölkanne ΣΟΦΟΣ",)
    assert truth.ws_items[0]["label"] == "Ölkanne ΣΟΦΟΣ".lower()
    assert parse_solution(fenced(items, ensure_ascii=False)).ws_items == truth.ws_items
    # The spec lower-cases the raw text: a label written as \u escapes is not lower-cased.
    assert parse_solution(fenced(items, ensure_ascii=True)).ws_items[0]["label"] == "Ölkanne ΣΟΦΟΣ"
