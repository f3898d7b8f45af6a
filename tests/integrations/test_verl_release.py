"""verl 0.9.1 (PyPI) against the service: verl's own config (composed by hydra with the README's
overrides), its reward-loop worker, its reward-manager loading and its naive manager's run_single.
Only the Ray actor wrapper is left out: the worker class is instantiated in this process, as Ray
would instantiate it in another."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from services.reward_api.local import REPO_ROOT
from tests.shared.faulty_server import FaultyServer

from .conftest import CAT, DOG, answer_text, label_text, score_directly

reward_loop = pytest.importorskip("verl.experimental.reward_loop.reward_loop",
                                  reason="pip install the 'integrations' extra (README)")


def readme_overrides() -> list[str]:
    """The ``reward.*=...`` overrides of the README's verl recipe, exactly as written there."""
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("<!-- verl-recipe:", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return re.findall(r"(reward\.[\w.]+=\S+)", block)


def verl_config(model_dir: Path, overrides: list[str]):
    import verl
    from hydra import compose, initialize_config_dir

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        config = compose(config_name="ppo_trainer",
                         overrides=[f"actor_rollout_ref.model.path={model_dir}", *overrides])
    return reward_loop.migrate_legacy_reward_impl(config)


def rollout_batch(tokenizer, completions: list[str], truths: list, infos: list[dict]):
    """A DataProto as verl's rollout hands it to the reward loop: left-padded prompts, right-padded
    responses ending in the end token, one attention mask over both."""
    import numpy as np
    import torch
    from verl import DataProto

    prompt_ids = tokenizer("<|im_start|>user\nFind the cat.<|im_end|>\n<|im_start|>assistant\n",
                           add_special_tokens=False)["input_ids"]
    responses = [tokenizer(c + "<|im_end|>", add_special_tokens=False)["input_ids"] for c in completions]
    width = max(len(r) for r in responses)
    pad = tokenizer.pad_token_id or 0
    n = len(completions)
    prompts = torch.tensor([prompt_ids] * n)
    response_t = torch.tensor([r + [pad] * (width - len(r)) for r in responses])
    mask = torch.tensor([[1] * len(prompt_ids) + [1] * len(r) + [0] * (width - len(r)) for r in responses])

    def objects(values):
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array

    batch = DataProto.from_dict(
        tensors={"prompts": prompts, "responses": response_t, "attention_mask": mask},
        non_tensors={"data_source": objects(["vlm_r1/od"] * n),
                     "reward_model": objects([{"ground_truth": t, "style": "rule"} for t in truths]),
                     "extra_info": objects(infos)},
    )
    return batch, [len(r) for r in responses]


def run_reward_loop(config, batch):
    async def run():
        worker = reward_loop.RewardLoopWorker(config)  # what ray.remote(RewardLoopWorker) would build
        outputs = await worker.compute_score_batch(batch)
        manager_cls = type(worker.reward_manager)
        return outputs, manager_cls.assemble_rm_scores(batch, [o["reward_score"] for o in outputs])
    return asyncio.run(run())


@pytest.fixture
def verl_env(monkeypatch, service):
    with FaultyServer(upstream=service.url) as counting:  # a pass-through proxy that counts requests
        monkeypatch.setenv("REWARD_API_URL", counting.url)
        monkeypatch.setenv("REWARD_API_REWARDS", "format,ap,cosine")
        monkeypatch.setenv("REWARD_API_WEIGHTS", "format=1,ap=1,cosine=0.5")
        yield counting


def test_readme_recipe_through_verls_reward_loop(service, tiny_model_dir, processor, verl_env):
    import numpy as np

    overrides = readme_overrides()
    assert {o.split("=")[0] for o in overrides} == {
        "reward.custom_reward_function.path", "reward.custom_reward_function.name", "reward.reward_manager.source",
        "reward.reward_manager.module.path", "reward.reward_manager.name"}
    config = verl_config(tiny_model_dir, overrides)
    completions = [answer_text([CAT]), answer_text([CAT, DOG]), "no answer at all", answer_text([DOG])] * 4
    # verl reads parquet: nested lists arrive as numpy object arrays
    truth = np.array([{"bbox_2d": np.array(CAT["bbox_2d"]), "label": "cat"}], dtype=object)
    truths = [label_text([CAT]), truth] * 8
    batch, lengths = rollout_batch(processor.tokenizer, completions, truths, [{"index": i} for i in range(16)])

    outputs, rm_scores = run_reward_loop(config, batch)

    samples = [{"completion": c, "solution": label_text([CAT]), "completion_tokens": n}
               for c, n in zip(completions, lengths)]
    expected = score_directly(service, samples, rewards=["format", "ap", "cosine"],
                              weights={"format": 1, "ap": 1, "cosine": 0.5})
    assert [o["reward_score"] for o in outputs] == expected["total"]
    assert [o["reward_extra_info"]["cosine"] for o in outputs] == expected["rewards"]["cosine"]
    # verl puts each score on the last response token
    assert rm_scores.sum(dim=1).tolist() == pytest.approx(expected["total"])
    assert len(verl_env.seen("/v1/score")) <= 8  # 16 concurrent calls coalesced (one window, usually)


def test_verls_default_naive_manager(service, tiny_model_dir, processor, verl_env, monkeypatch):
    monkeypatch.setenv("REWARD_API_REWARDS", "format,od_length")
    monkeypatch.setenv("REWARD_API_WEIGHTS", "format=1,od_length=1")
    overrides = [o for o in readme_overrides() if not o.startswith("reward.reward_manager.")]
    config = verl_config(tiny_model_dir, overrides)
    completions = [answer_text([CAT]), answer_text([DOG])]
    batch, _ = rollout_batch(processor.tokenizer, completions, [label_text([CAT])] * 2, [{}, {}])
    outputs, _ = run_reward_loop(config, batch)
    expected = score_directly(service, [{"completion": c, "solution": label_text([CAT])} for c in completions],
                              rewards=["format", "od_length"])
    assert [o["reward_score"] for o in outputs] == expected["total"]
