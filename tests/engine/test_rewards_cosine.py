"""cosine reward: hand-computed values of both versions, the real accuracy, L clamped past L_max."""

import math

import pytest

from services.reward_api.engine.ground_truth import parse_solution
from services.reward_api.engine.parsing import ParsedCompletion
from services.reward_api.engine.rewards import RewardInput
from services.reward_api.engine.rewards import cosine
from services.reward_api.engine.rewards.cosine import cosine_reward


@pytest.mark.parametrize(
    "acc, tokens, expected",
    [
        (1.0, 0, 1.0),
        (1.0, 1024, 0.5),
        (1.0, 512, 0.75),
        (0.7, 256, 1.0 - 0.5 * (1 - math.cos(math.pi / 4)) / 2),  # exactly at the threshold is correct
        (0.69, 0, 0.0),
        (0.0, 512, -0.25),
        (0.0, 1024, -0.5),
        (0.3, -5, 0.0),  # negative lengths clamp to 0
    ],
)
def test_hand_computed_values_version_1(acc, tokens, expected):
    assert cosine_reward(acc, tokens, version="1") == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(
    "acc, tokens, expected",
    [
        (1.0, 0, 1.0),
        (1.0, 1024, 0.5),
        (0.69, 0, -0.5),  # a wrong answer: -0.5 at 0 tokens, rising (the reference's formula)
        (0.0, 256, -0.5 + 0.5 * (1 - math.cos(math.pi / 4)) / 2),  # -0.4268 (issue 10's example)
        (0.0, 512, -0.25),
        (0.0, 1024, 0.0),
        (0.3, -5, -0.5),
    ],
)
def test_hand_computed_values_version_2(acc, tokens, expected):
    assert cosine_reward(acc, tokens) == pytest.approx(expected, abs=1e-15)


def test_wrong_answers_run_up_in_version_2_and_down_in_version_1():
    v2 = [cosine_reward(0.0, n) for n in range(0, 1100, 16)]
    v1 = [cosine_reward(0.0, n, version="1") for n in range(0, 1100, 16)]
    assert all(a <= b for a, b in zip(v2, v2[1:])) and all(a >= b for a, b in zip(v1, v1[1:]))
    assert [round(cosine_reward(0.0, n), 4) for n in (0, 256, 1024)] == [-0.5, -0.4268, 0.0]
    assert [round(cosine_reward(0.0, n, version="1"), 4) for n in (0, 256, 1024)] == [0.0, -0.0732, -0.5]


def test_departure_length_is_clamped_past_max_length():
    # unclamped, cos(2*pi) = 1 would bring a 2048-token correct answer back up to 1.0
    assert cosine_reward(1.0, 2048) == 0.5
    assert cosine_reward(0.0, 10_000) == 0.0 and cosine_reward(0.0, 10_000, version="1") == -0.5
    values = [cosine_reward(1.0, n) for n in range(0, 3000, 7)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never higher for a longer answer


def test_parameters():
    assert cosine_reward(0.5, 100, max_length=100, correct_threshold=0.5) == 0.5
    assert cosine_reward(0.5, 50, max_length=100, correct_threshold=0.6) == pytest.approx(-0.25)


def _input(completion, solution, tokens, params=None):
    return RewardInput(ParsedCompletion(completion), parse_solution(solution), tokens, params or {})


def test_departure_uses_the_real_weighted_sum():
    box = '[{"bbox_2d": [0, 0, 10, 10], "label": "cat"}]'
    wrong = '[{"bbox_2d": [0, 0, 10, 10], "label": "dog"}]'
    solution = f"```json\n{box}\n```"
    # right box, wrong label: weighted_sum = 0.3 < 0.7, so the answer is wrong: 0.0 at L = 0 in
    # version 1, -0.5 in version 2
    assert cosine.score(_input(f"<answer>```json\n{wrong}\n```</answer>", solution, 0)) == 0.0
    assert cosine.score_v2(_input(f"<answer>```json\n{wrong}\n```</answer>", solution, 0)) == -0.5
    assert cosine.score(_input(f"<answer>```json\n{box}\n```</answer>", solution, 0)) == 1.0
    # weighted_sum's request parameters count: with beta only, the wrong label scores 0
    params = {"weighted_sum": {"alpha": 0.0, "beta": 1.0, "gamma": 0.0, "iou_threshold": 0.5},
              "cosine": {"max_length": 1024, "correct_threshold": 0.0}}
    assert cosine.score(_input(f"<answer>```json\n{wrong}\n```</answer>", solution, 1024, params)) == 0.5


def test_score_without_tokens_is_refused():
    with pytest.raises(ValueError):
        cosine.score(_input("x", "None", None))
