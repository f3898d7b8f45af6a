"""TRL 1.16 with a chat template that has a response schema: GRPOTrainer decodes completions with
its own ``parse_response``, which moves the ``<think>`` block into ``reasoning_content``. The adapter
must put it back, or ``format`` scores 0 for every completion."""

from __future__ import annotations

import asyncio

import pytest

from shared.adapters.trl import make_reward_functions
from shared.client import AsyncRewardClient

from .conftest import CAT, fenced, label_text, score_directly

chat_template_utils = pytest.importorskip("trl.chat_template_utils")


def test_reasoning_content_is_put_back(service, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tokenizer.chat_template = chat_template_utils.qwen2_5_chat_template
    chat_template_utils.add_response_schema(tokenizer)  # what GRPOTrainer does for a known template
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Find the cat."}], tokenize=False,
                                           add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    written = f"<think>\nThe cat is on the left.\n</think>\n\n<answer>{fenced([CAT])}</answer>"
    ids = tokenizer(written + "<|im_end|>", add_special_tokens=False)["input_ids"]
    message = chat_template_utils.parse_response(tokenizer, ids, prefix=prompt_ids)  # GRPOTrainer's decoding
    assert message.get("reasoning_content") and "<think>" not in message["content"]

    async def score():
        async with AsyncRewardClient(service.url) as client:
            [fmt, ap] = make_reward_functions(client, ["format", "ap"])
            kwargs = dict(prompts=[[{"role": "user", "content": "Find the cat."}]], completions=[[message]],
                          completion_ids=[ids], solution=[label_text([CAT])])
            return await asyncio.gather(fmt(**kwargs), ap(**kwargs))

    fmt, ap = asyncio.run(score())
    assert fmt == [1.0]
    expected = score_directly(service, [{"completion": written, "solution": label_text([CAT])}], rewards=["ap"])
    assert ap == expected["rewards"]["ap"]
