"""What the per-sample adapters (verl, slime) share: configuration from the environment, ground
truth made plain JSON and put in the model's pixels, and `Coalescer`, which gathers concurrent
one-sample calls into one request.

verl's reward loop and slime's rollout call the reward function once per sample, concurrently, on
one asyncio event loop per process (``asyncio.gather`` over a batch). Sent one by one, every sample
would pay a whole HTTP round trip; the coalescer holds each call for a short window
(``REWARD_API_COALESCE_MS``, default 20 ms) and sends everything that arrived in it as one
``/v1/score`` request per reward configuration, split by the client if large.

| variable                | meaning                                                    |
|-------------------------|------------------------------------------------------------|
| REWARD_API_URL          | base URL(s), comma-separated (required)                    |
| REWARD_API_TOKEN        | bearer token (optional)                                    |
| REWARD_API_REWARDS      | reward names, comma-separated (default: the server's set)  |
| REWARD_API_WEIGHTS      | ``name=weight,...`` for the total (default: the server's)  |
| REWARD_API_TIMEOUT      | seconds per request (default 60)                           |
| REWARD_API_COALESCE_MS  | how long a call waits for others to share its request (20) |
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Mapping
from typing import Any

from shared.adapters import coordinates
from shared.cli import parse_weights
from shared.client import AsyncRewardClient, RewardServiceError
from shared.contract import ScoreResponse

DEFAULT_COALESCE_MS = 20.0
# A window is sent at once when it holds this many samples (the client's own chunk size).
MAX_COALESCED = 1024


def request_config(overrides: Mapping[str, Any], info: Mapping[str, Any] | None) -> dict[str, Any]:
    """rewards / weights / params of one sample: ``overrides`` (the framework's keyword arguments),
    then the sample's own ``info``, then REWARD_API_REWARDS / REWARD_API_WEIGHTS."""
    info = info or {}
    config = {
        "rewards": _pick("rewards", overrides, info, _names_from_env()),
        "weights": _pick("weights", overrides, info, _weights_from_env()),
        "params": _pick("params", overrides, info, None),
    }
    if isinstance(config["rewards"], str):
        config["rewards"] = [name.strip() for name in config["rewards"].split(",") if name.strip()]
    if config["rewards"] and config["weights"] is not None and _pick("weights", overrides, info, None) is None:
        # The environment's weights are defaults for every sample: keep those of the rewards asked for.
        asked = {r if isinstance(r, str) else r["name"] for r in config["rewards"]}
        config["weights"] = {name: w for name, w in config["weights"].items() if name in asked} or None
    return {key: plain(value) for key, value in config.items()}


def sample_for(
    completion: str, ground_truth: Any, info: Mapping[str, Any] | None, where: str, completion_tokens: int | None = None
) -> dict[str, Any]:
    """One /v1/score sample: the ground truth as plain JSON, rescaled to the model's input pixels
    when ``info`` gives ``original_size`` and ``input_size`` (shared.adapters.coordinates)."""
    info = info or {}
    sizes = {
        key: plain(info[key])
        for key in (coordinates.ORIGINAL_SIZE_KEY, coordinates.INPUT_SIZE_KEY)
        if info.get(key) is not None
    }
    sample: dict[str, Any] = {
        "completion": completion,
        "solution": coordinates.for_model(plain(ground_truth), sizes, where),
    }
    tokens = completion_tokens if completion_tokens is not None else info.get("completion_tokens")
    if tokens is not None:
        sample["completion_tokens"] = int(tokens)
    return sample


def plain(value: Any) -> Any:
    """numpy arrays and scalars (parquet hands verl its lists as nested object arrays), tuples and
    mappings turned into JSON types, sorted by key so equal configurations compare equal."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # an ndarray (nested objects stay inside) or a numpy scalar
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def sample_scores(response: ScoreResponse, i: int) -> dict[str, float]:
    """``{"score": total, "<reward>": value, ...}`` of sample ``i``; raises if it was not scored (a
    framework cannot carry a missing reward, and a made-up 0 would train the policy on a lie)."""
    total = response.total[i]
    if response.errors[i] is not None or total is None:
        raise RewardServiceError(f"the reward service could not score the sample: {response.errors[i]}")
    scores = {"score": total}
    for name, values in response.rewards.items():
        value = values[i]
        if value is not None:
            scores[name] = value
    return scores


class Coalescer:
    """One per event loop: `score` puts a sample in the open window of its configuration; the window
    is sent as one request when it closes (after ``window_s``, or at MAX_COALESCED samples)."""

    def __init__(self, client: AsyncRewardClient, window_s: float) -> None:
        self.client, self.window_s = client, window_s
        self._open: dict[str, tuple[dict, list[tuple[dict, asyncio.Future]]]] = {}
        self._sending: set[asyncio.Task] = set()

    async def score(self, sample: dict, config: dict) -> dict[str, float]:
        key = repr(sorted(config.items()))
        loop = asyncio.get_running_loop()
        if key not in self._open:
            self._open[key] = (config, [])
            loop.call_later(self.window_s, self._close, key)
        waiting = self._open[key][1]
        future = loop.create_future()
        waiting.append((sample, future))
        if len(waiting) >= MAX_COALESCED:
            self._close(key)
        response, position = await future
        return sample_scores(response, position)

    def _close(self, key: str) -> None:
        if key not in self._open:
            return  # already sent because it was full
        config, waiting = self._open.pop(key)
        task = asyncio.ensure_future(self._send(config, waiting))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, config: dict, waiting: list[tuple[dict, asyncio.Future]]) -> None:
        try:
            response = await self.client.score([sample for sample, _ in waiting], **config)
        except BaseException as exc:  # every caller of the window gets the failure
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for position, (_, future) in enumerate(waiting):
            if not future.done():
                future.set_result((response, position))


_coalescers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[tuple, Coalescer]] = weakref.WeakKeyDictionary()


def coalescer() -> Coalescer:
    """The running loop's coalescer, rebuilt if the environment changed (an httpx client belongs to
    the loop that first uses it, so each loop has its own)."""
    urls = [url.strip() for url in os.environ.get("REWARD_API_URL", "").split(",") if url.strip()]
    if not urls:
        raise RewardServiceError("REWARD_API_URL is not set: the base URL(s) of the reward service, comma-separated")
    config = (
        tuple(urls),
        os.environ.get("REWARD_API_TOKEN"),
        _float_env("REWARD_API_TIMEOUT", 60.0),
        _float_env("REWARD_API_COALESCE_MS", DEFAULT_COALESCE_MS),
    )
    loop = asyncio.get_running_loop()
    held = _coalescers.get(loop)
    if held is None or held[0] != config:
        if held is not None:
            _close_later(held[1].client)
        client = AsyncRewardClient(list(config[0]), token=config[1], timeout=config[2])
        held = (config, Coalescer(client, config[3] / 1000.0))
        _coalescers[loop] = held
    return held[1]


# The loop keeps only weak references to its tasks: these hold each close until it is done.
_closing: set[asyncio.Future[None]] = set()


def _close_later(client: AsyncRewardClient) -> None:
    closing = asyncio.ensure_future(client.close())
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise RewardServiceError(
            f"{name} must be a non-negative number of {'ms' if 'MS' in name else 's'}, got {raw!r}"
        )
    return value


def _pick(key: str, overrides: Mapping[str, Any], info: Mapping[str, Any], default: Any) -> Any:
    if overrides.get(key) is not None:
        return overrides[key]
    if info.get(key) is not None:
        return info[key]
    return default


def _names_from_env() -> list[str] | None:
    raw = os.environ.get("REWARD_API_REWARDS", "").strip()
    return [name.strip() for name in raw.split(",") if name.strip()] or None


def _weights_from_env() -> dict[str, float] | None:
    raw = os.environ.get("REWARD_API_WEIGHTS", "").strip()
    return parse_weights(raw) if raw else None
