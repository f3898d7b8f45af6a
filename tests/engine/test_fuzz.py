"""Property-based fuzzing (hypothesis) of the parsing and scoring entry points: whatever the text,
the ground truth or the parameters, they answer (a value, ``None`` with a message, or the one
documented exception) within a time bound, and every reward is a finite number in its range.

Inputs are built from the pieces that matter (tags, fences, box lists, labels, extreme numbers,
lone surrogates) glued at random, so the parser's corner cases are reached in a few hundred
examples. ``derandomize``: the same examples on every run, so CI cannot flake.
"""

from __future__ import annotations

import json
import math
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.reward_api.engine.evaluation import EvaluationInputError, evaluate_dataset
from services.reward_api.engine.ground_truth import SolutionError, parse_solution
from services.reward_api.engine.parsing import ParsedCompletion
from services.reward_api.engine.registry import RegistryError
from services.reward_api.engine.scoring import score_batch

FUZZ = settings(max_examples=150, deadline=2000, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ALL = ["format", "ap", "ap50", "od_length", "weighted_sum", "repetition", "cosine"]
RANGES = {"repetition": (-1.0, 0.0), "cosine": (-1.0, 1.0)}  # others: [0, 1]

numbers = st.one_of(
    st.integers(-10, 2000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1e308, -1e308, 10**400, 2**63, 1e-320, 0.5, -0.0]),
)
labels = st.one_of(st.sampled_from(["cat", "dog", "", "CAT", "\ud800", "a\u0000b", "```", "<answer>"]),
                   st.text(max_size=8))
items = st.one_of(
    st.fixed_dictionaries({"bbox_2d": st.lists(numbers, min_size=0, max_size=5), "label": labels}),
    st.fixed_dictionaries({"bbox_2d": st.tuples(numbers, numbers, numbers, numbers).map(list)}),
    st.just("not an object"), st.none(), st.integers(),
)
valid_items = st.builds(lambda x, y, w, h, label: {"bbox_2d": [x, y, x + w, y + h], "label": label},
                        st.integers(0, 300), st.integers(0, 300), st.integers(1, 200), st.integers(1, 200),
                        st.sampled_from(["cat", "dog"]))
box_lists = st.one_of(st.lists(items, max_size=12), st.lists(valid_items, min_size=1, max_size=12))


def _dump(value) -> str:
    try:
        return json.dumps(value)
    except (ValueError, OverflowError):
        return "[]"


pieces = st.one_of(
    st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "```json", "```", "\n", " ", "None", "[", "]",
                     "{", "}", ",", '"bbox_2d"', ":", "\\ud800", "NaN", "Infinity"]),
    box_lists.map(_dump),
    st.text(max_size=20),
)
texts = st.lists(pieces, max_size=25).map("".join)


@st.composite
def completions(draw) -> str:
    """Mostly well-formed answers with a box list, sometimes anything at all."""
    if draw(st.booleans()):
        return draw(texts)
    think = draw(st.text(max_size=30))
    return f"<think>{think}</think><answer>```json\n{_dump(draw(box_lists))}\n```</answer>" + draw(texts)


solutions = st.one_of(st.lists(valid_items, min_size=1, max_size=12), texts, box_lists, completions(),
                      st.just("None"), st.just([]))


@FUZZ
@given(completions())
def test_parsing_any_completion_answers_quickly(text):
    start = time.perf_counter()
    parsed = ParsedCompletion(text)
    for name in ("answer", "answer_box_list", "answer_items", "answer_predictions", "format_ok", "ws_normalised",
                 "ws_items", "repetition_source", "repetition_items", "words"):
        getattr(parsed, name)
    assert time.perf_counter() - start < 1.0


@FUZZ
@given(solutions)
def test_reading_any_ground_truth_gives_a_truth_or_says_why(solution):
    try:
        truth = parse_solution(solution)
    except SolutionError as exc:
        assert str(exc)
        return
    assert truth.boxes.shape == (truth.n, 4)


params = st.fixed_dictionaries({}, optional={
    "weighted_sum": st.fixed_dictionaries({
        "alpha": st.sampled_from([0.7, 1e308]), "beta": st.sampled_from([0.0, 1e308]),
        "gamma": st.sampled_from([0.3, 1e308])}, optional={"iou_threshold": st.sampled_from([1e-9, 0.5, 1.0])}),
    "cosine": st.fixed_dictionaries({}, optional={
        "max_length": st.sampled_from([1e-300, 1.0, 1024.0, 1e308]), "correct_threshold": st.sampled_from([0.0, 1.0])}),
})


def _answer(boxes: list) -> str:
    return f"<think>x</think><answer>```json\n{json.dumps(boxes)}\n```</answer>"


# A completion that repeats its ground truth (possibly shuffled, or with a box moved): matches.
matched_rows = st.lists(valid_items, min_size=1, max_size=8).flatmap(
    lambda truth: st.tuples(st.permutations(truth).map(_answer), st.just(truth), st.integers(0, 2000)))
rows = st.one_of(matched_rows, st.tuples(completions(), solutions, st.integers(0, 10**6)))


@FUZZ
@given(st.lists(rows, min_size=1, max_size=4), params, st.booleans())
def test_scoring_any_batch_gives_finite_rewards_or_none_with_a_reason(rows, request_params, explain):
    samples = [{"completion": c, "solution": s, "completion_tokens": n} for c, s, n in rows]
    start = time.perf_counter()
    try:
        scores = score_batch(samples, ALL, request_params, explain, max_gt_boxes=10_000, max_box_pairs=10**7)
    except RegistryError as exc:  # only a request-level problem, with its field
        assert ":" in str(exc)
        return
    assert time.perf_counter() - start < 2.0
    for name, values in scores.values.items():
        lo, hi = RANGES.get(name, (0.0, 1.0))
        for value, error in zip(values, scores.errors):
            assert (value is None) == (error is not None) or value is not None
            if value is not None:
                assert math.isfinite(value) and lo - 1e-9 <= value <= hi + 1e-9, (name, value)


@FUZZ
@given(matched_rows, st.floats(1e-3, 10), st.floats(0, 10), st.floats(1e-3, 10), st.sampled_from([1e300, 1e307]))
def test_weighted_sum_depends_only_on_the_ratios_of_its_weights(row, alpha, beta, gamma, scale):
    """weighted_sum is a weighted mean: scaling alpha, beta, gamma together changes nothing, also
    when the scaled weights overflow their sum (issue 11: 0.0 or NaN)."""
    completion, truth, _ = row
    sample = [{"completion": completion, "solution": truth}]

    def value(k: float) -> float:
        ws = {"alpha": alpha * k, "beta": beta * k, "gamma": gamma * k}
        return score_batch(sample, ["weighted_sum"], {"weighted_sum": ws}).values["weighted_sum"][0]

    assert math.isclose(value(scale), value(1.0), rel_tol=1e-9, abs_tol=1e-12)


@FUZZ
@given(st.lists(st.one_of(matched_rows.map(lambda r: r[:2]), st.tuples(completions(), st.one_of(box_lists, texts))),
                min_size=1, max_size=4))
def test_evaluating_any_set_gives_fractions_or_says_why(images):
    try:
        result = evaluate_dataset(images, max_categories=2000, max_gt_boxes=10_000, max_box_pairs=10**7)
    except EvaluationInputError as exc:
        assert str(exc).startswith(("images[", "categories", "images:"))
        return
    for value in (result.ap, result.ap50, result.precision, result.recall, result.nms_ap, result.nms_ap50):
        assert value is None or 0.0 <= value <= 1.0
