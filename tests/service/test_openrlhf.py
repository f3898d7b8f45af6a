"""POST /v1/openrlhf: OpenRLHF's remote reward model protocol."""

from __future__ import annotations

import pytest

from shared.contract import OpenRLHFResponse

from .test_score import CAT, DOG, completion, solution

PROMPT = "<|im_start|>user\nFind the cat.<|im_end|>\n<|im_start|>assistant\n"


def post(client, body: dict):
    return client.post("/v1/openrlhf", json=body)


def test_rewards_are_the_weighted_default_total(client):
    defaults = client.get("/v1/rewards").json()["defaults"]
    queries = [PROMPT + completion([CAT]) + "<|im_end|>\n<|endoftext|>",  # trailing tokens trimmed
               PROMPT + completion([CAT, DOG]),
               PROMPT + "no idea"]
    answer = post(client, {"query": queries, "prompts": [PROMPT] * 3, "labels": [solution([CAT])] * 3})
    assert answer.status_code == 200, answer.text
    got = OpenRLHFResponse.model_validate(answer.json())
    assert set(got.extra_logs) == set(defaults["rewards"])
    assert got.extra_logs["format"] == [1.0, 1.0, 0.0]  # format would be 0 had the tokens been kept
    for i in range(3):
        expected = sum(defaults["weights"][name] * got.extra_logs[name][i] for name in got.extra_logs)
        assert got.rewards[i] == pytest.approx(expected)
    # scores: the total over the sum of the weights, inside OpenRLHF's default filtering range [0, 1]
    scale = sum(abs(w) for w in defaults["weights"].values())
    assert got.scores == pytest.approx([r / scale for r in got.rewards])
    assert all(0.0 <= s <= 1.0 for s in got.scores) and max(got.rewards) > 1.0
    assert got.rewards[0] > got.rewards[2]


def test_same_values_as_score(client):
    text = completion([CAT, DOG])
    via_openrlhf = post(client, {"query": [PROMPT + text], "prompts": [PROMPT], "labels": [solution([CAT])]}).json()
    via_score = client.post("/v1/score", json={"samples": [{"completion": text, "solution": solution([CAT])}]}).json()
    assert via_openrlhf["rewards"] == via_score["total"]
    assert via_openrlhf["extra_logs"] == via_score["rewards"]


def test_empty_lists(client):
    answer = post(client, {"query": [], "prompts": [], "labels": []})
    assert answer.status_code == 200
    assert answer.json()["rewards"] == [] and answer.json()["scores"] == []


def test_unscorable_sample_refuses_the_batch(client):
    answer = post(client, {"query": [PROMPT + completion([CAT])] * 2, "prompts": [PROMPT] * 2,
                           "labels": [solution([CAT]), "<answer>```json\n[{\"bbox_2d\": [1]}]\n```</answer>"]})
    assert answer.status_code == 422
    assert "labels[1]" in answer.json()["detail"]


@pytest.mark.parametrize("body, field", [
    ({"query": ["a"], "prompts": [], "labels": ["None"]}, "same length"),
    ({"query": ["zzz"], "prompts": ["a"], "labels": ["None"]}, "query[0]"),
    ({"query": [1], "prompts": ["a"], "labels": ["None"]}, "query[0]"),
    ({"query": ["a"], "prompts": ["a"]}, "labels"),
])
def test_request_errors(client, body, field):
    answer = post(client, body)
    assert answer.status_code == 422
    assert field in answer.json()["detail"]


IMAGE_PROMPT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "<|vision_start|><|image_pad|><|vision_end|>Find the cat.<|im_end|>\n<|im_start|>assistant\n")


def expanded(prompt: str, pads: dict[str, list[int]]) -> str:
    """What OpenRLHF's decoded query holds: each placeholder expanded by the processor, in order."""
    out = prompt
    for pad, counts in pads.items():
        parts = out.split(pad)
        out = parts[0] + "".join(pad * n + rest for n, rest in zip(counts, parts[1:], strict=True))
    return out


@pytest.mark.parametrize("prompt, pads", [
    (IMAGE_PROMPT, {"<|image_pad|>": [12]}),
    (IMAGE_PROMPT.replace("<|vision_end|>", "<|vision_end|><|vision_start|><|image_pad|><|vision_end|>"),
     {"<|image_pad|>": [12, 30]}),
    (IMAGE_PROMPT.replace("<|image_pad|>", "<|video_pad|>") + "",
     {"<|video_pad|>": [48]}),
])
def test_expanded_image_and_video_pads(client, prompt, pads):
    text = completion([CAT])
    query = expanded(prompt, pads) + text + "<|im_end|>"
    answer = post(client, {"query": [query], "prompts": [prompt], "labels": [solution([CAT])]})
    assert answer.status_code == 200, answer.text
    direct = client.post("/v1/score", json={"samples": [{"completion": text, "solution": solution([CAT])}]}).json()
    assert answer.json()["rewards"] == direct["total"] and answer.json()["extra_logs"]["format"] == [1.0]


def test_a_pad_missing_from_the_query_is_refused(client):
    query = IMAGE_PROMPT.replace("<|image_pad|>", "") + completion([CAT])
    answer = post(client, {"query": [query], "prompts": [IMAGE_PROMPT], "labels": [solution([CAT])]})
    assert answer.status_code == 422 and "query[0]" in answer.json()["detail"]


def test_legacy_batch_above_the_sample_limit_names_the_limit(client, server):
    n = int(server.env["REWARD_API_MAX_SAMPLES"]) + 1
    answer = post(client, {"query": [PROMPT + "x"] * n, "prompts": [PROMPT] * n, "labels": ["None"] * n})
    assert answer.status_code == 422
    assert f"{n} samples" in answer.json()["detail"] and "REWARD_API_MAX_SAMPLES" in answer.json()["detail"]


def test_every_refusal_is_logged_with_its_detail(client, server):
    post(client, {"query": ["zzz-logged"], "prompts": ["a"], "labels": ["None"]})
    assert "POST /v1/openrlhf answered 422: query[0]: does not start with prompts[0]" in server.log()


def test_end_tokens_are_trimmed_in_linear_time(client):
    import time

    query = PROMPT + completion([CAT]) + "</s>" * 200_000  # 800 KB of end tokens
    start = time.perf_counter()
    answer = post(client, {"query": [query], "prompts": [PROMPT], "labels": [solution([CAT])]})
    assert answer.status_code == 200 and answer.json()["extra_logs"]["format"] == [1.0]
    assert time.perf_counter() - start < 3.0
