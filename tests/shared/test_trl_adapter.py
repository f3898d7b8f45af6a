"""TRL reward functions: one request per generation batch, names, values equal to the service's.

The last test runs TRL 1.16's own `GRPOTrainer._calculate_rewards` (on a minimal stand-in for the
trainer) so the calling convention is TRL's, not our reading of it.
"""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest

from shared.adapters.trl import PerRowReward, completion_text, make_reward_functions
from shared.client import AsyncRewardClient, RewardServiceError
from tests.shared.conftest import FAST, direct_score
from tests.shared.faulty_server import Reply

REWARDS = ["format", "ap", "od_length", "cosine"]


def trl_arguments(samples: list[dict], conversational: bool = False) -> dict:
    """What TRL passes each reward function for one batch (GRPOTrainer._calculate_rewards)."""
    completions = [s["completion"] for s in samples]
    if conversational:
        completions = [[{"role": "assistant", "content": c}] for c in completions]
    return {
        "prompts": ["find the cat"] * len(samples),
        "completions": completions,
        "completion_ids": [list(range(s["completion_tokens"])) for s in samples],
        "solution": [s["solution"] for s in samples],
        "image_path": ["img.jpg"] * len(samples),  # another dataset column
        "trainer_state": None,
        "log_extra": lambda *a, **k: None,
        "log_metric": lambda *a, **k: None,
    }


def call_all(functions, arguments) -> list[list]:
    async def go():
        return await asyncio.gather(*(f(**arguments) for f in functions))

    return asyncio.run(go())


def service_values(service, samples) -> dict:
    plain = [{k: s[k] for k in ("completion", "solution", "completion_tokens")} for s in samples]
    return direct_score(service, plain, rewards=REWARDS)["rewards"]


def test_one_request_serves_every_reward_function_of_a_batch(service, faulty, samples):
    scored = []
    functions = make_reward_functions(AsyncRewardClient(faulty.url, **FAST), REWARDS, on_scored=scored.append)
    assert [f.__name__ for f in functions] == REWARDS
    results = call_all(functions, trl_arguments(samples))
    assert len(faulty.seen("/v1/score")) == 1 and len(scored) == 1
    expected = service_values(service, samples)
    assert results == [expected[name] for name in REWARDS]
    sent = faulty.seen("/v1/score")[0].json()["samples"]
    assert [s["completion_tokens"] for s in sent] == [s["completion_tokens"] for s in samples]


def test_each_batch_gets_its_own_request_even_when_identical(faulty, samples):
    functions = make_reward_functions(AsyncRewardClient(faulty.url, **FAST), REWARDS)

    async def two_steps():
        first = await asyncio.gather(*(f(**trl_arguments(samples)) for f in functions))
        second = await asyncio.gather(*(f(**trl_arguments(samples)) for f in functions))
        third = await asyncio.gather(*(f(**trl_arguments(samples[:3])) for f in functions))
        return first, second, third

    first, second, third = asyncio.run(two_steps())
    assert first == second and [len(v) for v in third] == [3] * len(REWARDS)
    assert len(faulty.seen("/v1/score")) == 3


def test_conversational_completions_score_like_plain_ones(faulty, samples):
    functions = make_reward_functions(AsyncRewardClient(faulty.url, **FAST), REWARDS)

    async def both():
        plain = await asyncio.gather(*(f(**trl_arguments(samples)) for f in functions))
        chat = await asyncio.gather(*(f(**trl_arguments(samples, conversational=True)) for f in functions))
        return plain, chat

    plain, conversational = asyncio.run(both())
    assert conversational == plain
    assert [r.json() for r in faulty.seen("/v1/score")][0] == [r.json() for r in faulty.seen("/v1/score")][1]


def test_completion_text_of_messages():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "<answer>x</answer>"}]) == "<answer>x</answer>"
    parts = [{"role": "assistant", "content": [{"type": "text", "text": "<think>a</think>"},
                                                {"type": "text", "text": "<answer>b</answer>"}]}]
    assert completion_text(parts) == "<think>a</think><answer>b</answer>"
    tool_turns = [{"role": "assistant", "content": None}, {"role": "tool", "content": "result"},
                  {"role": "assistant", "content": "final"}]
    assert completion_text(tool_turns) == "final"
    with pytest.raises(TypeError):
        completion_text([{"role": "user", "content": "no reply"}])


def test_an_unscorable_sample_gives_none_never_zero(faulty, samples):
    broken = [*samples[:2], {**samples[2], "solution": "<answer>```json\n[{\"bbox_2d\": [1, 2]}]\n```</answer>"}]
    functions = make_reward_functions(AsyncRewardClient(faulty.url, **FAST), ["ap", "format"])
    ap, fmt = call_all(functions, trl_arguments(broken))
    assert ap[2] is None and fmt[2] is None
    assert ap[0] is not None


