"""The slime adapter as slime calls it (slime is not on PyPI; this follows its source,
slime/rollout/rm_hub/__init__.py at THUDM/slime 624b824): ``load_function(args.custom_rm_path)``
imports the module and takes the attribute; ``async_rm`` awaits ``fn(args, sample)`` per sample,
many concurrently; ``batched_async_rm`` (``--group-rm``) awaits ``fn(args, samples)`` once per group."""

from __future__ import annotations

import asyncio
import importlib
from argparse import Namespace
from dataclasses import dataclass, field

import pytest

from tests.shared.faulty_server import FaultyServer

from .conftest import CAT, DOG, answer_text, label_text, score_directly


@dataclass
class Sample:
    """The fields of slime.utils.types.Sample the reward path reads (same names, same defaults)."""

    index: int | None = None
    prompt: str = ""
    response: str = ""
    response_length: int = 0
    label: str | None = None
    metadata: dict = field(default_factory=dict)


def load_function(path: str):
    """slime.utils.misc.load_function."""
    module_path, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module_path), attr)


ARGS = Namespace(custom_rm_path="shared.adapters.slime.reward", group_rm=False, rm_type=None, reward_key=None)


@pytest.fixture
def slime_env(monkeypatch, service):
    with FaultyServer(upstream=service.url) as counting:
        monkeypatch.setenv("REWARD_API_URL", counting.url)
        monkeypatch.setenv("REWARD_API_REWARDS", "format,ap,cosine")
        monkeypatch.delenv("REWARD_API_WEIGHTS", raising=False)
        yield counting


def samples() -> list[Sample]:
    texts = [answer_text([CAT]), answer_text([CAT, DOG]), answer_text([DOG]), "I give up"]
    return [Sample(index=i, prompt="<|im_start|>user\nFind the cat.<|im_end|>\n<|im_start|>assistant\n",
                   response=t + "<|im_end|>", response_length=12 + i, label=label_text([CAT])) for i, t in enumerate(texts)]


def expected(service, group: list[Sample]) -> list[float]:
    wire = [{"completion": s.response.removesuffix("<|im_end|>"), "solution": s.label,
             "completion_tokens": s.response_length} for s in group]
    return score_directly(service, wire, rewards=["format", "ap", "cosine"])["total"]


def test_per_sample_calls_as_async_rm_makes_them(service, slime_env):
    reward = load_function(ARGS.custom_rm_path)
    group = samples()

    async def rollout():  # generate_and_rm: one async_rm per sample, all in flight together
        return await asyncio.gather(*(reward(ARGS, s) for s in group))

    rewards = asyncio.run(rollout())
    assert rewards == expected(service, group)
    assert rewards[0] > rewards[3] and all(isinstance(r, float) for r in rewards)
    assert len(slime_env.seen("/v1/score")) == 1  # coalesced


def test_group_rm_gets_one_reward_per_sample(service, slime_env):
    reward = load_function(ARGS.custom_rm_path)
    group = samples()
    rewards = asyncio.run(reward(Namespace(**{**vars(ARGS), "group_rm": True}), group))
    assert rewards == expected(service, group)


def test_format_scores_despite_the_end_token(service, slime_env, monkeypatch):
    monkeypatch.setenv("REWARD_API_REWARDS", "format")
    reward = load_function(ARGS.custom_rm_path)
    sample = Sample(response=answer_text([CAT]) + "<|im_end|>\n<|endoftext|>", label=label_text([CAT]))
    assert asyncio.run(reward(ARGS, sample)) == 1.0


def test_metadata_sizes_rescale_the_label(service, slime_env, monkeypatch):
    monkeypatch.setenv("REWARD_API_REWARDS", "ap")
    reward = load_function(ARGS.custom_rm_path)
    doubled = label_text([{"bbox_2d": [2 * v for v in CAT["bbox_2d"]], "label": "cat"}])
    sample = Sample(response=answer_text([CAT]), label=doubled,
                    metadata={"original_size": [1000, 800], "input_size": [500, 400]})
    assert asyncio.run(reward(ARGS, sample)) == pytest.approx(1.0)
