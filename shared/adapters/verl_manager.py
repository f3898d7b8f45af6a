"""A verl reward manager for the reward service: verl's own ``NaiveRewardManager``, plus the
response's token count, which ``cosine`` needs and the naive manager does not pass on.

Loaded by verl, never by this project (it imports verl)::

    reward.reward_manager.source=importlib
    reward.reward_manager.module.path=pkg://shared.adapters.verl_manager
    reward.reward_manager.name=RewardServiceManager

Everything else (decoding, the call of ``compute_score``, the result) is verl's code: this class
only puts ``completion_tokens`` (the valid response length, end token included, as TRL counts it)
into the sample's ``extra_info`` before handing over.
"""

from __future__ import annotations

import numpy as np
from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager


class RewardServiceManager(NaiveRewardManager):
    async def run_single(self, data):
        last = data[-1:]  # what the naive manager scores: the last sequence of a multi-sequence item
        item = last[0]
        response_length = item.batch["responses"].shape[-1]
        tokens = int(item.batch["attention_mask"][-response_length:].sum())
        infos = last.non_tensor_batch.get("extra_info")
        info = dict(infos[0]) if infos is not None and infos[0] is not None else {}
        info["completion_tokens"] = tokens
        holder = np.empty(1, dtype=object)  # np.array([dict]) would try to read the dict as a sequence
        holder[0] = info
        last.non_tensor_batch["extra_info"] = holder
        return await super().run_single(last)