def test_a_failing_service_stops_training_with_a_clear_error(faulty, samples):
    faulty.default = Reply(503, {"detail": "overloaded"})
    functions = make_reward_functions(AsyncRewardClient(faulty.url, **{**FAST, "max_retries": 1}), REWARDS)

    async def go():
        return await asyncio.gather(*(f(**trl_arguments(samples)) for f in functions), return_exceptions=True)

    outcomes = asyncio.run(go())
    assert all(isinstance(o, RewardServiceError) and "HTTP 503: overloaded" in str(o) for o in outcomes)
    assert len(faulty.seen("/v1/score")) == 2  # one request (and its retry) for all four functions


def test_a_missing_solution_column_is_named(faulty, samples):
    functions = make_reward_functions(AsyncRewardClient(faulty.url, **FAST), ["ap"], solution_column="answer")
    with pytest.raises(KeyError, match="'answer'.*image_path"):
        call_all(functions, trl_arguments(samples))


def test_reward_list_is_checked():
    client = AsyncRewardClient("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="twice"):
        make_reward_functions(client, ["ap", "ap"])
    with pytest.raises(ValueError, match="non-empty"):
        make_reward_functions(client, [])


def test_trls_own_reward_calculation_uses_one_request(service, faulty, samples):
    torch = pytest.importorskip("torch")
    from trl.trainer.grpo_trainer import GRPOTrainer
    from trl.trainer.utils import (
        get_callable_name,
        is_async_callable,
        shutdown_event_loop_in_daemon,
        start_event_loop_in_daemon,
    )

    functions = make_reward_functions(AsyncRewardClient(faulty.url, **FAST), REWARDS)
    assert all(is_async_callable(f) for f in functions)
    thread, loop, ready = start_event_loop_in_daemon(name="trl-test-loop")
    ready.wait()
    trainer = SimpleNamespace(
        accelerator=SimpleNamespace(device=torch.device("cpu"), is_main_process=True),
        state=SimpleNamespace(global_step=0),
        args=SimpleNamespace(report_to=[]),
        reward_funcs=functions,
        reward_processing_classes=[None] * len(functions),
        reward_func_names=[get_callable_name(f) for f in functions],
        environments=None,
        async_loop=loop,
        _log_completion_extra=lambda *a, **k: None,
        _log_metric=lambda *a, **k: None,
    )
    arguments = trl_arguments(samples, conversational=True)
    inputs = [{"prompt": p, "solution": s} for p, s in zip(arguments["prompts"], arguments["solution"])]
    try:
        rewards = GRPOTrainer._calculate_rewards(
            trainer, inputs, arguments["prompts"], arguments["completions"], arguments["completion_ids"]
        )
    finally:
        shutdown_event_loop_in_daemon(thread, loop)
    assert trainer.reward_func_names == REWARDS
    assert len(faulty.seen("/v1/score")) == 1
    expected = service_values(service, samples)
    for column, name in enumerate(REWARDS):
        assert rewards[:, column].tolist() == pytest.approx([math.nan if v is None else v for v in expected[name]],
                                                            rel=1e-6, nan_ok=True)


def test_a_per_row_reward_picks_each_rows_reward_from_the_one_request(service, faulty, samples):
    # 'ap' is both a function of its own and an option: asked for once, and the batch still one request.
    accuracy = PerRowReward("accuracy", "method", options=("od_length",), default="ap")
    functions = make_reward_functions(AsyncRewardClient(faulty.url, **FAST), ["ap", accuracy, "format"])
    assert [f.__name__ for f in functions] == ["ap", "accuracy", "format"]
    doubled = dict(samples[0], completion=samples[0]["completion"].replace(
        '[{"bbox_2d"', '[{"bbox_2d": [10, 10, 50, 60], "label": "cat"}, {"bbox_2d"'))  # od_length halves, ap stays
    samples = [doubled] + samples
    arguments = trl_arguments(samples)
    methods = ["od_length", None, "", "ap"] * (len(samples) // 4) + [None] * (len(samples) % 4)
    arguments["method"] = methods
    ap, picked, _format = call_all(functions, arguments)
    assert len(faulty.seen("/v1/score")) == 1
    assert faulty.seen("/v1/score")[0].json()["rewards"] == ["ap", "format", "od_length"]
    expected = service_values(service, samples)
    assert ap == expected["ap"]
    assert picked == [expected[m or "ap"][i] for i, m in enumerate(methods)]
    assert any(expected["od_length"][i] != expected["ap"][i] for i, m in enumerate(methods) if m == "od_length"), \
        "the samples do not tell od_length from ap"


def test_a_per_row_options_alias_of_a_requested_reward_is_not_asked_for_twice(service, faulty, samples):
    # The service refuses od_length beside odLength (the same reward): the option reads odLength's column.
    accuracy = PerRowReward("accuracy", "method", options=("od_length",), default="od_ap")
    functions = make_reward_functions(AsyncRewardClient(faulty.url, **FAST), ["odLength", "ap", accuracy])
    arguments = trl_arguments(samples)
    methods = ["od_length", None] * (len(samples) // 2) + [None] * (len(samples) % 2)
    arguments["method"] = methods
    length, ap, picked = call_all(functions, arguments)
    assert faulty.seen("/v1/score")[0].json()["rewards"] == ["odLength", "ap"]
    assert picked == [length[i] if m else ap[i] for i, m in enumerate(methods)]
    assert length == service_values(service, samples)["od_length"]


def test_a_per_row_reward_refuses_bad_rows_before_any_request(faulty, samples):
    accuracy = PerRowReward("accuracy", "method", options=("od_length",), default="ap")
    [function] = make_reward_functions(AsyncRewardClient(faulty.url, **FAST), [accuracy])
    arguments = trl_arguments(samples)
    arguments["method"] = ["cosine"] + [None] * (len(samples) - 1)
    with pytest.raises(ValueError, match=r"'method' names 'cosine', not one of the rewards 'accuracy' can pick"):
        call_all([function], arguments)
    arguments["method"] = [None] * (len(samples) - 1)
    with pytest.raises(ValueError, match=rf"the column 'method' has {len(samples) - 1} rows, the batch {len(samples)}"):
        call_all([function], arguments)
    del arguments["method"]
    with pytest.raises(KeyError, match=r"column 'method', which the dataset does not have"):
        call_all([function], arguments)
    assert faulty.seen("/v1/score") == []


def test_the_trainers_accuracy_reward_has_no_version_of_its_own(faulty):
    from trainer.train import build_reward_functions

    with pytest.raises(ValueError, match=r"'accuracy@2': 'accuracy' stands for other rewards"):
        build_reward_functions(AsyncRewardClient(faulty.url, **FAST), ["format", "accuracy@2"], None, ["ap"])


def test_the_trainers_per_line_accuracy_reward_reads_each_lines_method_from_one_request(service, faulty, samples):
    # trainer.train's 'accuracy' reward: each dataset line names its accu_reward_method (or takes the
    # default, the last of accuracy_rewards); every reward any line needs is in the batch's one request.
    from trainer.train import build_reward_functions

    functions = build_reward_functions(AsyncRewardClient(faulty.url, **FAST), ["format", "accuracy"], None,
                                       ["od_length", "ap"])
    assert [f.__name__ for f in functions] == ["format", "accuracy"]
    doubled = dict(samples[0], completion=samples[0]["completion"].replace(
        '[{"bbox_2d"', '[{"bbox_2d": [10, 10, 50, 60], "label": "cat"}, {"bbox_2d"'))  # od_length halves, ap stays
    samples = [doubled, doubled] + samples
    arguments = trl_arguments(samples)
    methods = ["od_length" if i % 2 == 0 else None for i in range(len(samples))]
    arguments["accu_reward"] = methods
    formats, accuracies = call_all(functions, arguments)
    assert len(faulty.seen("/v1/score")) == 1
    plain = [{k: s[k] for k in ("completion", "solution")} for s in samples]
    expected = direct_score(service, plain, rewards=["format", "od_length", "ap"])["rewards"]
    assert formats == expected["format"]
    assert accuracies == [expected[method or "ap"][i] for i, method in enumerate(methods)]
    assert accuracies != expected["ap"] and accuracies != expected["od_length"], "samples do not tell the methods apart"


def test_size_columns_rescale_the_ground_truth_and_warn_when_only_the_input_size_is_known(faulty, samples):
    # detection_sample(0) predicts exactly [10, 10, 50, 60]; the dataset stores it in a 2x larger image
    sample = samples[0]
    doubled = [{"bbox_2d": [20, 20, 100, 120], "label": "cat"}]
    arguments = {**trl_arguments([sample]), "solution": [doubled], "original_size": [[200, 240]],
                 "input_size": [[100, 120]]}
    [ap] = call_all(make_reward_functions(AsyncRewardClient(faulty.url, **FAST), ["ap"]), arguments)
    assert ap == [pytest.approx(1.0)]
    only_input = {**arguments, "original_size": [None], "input_size": [[60, 70]]}
    with pytest.warns(UserWarning, match="outside the 60x70 image the model saw"):
        [ap] = call_all(make_reward_functions(AsyncRewardClient(faulty.url, **FAST), ["ap"]), only_input)
    assert ap[0] < 1.0
