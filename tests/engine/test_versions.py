"""Version 1 pinned keeps its values; version 2 gives the reference's values where version 1
misread it (issue 10), on our own corpus (tests/engine/corpus.py)."""

from __future__ import annotations

import json
import math

import pytest

from services.reward_api.engine.scoring import score_batch

from .corpus import REWARD_NAMES, V1_VALUES, all_cases, named_cases, score_all

CASES = {case["id"]: case for case in all_cases()}


def test_pinned_version_1_gives_exactly_the_values_recorded_before_version_2():
    recorded = json.loads(V1_VALUES.read_text())
    now = score_all("1")
    assert set(now) == set(recorded)
    for case_id, values in recorded.items():
        for name, value in values.items():
            got = now[case_id][name]
            # exactly: same float bits (or the same null and error message)
            assert got == value and (not isinstance(value, float) or math.copysign(1, got) == math.copysign(1, value)), (
                case_id, name, got, value)


def v2(case_id: str) -> dict:
    case = CASES[case_id]
    sample = {k: case[k] for k in ("completion", "solution", "completion_tokens")}
    scores = score_batch([sample], list(REWARD_NAMES))  # unpinned: the default, version 2
    assert set(scores.versions.values()) == {"2"}
    return {name: scores.values[name][0] for name in REWARD_NAMES} | {"error": scores.errors[0]}


@pytest.mark.parametrize(
    "case_id, expected",
    [
        # B4: wrong answers from -0.5 at 0 tokens up to 0.0 at max_length (the issue's example)
        ("b4_wrong_0", {"cosine": -0.5}),
        ("b4_wrong_256", {"cosine": pytest.approx(-0.4267766952966369, abs=1e-15)}),
        ("b4_wrong_1024", {"cosine": 0.0}),
        ("b4_wrong_past_max", {"cosine": 0.0}),
        ("b4_correct_512", {"cosine": 0.75}),
        # B2: an object or a string is a non-empty, unmatched prediction
        ("b2_object_vs_none", {"ap": 0.0, "ap50": 0.0, "od_length": 0.0, "weighted_sum": 0.0}),
        ("b2_string_vs_none", {"ap": 0.0, "ap50": 0.0, "od_length": 0.0}),
        ("b2_object_vs_empty_fence", {"ap": 0.0, "od_length": 0.0, "weighted_sum": 0.0}),
        # ... while what the reference's loop cannot iterate, or an empty one, is no prediction
        ("b2_empty_object_vs_none", {"ap": 1.0, "od_length": 1.0}),
        ("b2_number_vs_none", {"ap": 1.0, "od_length": 1.0}),
        ("b2_null_vs_none", {"ap": 1.0}),
        ("b2_empty_string_vs_none", {"ap": 1.0}),
        ("invalid_json_vs_none", {"ap": 1.0}),  # the reference's rule too: unparsable is no prediction
        # B5: after an empty plain fence, the bare list
        ("b5_empty_fence_then_list", {"repetition": pytest.approx(-2 / 3)}),
        # the repair cap is gone: cut-off lists are lists at any length
        ("repeat_unclosed_25", {"repetition": pytest.approx(-(1 - 3 / 25))}),
        ("repeat_unclosed_80", {"repetition": pytest.approx(-(1 - 4 / 80))}),
        ("repeat_unclosed_4096_tokens", {"repetition": pytest.approx(-(1 - 5 / 330))}),
        # B3: the upper-case answer block is read on weighted_sum's second pass
        ("b3_upper_case_tags", {"weighted_sum": 1.0, "format": 0.0, "ap": 0.0}),
        # kept departures: malformed, 5-number, boolean and huge boxes stay false positives
        ("b1_three_numbers", {"ap": 0.5, "od_length": 0.25}),
        ("b1_five_numbers", {"ap": 0.0}),
        ("b3_five_numbers_ws", {"weighted_sum": 0.0}),
        ("b3_true_coords_ws", {"weighted_sum": 0.0}),
        ("huge_coordinate", {"ap": 0.0, "error": None}),
        ("repetition_5000_digits", {"repetition": 0.0, "error": None}),
        ("repetition_deep_nesting", {"repetition": 0.0, "error": None}),
        ("solution_two_answer_blocks", {"ap": 0.0}),
    ],
)
def test_version_2_on_the_issue_cases(case_id, expected):
    values = v2(case_id)
    for name, value in expected.items():
        assert values[name] == value, (case_id, name, values[name])


def test_version_2_equals_version_1_where_no_rule_changed():
    recorded = json.loads(V1_VALUES.read_text())
    changed_by = {  # case id -> the rewards version 2 changes on it (every other value is the same)
        "b2_object_vs_none": {"ap", "ap50", "od_length"},
        "b2_string_vs_none": {"ap", "ap50", "od_length"},
        "b2_object_vs_empty_fence": {"ap", "ap50", "od_length", "weighted_sum", "cosine"},
        "b5_empty_fence_then_list": {"repetition"},
        "b5_empty_json_fence": set(),
        "repeat_unclosed_25": {"repetition"},
        "repeat_unclosed_80": {"repetition"},
        "repeat_unclosed_4096_tokens": {"repetition"},
        "trailing_comma_list": set(),
    }
    for case in named_cases():
        now = v2(case["id"])
        for name in REWARD_NAMES:
            if name == "cosine" and now["weighted_sum"] is not None and now["weighted_sum"] < 0.7:
                continue  # every wrong answer's cosine changed (B4)
            if name in changed_by.get(case["id"], set()):
                assert now[name] != recorded[case["id"]][name], (case["id"], name)
            else:
                assert now[name] == recorded[case["id"]][name], (case["id"], name, now[name])


def test_a_huge_string_answer_is_counted_not_built():
    # version 2 loops over a string answer as the reference does, without making 5 million items
    text = '<answer>```json\n"' + "x" * 5_000_000 + '"\n```</answer>'
    scores = score_batch([{"completion": text, "solution": "None"}], ["ap", "od_length", "weighted_sum"], explain=True)
    assert scores.values == {"ap": [0.0], "od_length": [0.0], "weighted_sum": [0.0]}
    assert scores.details[0]["detection"]["n_pred"] == 5_000_000
