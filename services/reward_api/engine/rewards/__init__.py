"""The rewards of reward-spec version 1, one small pure module each.

Every module offers a plain function of the parsed sample (easy to test by hand) and a ``score``
adapter taking a :class:`RewardInput`, which the registry calls. A ``RewardInput`` is built once
per sample and shared by all its rewards, so the completion is parsed once (``ParsedCompletion``)
and an evaluation several rewards need (COCO AP for ap/ap50/od_length, weighted_sum for cosine)
runs once (:meth:`RewardInput.shared`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..ground_truth import GroundTruth
from ..parsing import ParsedCompletion

__all__ = ["RewardInput"]


@dataclass
class RewardInput:
    """One sample as the rewards see it.

    ``params``: validated parameters keyed by canonical reward name, defaults filled in
    (``registry.validate_params``).
    """

    parsed: ParsedCompletion
    truth: GroundTruth
    completion_tokens: int | None = None
    params: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    _shared: dict[str, Any] = field(default_factory=dict, repr=False)

    def shared(self, key: str, compute: Callable[[RewardInput], Any]) -> Any:
        """``compute(self)``, run at most once per key for this sample."""
        if key not in self._shared:
            self._shared[key] = compute(self)
        return self._shared[key]

    def params_of(self, reward: str) -> Mapping[str, float]:
        return self.params.get(reward, {})
