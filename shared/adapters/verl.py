"""verl (0.9) reward function that calls the reward service.

verl's reward loop (``RewardLoopManager`` -> ``RewardLoopWorker.compute_score_batch``) runs its reward
manager's ``run_single`` once per sample, all samples of a worker's chunk concurrently on one event
loop; the default ``naive`` manager decodes the response (special tokens skipped) and calls

    compute_score(data_source=, solution_str=, ground_truth=, extra_info=, **reward_kwargs)

awaiting it when it is a coroutine function, as this one is. Each call joins a short window
(shared.adapters.per_sample.Coalescer) and the window goes out as one ``/v1/score`` request: about
one request per verl chunk, not one per sample. The answer is ``{"score": total, "<reward>": value,
...}``; verl trains on ``score`` and logs the rest.

Configuration, in order of precedence: keyword arguments (``reward.custom_reward_function.reward_kwargs``),
then the sample's ``extra_info`` (keys ``rewards``, ``weights``, ``params``: a dataset may ask for
different rewards per sample), then the environment (REWARD_API_URL, REWARD_API_REWARDS, ...: see
shared/adapters/per_sample.py).

``extra_info`` may also carry ``original_size`` and ``input_size`` ((width, height) of the stored
image and of the image the model saw): the ground truth is then rescaled to the model's pixels
(shared.adapters.coordinates), and a box outside the input image is warned about. ``cosine`` needs
the response's token count, which the naive manager does not pass on: use the reward manager in
shared/adapters/verl_manager.py (``RewardServiceManager``), which adds it as ``completion_tokens``.

A sample the service could not score raises `RewardServiceError`: verl has no way to carry a missing
reward and a made-up 0 would train the policy on a lie.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.adapters.per_sample import coalescer, request_config, sample_for


async def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **reward_kwargs: Any,
) -> dict[str, float]:
    """``{"score": total, "<reward>": value, ...}`` for one sample; concurrent calls share a request."""
    # verl adds its own keys to reward_kwargs when a reward model router is configured: not ours.
    options = {key: reward_kwargs.get(key) for key in ("rewards", "weights", "params")}
    sample = sample_for(solution_str, ground_truth, extra_info, where=f"{data_source} sample")
    return await coalescer().score(sample, request_config(options, extra_info))
