"""The work behind /v1/score and /v1/openrlhf, without the I/O: validate, plan, score, answer.

Everything here is synchronous and runs in the worker's batch thread (routers/deps.BatchRunner):
parsing a 32 MiB body is CPU work too, and must not stall the event loop. The reward math is the
engine's; this module only checks the request against the registry and assembles the answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from shared.contract import OpenRLHFRequest, OpenRLHFResponse, Sample, ScoreRequest

from .. import metrics
from ..engine import registry
from ..engine.scoring import MAX_LISTED, listed, score_batch
from ..errors import ServiceError
from ..responses import encode_json
from ..settings import Settings

# Trailing end-of-text tokens a trainer may leave on an OpenRLHF query (Qwen, Llama 2/3, Phi).
END_TOKENS = ("<|endoftext|>", "<|im_end|>", "</s>", "<|eot_id|>", "<|end|>")


class RequestError(ServiceError):
    """The request itself is wrong (4xx, never retried); ``detail`` names the field."""


@dataclass(frozen=True)
class Plan:
    """What a request will compute: resolved rewards, their weights, their params."""

    rewards: tuple  # engine ResolvedReward, in the order requested
    weights: dict[str, float]
    params: dict[str, dict[str, float]]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rewards]


# ---------------------------------------------------------------- validation


def parse_body(model: type[BaseModel], body: bytes) -> Any:
    """The body validated by pydantic-core's own JSON parser (no intermediate dicts): wrong types,
    non-UTF-8 bytes, over-deep nesting and non-objects all come back as a 422 naming the field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestError(validation_message(exc)) from None


