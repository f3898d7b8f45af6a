"""TRL GRPO reward functions served by the reward service.

    client = AsyncRewardClient(["http://rm-0:8000", "http://rm-1:8000"])
    reward_funcs = make_reward_functions(client, ["format", "od_length", "ap"])
    trainer = GRPOTrainer(..., reward_funcs=reward_funcs, args=GRPOConfig(reward_weights=[1, 1, 0]))

How TRL 1.16 calls them (``GRPOTrainer._calculate_rewards``): every reward function gets the same
keyword arguments for one generation batch: ``prompts``, ``completions`` (strings, or for a
conversational dataset lists of ``{"role", "content"}`` messages), ``completion_ids`` (token ids
per completion), every dataset column but prompt/completion (so ``solution``), and
``trainer_state``/``log_extra``/``log_metric``. Async functions are gathered concurrently on the
trainer's own event loop thread, so the client is used from that loop only. A ``None`` reward
becomes NaN in TRL, and a row where every function gave NaN is left out of the group baseline with
advantage 0: the right treatment for a sample the service could not score (never a 0 reward).
The metric name is the function's ``__name__``: ``rewards/<name>/mean``.

Coordinates: a dataset with ``original_size`` and ``input_size`` columns ((width, height) of the
stored image and of the image the model saw) has its ground truth rescaled to the model's pixels
(shared.adapters.coordinates); with ``input_size`` alone, a box outside it is warned about.

A function may also pick its reward per row (`PerRowReward`): VLM-R1's datasets name each line's
accuracy reward in a column (``accu_reward_method``). Every reward a row can pick is in the batch's
one request; the function reads each row's value from the column that row names.

One request per batch: the functions of one `make_reward_functions` call share a `_BatchScorer`.
The first function called for a batch starts the request; the others find it by the batch's
content fingerprint and await the same answer. Keying by content (not by ``id()`` of TRL's lists,
which Python reuses) is safe even when two batches are identical, since identical samples get
identical scores; an entry is dropped once every function has taken its values.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.adapters import coordinates
from shared.client import AsyncRewardClient, RewardServiceError
from shared.contract import REWARD_ALIASES, RewardRef, ScoreResponse

RewardFunction = Callable[..., Any]


@dataclass(frozen=True)
class PerRowReward:
    """A reward function called ``name`` whose value on each row is the reward named by that row's
    ``column`` (one of ``options``), or ``default`` where the row names none (None or "")."""

    name: str
    column: str
    options: Sequence[str]
    default: str

    def reward_for(self, row_choice: Any) -> str:
        if row_choice in (None, ""):
            return self.default
        if row_choice not in self.options and row_choice != self.default:
            raise ValueError(
                f"a row's {self.column!r} names {row_choice!r}, not one of the rewards "
                f"{self.name!r} can pick: {sorted({*self.options, self.default})}"
            )
        return row_choice


# Entries of batches some function never asked for (a caller using only part of the list) are
# dropped beyond this many, so nothing grows without bound.
_MAX_PENDING_BATCHES = 16


def make_reward_functions(
    client: AsyncRewardClient,
    rewards: Sequence[str | RewardRef | Mapping[str, Any] | PerRowReward],
    weights: Mapping[str, float] | None = None,
    params: Mapping[str, Mapping[str, float]] | None = None,
    solution_column: str = "solution",
    on_scored: Callable[[ScoreResponse], None] | None = None,
) -> list[RewardFunction]:
    """One async TRL reward function per reward (``__name__`` = the reward's name), all served by one
    HTTP request per generation batch. ``weights`` only shape the service's ``total``, which TRL does
    not read: weight the functions with ``GRPOConfig.reward_weights``. ``on_scored`` gets each batch's
    full answer once (errors, versions, total), e.g. for logging. A service failure beyond the client's
    retries raises `RewardServiceError` out of the trainer step: training stops, no reward is made up.
    A `PerRowReward` among ``rewards`` becomes a function that picks its reward row by row."""
    if rewards is None or isinstance(rewards, str) or not list(rewards):
        raise ValueError("rewards must be a non-empty list of reward names (or {'name', 'version'} refs)")
    names = [_reward_name(r) for r in rewards]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"each reward may be asked for once, got {', '.join(duplicated)} twice")
    per_row = {r.name: r for r in rewards if isinstance(r, PerRowReward)}
    requested = [r for r in rewards if not isinstance(r, PerRowReward)]
    requested_names = [_reward_name(r) for r in requested]
    # What the rows can pick goes into the request, unless it is there already under any of its
    # names: the service refuses a reward asked for twice (odLength and od_length, say).
    requested_canonical = {_canonical(n) for n in requested_names}
    for choice in per_row.values():
        for option in dict.fromkeys([*choice.options, choice.default]):
            if _canonical(option) not in requested_canonical:
                requested.append(option)
                requested_names.append(option)
                requested_canonical.add(_canonical(option))
    scorer = _BatchScorer(
        client, requested, requested_names, names, per_row, weights, params, solution_column, on_scored
    )
    return [scorer.function_for(name) for name in names]


def completion_text(completion: Any) -> str:
    """The text to score: a plain completion as is; a conversational one (a list of messages) by its
    last assistant message, whose content may be a string or a list of ``{"type": "text"}`` parts.

    TRL 1.16 parses a reply with the chat template's response schema when it has one, and then moves
    the ``<think>`` block into ``reasoning_content`` (``thinking`` for some families): it is put back
    in front of the content, as the model wrote it, so the format reward sees it.

    >>> completion_text([{"role": "assistant", "reasoning_content": "a cat", "content": "<answer>[]</answer>"}])
    '<think>a cat</think><answer>[]</answer>'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        replies = [m for m in completion if isinstance(m, Mapping) and m.get("role", "assistant") == "assistant"]
        if not replies:
            raise TypeError(f"conversational completion without an assistant message: {completion!r:.200}")
        reply = replies[-1]
        reasoning = reply.get("reasoning_content") or reply.get("thinking")
        text = _message_text(reply.get("content"))
        return f"<think>{reasoning}</think>{text}" if isinstance(reasoning, str) else text
    raise TypeError(f"completion must be a string or a list of messages, got {type(completion).__name__}")


def _message_text(content: Any) -> str:
    if content is None:  # a message that only calls a tool
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (part.get("text", "") for part in content if isinstance(part, Mapping) and part.get("type") == "text")
        return "".join(texts)
    raise TypeError(f"message content must be a string or a list of parts, got {type(content).__name__}")


def _canonical(name: str) -> str:
    return REWARD_ALIASES.get(name, name)


def _reward_name(reward: str | RewardRef | Mapping[str, Any] | PerRowReward) -> str:
    if isinstance(reward, str):
        return reward
    if isinstance(reward, (RewardRef, PerRowReward)):
        return reward.name
    return str(reward["name"])


@dataclass
class _PendingBatch:
    task: asyncio.Future[ScoreResponse]
    served: set[str] = field(default_factory=set)


class _BatchScorer:
    def __init__(
        self,
        client: AsyncRewardClient,
        rewards: list,  # what each request asks the service for
        reward_names: list[str],  # their names, in that order
        names: list[str],  # the functions' names
        per_row: dict[str, PerRowReward],
        weights: Mapping[str, float] | None,
        params: Mapping[str, Mapping[str, float]] | None,
        solution_column: str,
        on_scored: Callable[[ScoreResponse], None] | None,
    ) -> None:
        self.client, self.rewards, self.reward_names = client, rewards, reward_names
        self.names, self.per_row = names, per_row
        self.weights, self.params = weights, params
        self.solution_column, self.on_scored = solution_column, on_scored
        self._pending: dict[str, _PendingBatch] = {}

    def function_for(self, name: str) -> RewardFunction:
        async def reward_function(
            prompts: Sequence[Any] | None = None,
            completions: Sequence[Any] | None = None,
            completion_ids: Sequence[Sequence[int]] | None = None,
            **columns: Any,
        ) -> list[float | None]:
            if completions is None:
                raise TypeError(f"reward function {name!r} needs completions=")
            choice = self.per_row.get(name)
            picked = None if choice is None else self._picks(choice, len(completions), columns)  # before the request
            response = await self.scores(name, completions, completion_ids, columns)
            if picked is None:
                return self._values(response, name)
            values = {reward: self._values(response, reward) for reward in set(picked)}
            return [values[reward][i] for i, reward in enumerate(picked)]

        reward_function.__name__ = reward_function.__qualname__ = name
        reward_function.__doc__ = (
            f"The reward service's {name!r} reward (one request shared by {self.names})."
            if name not in self.per_row
            else f"Per row, the reward named by its {self.per_row[name].column!r} column."
        )
        return reward_function

    async def scores(
        self, name: str, completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None, columns: dict
    ) -> ScoreResponse:
        samples = self._samples(completions, completion_ids, columns)
        key = _fingerprint(samples)
        entry = self._pending.get(key)
        if entry is None or name in entry.served:  # a new batch (possibly with the same content)
            entry = _PendingBatch(asyncio.ensure_future(self._score(samples)))
            self._pending[key] = entry
            self._forget_oldest()
        entry.served.add(name)
        if len(entry.served) == len(self.names):
            self._pending.pop(key, None)
        # shield: one awaiting function being cancelled must not cancel the others' request.
        return await asyncio.shield(entry.task)

    async def _score(self, samples: list[dict]) -> ScoreResponse:
        response = await self.client.score(samples, rewards=self.rewards, weights=self.weights, params=self.params)
        if self.on_scored is not None:
            self.on_scored(response)
        return response

    def _samples(
        self, completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None, columns: dict
    ) -> list[dict]:
        if self.solution_column not in columns:
            raise KeyError(
                f"the dataset has no column {self.solution_column!r} for the ground truth; "
                f"the reward functions received: {sorted(columns)}"
            )
        solutions = columns[self.solution_column]
        n = len(completions)
        if len(solutions) != n or (completion_ids is not None and len(completion_ids) != n):
            raise ValueError("completions, completion_ids and the solution column differ in length")
        sizes = {
            key: columns[key] for key in (coordinates.ORIGINAL_SIZE_KEY, coordinates.INPUT_SIZE_KEY) if key in columns
        }
        samples = []
        for i, completion in enumerate(completions):
            row_sizes = {key: column[i] for key, column in sizes.items() if column[i] is not None}
            solution = coordinates.for_model(solutions[i], row_sizes, where=f"row {i}")
            sample = {"completion": completion_text(completion), "solution": solution}
            if completion_ids is not None:  # the token count `cosine` needs
                sample["completion_tokens"] = len(completion_ids[i])
            samples.append(sample)
        return samples

    @staticmethod
    def _picks(choice: PerRowReward, n: int, columns: dict) -> list[str]:
        if choice.column not in columns:
            raise KeyError(
                f"{choice.name!r} picks its reward by the column {choice.column!r}, which the dataset "
                f"does not have; the reward functions received: {sorted(columns)}"
            )
        if len(columns[choice.column]) != n:
            raise ValueError(
                f"the column {choice.column!r} has {len(columns[choice.column])} rows, the batch {n} completions"
            )
        return [choice.reward_for(row) for row in columns[choice.column]]

    def _values(self, response: ScoreResponse, name: str) -> list[float | None]:
        # The service answers under canonical names (odLength -> od_length).
        for key in (name, _canonical(name)):
            if key in response.rewards:
                return list(response.rewards[key])
        # An alias of the server's own: it answers the requested rewards in request order, so the
        # position identifies it.
        answered = list(response.rewards)
        if name in self.reward_names and len(answered) == len(self.reward_names):
            return list(response.rewards[answered[self.reward_names.index(name)]])
        raise RewardServiceError(f"the service answered rewards {answered}, not the requested {self.reward_names}")

    def _forget_oldest(self) -> None:
        while len(self._pending) > _MAX_PENDING_BATCHES:
            self._pending.pop(next(iter(self._pending)))


def _fingerprint(samples: list[dict]) -> str:
    text = json.dumps(samples, sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()
