"""The linear scanners agree with Python's ``re`` on random text of the tag and fence alphabet."""

from __future__ import annotations

import random
import re
import time

import pytest

from services.reward_api.engine import parsing
from services.reward_api.engine.parsing import (
    ParsedCompletion,
    box_list,
    first_bare_box_list,
    first_block,
    format_matches,
    iter_blocks,
    join_lines,
    last_answer_span,
    load_json,
    normalise_for_weighted_sum,
    repetition_box_list,
)

# Tags, fences, key fragments and white space of every kind \s knows (and one it does not: \u200b).
TOKENS = [
    "<answer>", "</answer>", "<think>", "</think>", "```json", "```", "``", "`", "json",
    "[", "]", "{", "}", '"bbox_2d"', '"label"', '"', ":", ",", "1",
    " ", "\n", "\r", "\t", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2028", "\u3000", "\u200b",
    "a", "A", ".", "<", ">", "/", "<answer", "answer>", "</think", "None",
]
N_CASES = 4000


def random_texts(seed: int, n: int = N_CASES, max_tokens: int = 14):
    rng = random.Random(seed)
    for _ in range(n):
        yield "".join(rng.choice(TOKENS) for _ in range(rng.randint(0, max_tokens)))


def structured_texts(seed: int, n: int = N_CASES):
    """The format skeleton with random filling, pieces randomly dropped or doubled: near-matches."""
    rng = random.Random(seed)
    filler = ["<think>", "</think>", "<answer>", "</answer>", " ", "\n", "\xa0", "x", "\u200b", "\x1c"]
    skeleton = ["<think>", None, "</think>", "ws", "<answer>", None, "</answer>"]
    for _ in range(n):
        pieces = []
        for piece in skeleton:
            copies = rng.choices([0, 1, 2], weights=[1, 8, 1])[0]
            for _ in range(copies):
                if piece is None:
                    pieces.append("".join(rng.choice(filler) for _ in range(rng.randint(0, 3))))
                elif piece == "ws":
                    pieces.append("".join(rng.choice(" \n\t\xa0\u2028\u200bx") for _ in range(rng.randint(0, 3))))
                else:
                    pieces.append(piece)
        yield "".join(pieces)


ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
JSON_FENCE_RE = re.compile(r"```json(.*?)```", re.DOTALL)
FENCE_RE = re.compile(r"```(.*?)```", re.DOTALL)
FORMAT_RE = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
BARE_LIST_RE = re.compile(r'\[\s*{.*?"bbox_2d".*?"label".*?}\s*\]', re.DOTALL)


@pytest.mark.parametrize(
    "pattern, opening, closing",
    [(ANSWER_RE, "<answer>", "</answer>"), (JSON_FENCE_RE, "```json", "```"), (FENCE_RE, "```", "```")],
)
def test_iter_blocks_is_finditer(pattern, opening, closing):
    for text in random_texts(1):
        expected = [m.span(1) for m in pattern.finditer(text)]
        assert list(iter_blocks(text, opening, closing)) == expected, repr(text)


def test_last_answer_span_is_the_last_finditer_match():
    for text in random_texts(2):
        matches = list(ANSWER_RE.finditer(text))
        expected = matches[-1].span(1) if matches else None
        assert last_answer_span(text) == expected, repr(text)


def test_first_block_is_search():
    for text in random_texts(3):
        for pattern, opening in ((JSON_FENCE_RE, "```json"), (FENCE_RE, "```")):
            match = pattern.search(text)
            assert first_block(text, opening, "```") == (match.group(1) if match else None), repr(text)


def test_format_matches_is_fullmatch():
    seen_true = 0
    for text in list(random_texts(4)) + list(structured_texts(5)):
        expected = FORMAT_RE.fullmatch(text) is not None
        seen_true += expected
        assert format_matches(text) == expected, repr(text)
    assert seen_true > 50  # the random texts do exercise the matching side


def bare_list_texts(seed: int, n: int = N_CASES):
    """The bare box-list skeleton with random filling, pieces randomly dropped or doubled."""
    rng = random.Random(seed)
    filler = ["[", "]", "{", "}", '"bbox_2d"', '"label"', " ", "\n", "\xa0", "\u200b", "x", '"']
    skeleton = [None, "[", "ws", "{", None, '"bbox_2d"', None, '"label"', None, "}", "ws", "]", None]
    for _ in range(n):
        pieces = []
        for piece in skeleton:
            for _ in range(rng.choices([0, 1, 2], weights=[1, 8, 1])[0]):
                if piece is None:
                    pieces.append("".join(rng.choice(filler) for _ in range(rng.randint(0, 3))))
                elif piece == "ws":
                    pieces.append("".join(rng.choice(" \n\xa0\u200bx") for _ in range(rng.randint(0, 2))))
                else:
                    pieces.append(piece)
        yield "".join(pieces)


def test_bare_box_list_is_search():
    found = 0
    texts = list(random_texts(7)) + list(bare_list_texts(6))
    for text in texts:
        match = BARE_LIST_RE.search(text)
        found += match is not None
        assert first_bare_box_list(text) == (match.group(0) if match else None), repr(text)
    assert found > 50


def reference_join_lines(text: str) -> str:
    """The reference's clean_text line handling: four re.sub calls in sequence."""
    for char in ("\n", "\r"):
        text = re.sub(r"(?<=\s)" + re.escape(char), "", text)
        text = re.sub(r"(?<!\s)" + re.escape(char), " ", text)
    return text


