"""verl custom reward functions that call the reward service.

verl loads a custom reward function from ``custom_reward_function.path`` / ``.name`` and calls it
through its reward manager:

- naive manager (default): ``compute_score(data_source=, solution_str=, ground_truth=, extra_info=,
  **custom_reward_function.reward_kwargs)`` once per sample, expecting a float or a dict with a
  ``"score"`` key (its other keys are logged as extra reward info). One HTTP request per sample:
  fine for trying things, slow for training.
- batch manager (``reward_model.reward_manager=batch``): ``compute_score_batch(data_sources=,
  solution_strs=, ground_truths=, extra_infos=, **reward_kwargs)`` once per batch, expecting one
  score per sample. One request per batch (split and spread by the client): use this one.

Configuration, in order of precedence: keyword arguments (verl's ``custom_reward_function.reward_kwargs``),
then the sample's ``extra_info`` (keys ``rewards``, ``weights``, ``params``: a dataset may ask for
different rewards per sample), then the environment:

| variable              | meaning                                                    |
|-----------------------|------------------------------------------------------------|
| REWARD_API_URL        | base URL(s), comma-separated (required)                    |
| REWARD_API_TOKEN      | bearer token (optional)                                    |
| REWARD_API_REWARDS    | reward names, comma-separated (default: the server's set)  |
| REWARD_API_WEIGHTS    | ``name=weight,...`` for the total (default: the server's)  |
| REWARD_API_TIMEOUT    | seconds per request (default 60)                           |

The score is the service's weighted ``total``; each reward's value is returned beside it. A sample
the service could not score (unreadable ground truth) raises `RewardServiceError`: verl has no way
to carry a missing reward and a made-up 0 would train the policy on a lie.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from shared.cli import parse_weights
from shared.client import RewardClient, RewardServiceError
from shared.contract import ScoreResponse

_client: RewardClient | None = None
_client_config: tuple | None = None
_client_lock = threading.Lock()


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **reward_kwargs: Any,
) -> dict[str, float]:
    """verl naive reward manager: ``{"score": total, "<reward>": value, ...}`` for one sample."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **reward_kwargs)[0]


def compute_score_batch(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
    **reward_kwargs: Any,
) -> list[dict[str, float]]:
    """verl batch reward manager: one ``{"score": total, "<reward>": value, ...}`` per sample, in order.

    Samples asking for the same rewards/weights/params go out together (one request, split by the
    client if large); a batch mixing configurations makes one request per configuration."""
    n = len(solution_strs)
    infos = list(extra_infos) if extra_infos is not None else [None] * n
    if not (len(data_sources) == len(ground_truths) == len(infos) == n):
        raise ValueError("data_sources, solution_strs, ground_truths and extra_infos differ in length")
    groups: dict[str, list[int]] = {}
    configs: dict[str, dict[str, Any]] = {}
    for i in range(n):
        config = _request_config(infos[i], reward_kwargs)
        key = repr(sorted(config.items()))
        groups.setdefault(key, []).append(i)
        configs[key] = config
    results: list[dict[str, float] | None] = [None] * n
    client = _shared_client()
    for key, indices in groups.items():
        samples = [{"completion": solution_strs[i], "solution": _solution(ground_truths[i])} for i in indices]
        response = client.score(samples, **configs[key])
        for position, i in enumerate(indices):
            results[i] = _sample_scores(response, position)
    return results  # type: ignore[return-value]


def _request_config(extra_info: Mapping[str, Any] | None, reward_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    info = extra_info or {}
    config = {
        "rewards": _pick("rewards", reward_kwargs, info, _names_from_env()),
        "weights": _pick("weights", reward_kwargs, info, _weights_from_env()),
        "params": _pick("params", reward_kwargs, info, None),
    }
    if isinstance(config["rewards"], str):
        config["rewards"] = [name.strip() for name in config["rewards"].split(",") if name.strip()]
    if config["rewards"] and config["weights"] is not None and _pick("weights", reward_kwargs, info, None) is None:
        # The environment's weights are defaults for every sample: keep those of the rewards asked for.
        asked = {r if isinstance(r, str) else r["name"] for r in config["rewards"]}
        config["weights"] = {name: w for name, w in config["weights"].items() if name in asked} or None
    # Sorted mappings: two samples asking the same thing in a different key order share a request.
    return {key: _freeze(value) for key, value in config.items()}


def _pick(key: str, reward_kwargs: Mapping[str, Any], info: Mapping[str, Any], default: Any) -> Any:
    if reward_kwargs.get(key) is not None:
        return reward_kwargs[key]
    if info.get(key) is not None:
        return info[key]
    return default


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _freeze(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_freeze(v) for v in value]
    return value


def _solution(ground_truth: Any) -> Any:
    # verl datasets often hold ground truth as a numpy array of dicts (parquet lists); the wire wants JSON.
    return ground_truth.tolist() if hasattr(ground_truth, "tolist") else ground_truth


def _sample_scores(response: ScoreResponse, i: int) -> dict[str, float]:
    total = response.total[i]
    if response.errors[i] is not None or total is None:
        raise RewardServiceError(f"the reward service could not score sample {i}: {response.errors[i]}")
    scores = {"score": total}
    for name, values in response.rewards.items():
        if values[i] is not None:
            scores[name] = values[i]
    return scores


def _names_from_env() -> list[str] | None:
    raw = os.environ.get("REWARD_API_REWARDS", "").strip()
    return [name.strip() for name in raw.split(",") if name.strip()] or None


def _weights_from_env() -> dict[str, float] | None:
    raw = os.environ.get("REWARD_API_WEIGHTS", "").strip()
    return parse_weights(raw) if raw else None


def _shared_client() -> RewardClient:
    """One client per process (verl calls compute_score from its reward workers), rebuilt if the
    environment changes."""
    global _client, _client_config
    urls = [url.strip() for url in os.environ.get("REWARD_API_URL", "").split(",") if url.strip()]
    if not urls:
        raise RewardServiceError("REWARD_API_URL is not set: the base URL(s) of the reward service, comma-separated")
    config = (tuple(urls), os.environ.get("REWARD_API_TOKEN"), float(os.environ.get("REWARD_API_TIMEOUT", "60")))
    with _client_lock:
        if _client is None or _client_config != config:
            if _client is not None:
                _client.close()
            _client = RewardClient(list(config[0]), token=config[1], timeout=config[2])
            _client_config = config
        return _client
