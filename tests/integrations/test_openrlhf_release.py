"""OpenRLHF 0.11.2 (PyPI) against /v1/openrlhf: its own SingleTurnAgentExecutor, its own VLM prompt
processing and HTTP retry code. Only vLLM is replaced (it cannot run on a CPU): a stand-in engine
returns the token ids of a fixed completion, as vLLM would after generating it."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import httpx
import pytest

from .conftest import CAT, DOG, answer_text, label_text, raise_open_files_limit, score_directly

agent = pytest.importorskip("openrlhf.utils.agent", reason="pip install the 'integrations' extra (README)")


class TextEngine:
    """vLLM's AsyncLLM.generate, as SingleTurnAgentExecutor uses it: token ids in, one output out."""

    def __init__(self, tokenizer, completion: str) -> None:
        self.ids = tokenizer(completion + "<|im_end|>", add_special_tokens=False)["input_ids"]
        self.text = completion
        self.prompts: list[list[int]] = []

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        self.prompts.append(list(prompt_token_ids))
        output = SimpleNamespace(token_ids=self.ids, text=self.text, finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[output])


def chat_prompt(processor, n_images: int, question: str = "Find the cat.") -> str:
    content = [{"type": "image"}] * n_images + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)


def images(n: int):
    from PIL import Image

    return [Image.new("RGB", (224 + 56 * i, 168), (40 * i, 90, 160)) for i in range(n)]


@pytest.mark.parametrize("n_images", [0, 1, 3])
def test_executor_rewards_equal_score(service, processor, n_images):
    completion = answer_text([CAT, DOG])
    prompt = chat_prompt(processor, n_images)
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=f"{service.url}/v1/openrlhf")
    engine = TextEngine(processor.tokenizer, completion)
    params = SimpleNamespace(max_tokens=256, logprobs=None)
    output = asyncio.run(executor.execute(prompt, label_text([CAT]), params, max_length=4096,
                                          hf_tokenizer=processor, llm_engine=engine,
                                          images=images(n_images) or None))
    pads = engine.prompts[0].count(processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
    assert pads >= 4 * n_images  # the query really holds expanded image pads (4+ per image)
    expected = score_directly(service, [{"completion": completion, "solution": label_text([CAT])}])
    assert output["reward"] == [expected["total"][0]] or output["reward"] == expected["total"][0]
    assert output["extra_logs"] == expected["rewards"]
    scores = output["scores"] if isinstance(output["scores"], list) else [output["scores"]]
    assert all(0.0 <= s <= 1.0 for s in scores)  # OpenRLHF's default --algo.dynamic_filtering_range


def test_video_pads_through_openrlhfs_http_code(service, processor):
    tokenizer = processor.tokenizer
    prompt = chat_prompt(processor, 1).replace("<|image_pad|>", "<|video_pad|>")
    pad = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    at = ids.index(pad)
    completion = answer_text([CAT])
    ids = ids[:at] + [pad] * 96 + ids[at + 1:] + tokenizer(completion + "<|im_end|>", add_special_tokens=False)["input_ids"]
    query = tokenizer.decode(ids, skip_special_tokens=False)  # what SingleTurnAgentExecutor sends
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=f"{service.url}/v1/openrlhf")
    [answer] = asyncio.run(executor._fetch_rewards_via_http([query], [prompt], [label_text([CAT])]))
    expected = score_directly(service, [{"completion": completion, "solution": label_text([CAT])}])
    assert answer["rewards"] == expected["total"] and answer["extra_logs"] == expected["rewards"]


@pytest.mark.parametrize("n_requests", [1024, 4096])
def test_burst_of_single_sample_requests_loses_nothing(service, n_requests):
    """OpenRLHF >= 0.10 posts each sample as it is generated: a rollout of n samples is n requests at
    once, each with a fresh connection, 5 tries 1 s apart. Against the default settings (2 workers)
    every one of them must get its reward."""
    limit = raise_open_files_limit()
    assert limit >= 2 * n_requests + 512, f"open-files limit {limit}: raise it (ulimit -n) to run this burst"
    prompt = "<|im_start|>user\nFind the cat.<|im_end|>\n<|im_start|>assistant\n"
    completions = [answer_text([{**CAT, "bbox_2d": [10 + i % 7, 20, 110, 220]}]) for i in range(n_requests)]
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=f"{service.url}/v1/openrlhf")

    async def burst():
        calls = [executor._fetch_rewards_via_http([prompt + c + "<|im_end|>"], [prompt], [label_text([CAT])])
                 for c in completions]
        return await asyncio.gather(*calls, return_exceptions=True)

    start = time.perf_counter()
    answers = asyncio.run(asyncio.wait_for(burst(), 120))
    elapsed = time.perf_counter() - start
    lost = [a for a in answers if isinstance(a, BaseException)]
    assert not lost, f"{len(lost)} of {n_requests} lost, e.g. {lost[0]!r}"
    expected = score_directly(service, [{"completion": c, "solution": label_text([CAT])} for c in completions[:7]])
    assert [a[0]["rewards"][0] for a in answers[:7]] == expected["total"]
    assert elapsed < 60, elapsed
    # ... and at the first try: the service refused none of them (no retry needed)
    metrics = httpx.get(service.url + "/metrics", timeout=10).text
    refused = [line for line in metrics.splitlines()
               if line.startswith('reward_api_requests_total{endpoint="/v1/openrlhf"') and 'status="200"' not in line]
    assert all(line.endswith(" 0.0") for line in refused), refused
