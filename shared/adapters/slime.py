"""slime reward function that calls the reward service (``--custom-rm-path shared.adapters.slime.reward``).

How slime (github.com/THUDM/slime, ``slime/rollout/rm_hub``) calls it: without ``--group-rm``,
``await reward(args, sample)`` once per generated sample, right after its generation, many
concurrently on the rollout's event loop; with ``--group-rm``, ``await reward(args, samples)`` once
per prompt group. It returns a float per sample (the service's weighted ``total``), so slime needs no
``--reward-key``. Concurrent calls share one ``/v1/score`` request (shared.adapters.per_sample);
a group is one request.

What is read from a slime ``Sample``: ``response`` (the completion; slime keeps the end-of-turn
token in it, trimmed here as the service trims OpenRLHF's), ``label`` (the ground truth: text or a
JSON box list), ``response_length`` (the token count ``cosine`` needs) and ``metadata`` (optional
``rewards``/``weights``/``params`` for this sample, and ``original_size``/``input_size`` to have the
ground truth rescaled to the model's pixels: shared.adapters.coordinates). The service's URL and
defaults come from the environment (REWARD_API_URL, ...: see shared/adapters/per_sample.py).

Written against slime's source (slime/rollout/rm_hub/__init__.py: ``async_rm`` and
``batched_async_rm``; slime/utils/types.py: ``Sample``); slime itself is not on PyPI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from shared.adapters.per_sample import coalescer, request_config, sample_for
from shared.contract import trim_end_tokens


async def reward(args: Any, sample: Any, **kwargs: Any) -> float | list[float]:
    """slime's custom reward function: one sample -> its total; a list (``--group-rm``) -> one each."""
    if isinstance(sample, Sequence):
        return list(await asyncio.gather(*(_score(s) for s in sample)))
    return await _score(sample)


async def _score(sample: Any) -> float:
    metadata = sample.metadata if isinstance(getattr(sample, "metadata", None), dict) else {}
    tokens = getattr(sample, "response_length", None) or None  # 0: slime has not counted them
    scored = sample_for(
        trim_end_tokens(sample.response),
        sample.label,
        metadata,
        where=f"slime sample {getattr(sample, 'index', '?')}",
        completion_tokens=tokens,
    )
    result = await coalescer().score(scored, request_config({}, metadata))
    return result["score"]