def validation_message(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = [f"{field_path(e['loc'])}: {e['msg']}" for e in errors[:MAX_LISTED]]
    if len(errors) > MAX_LISTED:
        parts.append(f"and {len(errors) - MAX_LISTED} more errors")
    return "; ".join(parts)


def field_path(loc: tuple) -> str:
    """('samples', 3, 'completion') -> 'samples[3].completion'; () -> 'body'."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


# ---------------------------------------------------------------- planning


def resolve(refs: list) -> tuple:
    try:
        return tuple(registry.resolve_rewards(refs))
    except registry.RegistryError as exc:  # unknown reward or version, duplicate; names rewards[i]
        raise RequestError(str(exc)) from None


def resolve_weights(rewards: tuple, given: dict[str, float] | None, base: dict[str, float]) -> dict[str, float]:
    """Weights keyed by canonical name. A key may be the canonical name or the spelling requested."""
    weights = {r.name: base.get(r.name, 1.0) for r in rewards}
    spelling = {r.name: r.name for r in rewards} | {r.requested_as: r.name for r in rewards}
    for key, value in (given or {}).items():
        if key not in spelling:
            raise RequestError(f"weights.{key}: not a requested reward (requested: {', '.join(weights)})")
        weights[spelling[key]] = value
    # Every reward lies in [-1, 1], so |total| <= sum |weight|: finite when that sum is.
    if not math.isfinite(sum(abs(w) for w in weights.values())):
        raise RequestError(f"weights: {weights} add up beyond the largest double, so totals would overflow; "
                           "scale them down (only their ratios matter to a trainer)")
    return weights


def check_params(rewards: tuple, params: dict | None) -> dict:
    try:
        return registry.validate_params(params or {}, rewards)
    except registry.RegistryError as exc:  # names params.<reward>.<parameter>
        raise RequestError(str(exc)) from None


def check_size(field: str, n: int, settings: Settings) -> None:
    if n > settings.max_samples:
        raise RequestError(
            f"{field}: {n} samples is more than the limit of {settings.max_samples} "
            f"per request (REWARD_API_MAX_SAMPLES); split the batch"
        )


def plan_request(request: ScoreRequest, settings: Settings, defaults: Plan) -> Plan:
    check_size("samples", len(request.samples), settings)
    if request.rewards is None:
        rewards, base = defaults.rewards, defaults.weights
    else:
        rewards, base = resolve(request.rewards), {}
    return Plan(rewards, resolve_weights(rewards, request.weights, base), check_params(rewards, request.params))


def resolve_default_rewards(settings: Settings) -> Plan:
    rewards = resolve(list(settings.default_rewards))
    return Plan(rewards, resolve_weights(rewards, settings.weights, {}), check_params(rewards, {}))


# ---------------------------------------------------------------- scoring


def totals(plan: Plan, values: dict[str, list], n: int) -> list[float | None]:
    """Σ weight × value per sample; None when any requested reward is None for that sample."""
    out: list[float | None] = []
    columns = [(plan.weights[name], values[name]) for name in plan.names]
    for i in range(n):
        total = 0.0
        for weight, column in columns:
            value = column[i]
            if value is None:
                total = None
                break
            total += weight * value
        out.append(total)
    return out


def score_samples(endpoint: str, samples: list[Sample], plan: Plan, explain: bool, settings: Settings):
    try:
        scores = score_batch(samples, plan.rewards, plan.params, explain, max_gt_boxes=settings.max_gt_boxes,
                             max_box_pairs=settings.max_box_pairs, explain_budget=settings.max_explain_bytes,
                             repair_seconds=settings.max_repair_seconds)
    except registry.RegistryError as exc:  # e.g. cosine without completion_tokens: lists the samples
        raise RequestError(str(exc)) from None
    metrics.observe_batch(endpoint, len(samples), scores.values, scores.error_reasons, scores.stats)
    return scores, totals(plan, scores.values, len(samples))


def score_body(body: bytes, settings: Settings, defaults: Plan) -> bytes:
    """POST /v1/score, all of it but the I/O: body bytes in, response bytes out."""
    request = parse_body(ScoreRequest, body)
    plan = plan_request(request, settings, defaults)
    scores, total = score_samples("/v1/score", request.samples, plan, request.explain, settings)
    return encode_json({
        "rewards": {name: scores.values[name] for name in plan.names},
        "total": total,
        "versions": {r.name: r.version for r in plan.rewards},
        "errors": scores.errors,
        "ids": [s.id for s in request.samples],
        "details": scores.details,  # None unless explain
    })


# ---------------------------------------------------------------- OpenRLHF


def strip_prompt(query: str, prompt: str, index: int) -> str:
    if not query.startswith(prompt):
        raise RequestError(f"query[{index}]: does not start with prompts[{index}], so the completion is unknown")
    return trim_end_tokens(query[len(prompt):])


def trim_end_tokens(text: str) -> str:
    """Drop trailing end-of-text tokens (and the white space between them). White space the model
    wrote before the first of them stays: it is part of what the format reward judges.

    Walks an end index instead of copying the text once per token (1.6 MB of ``</s>`` took 7.7 s).

    >>> trim_end_tokens("<answer>x</answer> <|im_end|>\\n</s>")
    '<answer>x</answer> '
    """
    end = len(text)
    while True:
        cut = end
        while cut and text[cut - 1].isspace():
            cut -= 1
        token = next((t for t in END_TOKENS if text.endswith(t, 0, cut)), None)
        if token is None:
            return text[:end]
        end = cut - len(token)


def openrlhf_body(body: bytes, settings: Settings, defaults: Plan) -> bytes:
    request = parse_body(OpenRLHFRequest, body)
    check_size("query", len(request.query), settings)
    samples = [
        Sample(completion=strip_prompt(q, p, i), solution=label)
        for i, (q, p, label) in enumerate(zip(request.query, request.prompts, request.labels))
    ]
    scores, total = score_samples("/v1/openrlhf", samples, defaults, False, settings)
    failed = [(i, e) for i, e in enumerate(scores.errors) if e is not None]
    if failed:
        # OpenRLHF has no way to carry "not scored"; a 0 would silently train on a wrong reward.
        reasons = "; ".join(f"labels[{i}]: {e}" for i, e in failed[:MAX_LISTED])
        raise RequestError(f"samples {listed([i for i, _ in failed])} cannot be scored: {reasons}")
    response = OpenRLHFResponse(rewards=total, scores=total, extra_logs={n: scores.values[n] for n in defaults.names})
    return encode_json(response.model_dump())


# ---------------------------------------------------------------- readiness

_PROBE_BOX = '[{"bbox_2d": [10, 20, 110, 220], "label": "cat"}]'
_PROBE = Sample(
    completion=f"<think>one cat</think><answer>```json\n{_PROBE_BOX}\n```</answer>",
    solution=f"<answer>```json\n{_PROBE_BOX}\n```</answer>",
)


_self_test_passed = False  # per process: the engine's answer to a fixed sample cannot change


def self_test() -> str | None:
    """Score a sample whose rewards are known (format 1, exact box ap 1); None when right.
    Once it has passed in this process it is not run again: /readyz is probed every few seconds."""
    global _self_test_passed
    if _self_test_passed:
        return None
    problem = _score_probe()
    _self_test_passed = problem is None
    return problem


def _score_probe() -> str | None:
    try:
        rewards = resolve(["format", "ap"])
        plan = Plan(rewards, {"format": 1.0, "ap": 1.0}, check_params(rewards, {}))
        scores = score_batch([_PROBE], plan.rewards, plan.params, False)
        got = {name: scores.values[name][0] for name in plan.names}
    except Exception as exc:  # readiness reports the failure; it must not crash the probe
        return f"self-test failed: {type(exc).__name__}: {exc}"
    # 1e-9: AP sums 101 interpolated precisions, so pycocotools itself gives 0.9999999999999998.
    if got["format"] != 1.0 or got["ap"] is None or abs(got["ap"] - 1.0) > 1e-9:
        return f"self-test scored {got}, expected format 1.0 and ap 1.0"
    return None