def test_join_lines_equals_the_reference_sequence():
    for text in random_texts(8):
        assert join_lines(text) == reference_join_lines(text), repr(text)


def test_normalise_takes_the_last_answer_then_cleans():
    text = "<answer>first</answer> <answer> The Cat \n\nSAT.. </answer>tail"
    assert normalise_for_weighted_sum(text) == "the cat sat"
    assert normalise_for_weighted_sum("a\n\nb") == "a b"
    assert normalise_for_weighted_sum("No Answer Tag.\r\n") == "no answer tag"
    assert normalise_for_weighted_sum("a\nb") == "a b"
    assert normalise_for_weighted_sum("a \nb") == "a b"


def test_answer_is_the_last_block_stripped():
    parsed = ParsedCompletion("<answer> one </answer> x <answer>\n two \n</answer>")
    assert parsed.answer == "two"
    assert ParsedCompletion("<answer>never closed").answer is None
    # finditer order: the second <answer> is inside the first match, so the content keeps it
    assert ParsedCompletion("<answer>a<answer>b</answer>").answer == "a<answer>b"


def test_answer_box_list_reads_the_last_json_fence():
    text = '<answer>```json\n[{"label": "a"}]\n``` then ```json\n[{"label": "b"}]\n```</answer>'
    assert ParsedCompletion(text).answer_items == [{"label": "b"}]


@pytest.mark.parametrize(
    "answer, failure",
    [
        ("no fence here", "no_json_fence"),
        ("```json\n[1, 2\n```", "invalid_json"),
        ('```json\n{"a": 1}\n```', "not_a_list"),
        ("```json\n```", "invalid_json"),
    ],
)
def test_answer_box_list_failures(answer, failure):
    parsed = ParsedCompletion(f"<answer>{answer}</answer>")
    assert parsed.answer_items == []
    assert parsed.answer_box_list.failure == failure


def test_no_answer_is_its_own_failure():
    assert ParsedCompletion("```json\n[]\n```").answer_box_list.failure == "no_answer"


def test_json_accepts_nan_and_infinity_but_not_deep_nesting_or_huge_ints():
    value, ok = load_json("[NaN, Infinity, -Infinity]")
    assert ok and value[0] != value[0] and value[1] == float("inf") and value[2] == float("-inf")
    assert load_json("[" * 100_000 + "]" * 100_000) == (None, False)
    assert load_json("1" * 5000) == (None, False)
    assert box_list("```json [NaN] ```").items[0] != 0


def test_views_are_computed_once(monkeypatch):
    calls = {"answer": 0, "format": 0, "repetition": 0}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(parsing, "last_answer_span", counting("answer", parsing.last_answer_span))
    monkeypatch.setattr(parsing, "format_matches", counting("format", parsing.format_matches))
    monkeypatch.setattr(parsing, "repetition_box_list", counting("repetition", parsing.repetition_box_list))
    parsed = ParsedCompletion("<think>t</think><answer>```json\n[]\n```</answer>")
    for _ in range(3):
        parsed.answer, parsed.answer_items, parsed.answer_predictions, parsed.format_ok
        parsed.repetition_items, parsed.repetition_source
    # ws_normalised calls last_answer_span once itself (through normalise_for_weighted_sum's module global)
    assert calls == {"answer": 1, "format": 1, "repetition": 1}


def test_repetition_box_list_pattern_order():
    assert repetition_box_list('```json\n[{"a": 1}]\n``` ```\n[2]\n```') == ("json_fence", [{"a": 1}])
    assert repetition_box_list("``` [2] ```") == ("fence", [2])
    text = 'text [ {"bbox_2d": [1, 2, 3, 4], "label": "x"} ] more'
    assert repetition_box_list(text) == ("bare_list", [{"bbox_2d": [1, 2, 3, 4], "label": "x"}])
    # the first pattern that matches is the only one tried, even when its block is useless
    assert repetition_box_list('```json\n{}\n``` [{"bbox_2d": 1, "label": 2}]') == ("json_fence", None)
    assert repetition_box_list("plain words") == (None, None)


def test_repetition_repairs_small_malformed_json_only():
    small = "```json\n[{'bbox_2d': [1, 2, 3, 4], 'label': 'cat'},]\n```"
    assert repetition_box_list(small) == ("json_fence", [{"bbox_2d": [1, 2, 3, 4], "label": "cat"}])
    item = "{'bbox_2d': [1, 2, 3, 4], 'label': 'cat'},"
    big = "```json\n[" + item * (parsing.REPAIR_MAX_CHARS // len(item) + 1) + "]\n```"
    assert repetition_box_list(big) == ("json_fence", None)


HOSTILE = {
    "answer_open": "<answer>" * 125_000,
    "answer_pairs": "<answer></answer>" * 60_000,
    "fences": "```" * 350_000,
    "json_fences": "```json" * 150_000,
    "think": "<think></think>" * 70_000 + " " * 10,
    "bbox_fragments": '[{"bbox_2d"' * 100_000,
    "bbox_label": '[{"bbox_2d" "label"' * 55_000,
    "spaces_then_brace": ("[" + " " * 1000) * 1000,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_every_view_is_fast_on_a_megabyte_of_hostile_text(name):
    text = HOSTILE[name]
    assert len(text) >= 900_000
    # CPU time, not wall time: the bound is on our work, not on a loaded machine's scheduling
    started = time.process_time()
    parsed = ParsedCompletion(text)
    parsed.answer, parsed.answer_items, parsed.format_ok, parsed.ws_items, parsed.repetition_items, parsed.words
    assert time.process_time() - started < 1.0
