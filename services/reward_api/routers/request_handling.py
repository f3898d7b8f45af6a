"""The work behind /v1/score and /v1/openrlhf, without the I/O: validate, plan, score, answer.

Everything here is synchronous. ``prepare_*`` parse and plan one request (on the event loop for a
small body, in the worker's parsing thread for a large one: routers/deps.py); `score_jobs` scores
every request waiting at that moment in the batch thread, together. The reward math is the
engine's; this module only checks requests against the registry and assembles the answers.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any, cast

import orjson
from pydantic import BaseModel, ValidationError

from shared.contract import OpenRLHFRequest, OpenRLHFResponse, Sample, ScoreRequest, trim_end_tokens

from .. import metrics, scoring_pool
from ..engine import registry
from ..engine.scoring import MAX_LISTED, listed, score_batch
from ..errors import ServiceError
from ..responses import encode_json
from ..settings import Settings


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
    """The rewards asked for, resolved. Remembered by their names and versions: a trainer asks for
    the same set on every request, and one-sample requests must not pay for it each time."""
    key = tuple(r if isinstance(r, str) else (r.name, r.version) for r in refs)
    try:
        return _resolve_key(key)
    except registry.RegistryError as exc:  # unknown reward or version, duplicate; names rewards[i]
        raise RequestError(str(exc)) from None


@functools.lru_cache(maxsize=256)
def _resolve_key(key: tuple) -> tuple:
    refs = [r if isinstance(r, str) else {"name": r[0], "version": r[1]} for r in key]
    return tuple(registry.resolve_rewards(refs))


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
        raise RequestError(
            f"weights: {weights} add up beyond the largest double, so totals would overflow; "
            "scale them down (only their ratios matter to a trainer)"
        )
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
        total: float | None = 0.0
        for weight, column in columns:
            value = column[i]
            if value is None:
                total = None
                break
            total += weight * value
        out.append(total)
    return out


@dataclass
class Job:
    """A scoring request parsed and planned, waiting for its turn in the batch thread. Jobs of the
    same endpoint, reward set, parameters and ``explain`` are scored together (`score_jobs`), each
    within its own request budgets (``settings``: the worker's, the same for every job)."""

    endpoint: str
    samples: list[Sample]
    plan: Plan
    settings: Settings
    explain: bool = False

    @property
    def group(self) -> tuple:
        rewards = tuple((r.name, r.version) for r in self.plan.rewards)
        # orjson only as a hashable key of the (validated, finite) params; answers use encode_json.
        return self.endpoint, rewards, orjson.dumps(self.plan.params, option=orjson.OPT_SORT_KEYS), self.explain


@dataclass
class Scored:
    """One job's share of a coalesced engine call: every list aligned with its samples."""

    values: dict[str, list]
    errors: list[str | None]
    details: list | None
    total: list[float | None]


def prepare_score(body: bytes, settings: Settings, defaults: Plan) -> Job:
    request = parse_body(ScoreRequest, body)
    job = Job("/v1/score", request.samples, plan_request(request, settings, defaults), settings, request.explain)
    check_completion_tokens(job)
    return job


def check_completion_tokens(job: Job) -> None:
    """Checked per request before jobs are merged, so one request without token counts cannot
    refuse another's samples."""
    needing = [r.name for r in job.plan.rewards if r.needs_completion_tokens]
    missing = [i for i, s in enumerate(job.samples) if s.completion_tokens is None] if needing else []
    if missing:
        raise RequestError(
            f"samples[].completion_tokens: required by {', '.join(needing)}, missing for sample(s) {listed(missing)}"
        )


def score_jobs(jobs: list[Job]) -> list[bytes | RequestError]:
    """The answer (or the 4xx) of every job, one engine call per group of jobs that ask the same."""
    results: dict[int, bytes | RequestError] = {}
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(job.group, []).append(i)
    for indices in groups.values():
        members = [jobs[i] for i in indices]
        shares: list[Scored] | list[Scored | RequestError]
        try:
            shares = score_together(members)
        except RequestError:  # one request passed a budget (or a check): only its request fails
            shares = [one_alone(job) for job in members]
        for i, job, share in zip(indices, members, shares, strict=True):
            results[i] = share if isinstance(share, RequestError) else answer(job, share)
    return [results[i] for i in range(len(jobs))]


def one_alone(job: Job) -> Scored | RequestError:
    try:
        return score_together([job])[0]
    except RequestError as exc:
        return exc


def score_together(jobs: list[Job]) -> list[Scored]:
    samples = [sample for job in jobs for sample in job.samples]
    plan, explain, settings = jobs[0].plan, jobs[0].explain, jobs[0].settings
    try:
        # score_batch itself, or a large batch in chunks on every core of the host (scoring_pool.py)
        scores, tally = scoring_pool.score_batch_pooled(
            scoring_pool.client(settings.scoring_processes),
            settings.chunk_samples,
            samples,
            plan.rewards,
            plan.params,
            explain,
            max_gt_boxes=settings.max_gt_boxes,
            max_box_pairs=settings.max_box_pairs,
            explain_budget=settings.max_explain_bytes,
            repair_seconds=settings.max_repair_seconds,
            request_sizes=[len(job.samples) for job in jobs],
        )
    except registry.RegistryError as exc:  # a budget passed (box pairs, explain size): names the limit
        raise RequestError(str(exc)) from None
    metrics.observe_batch(jobs[0].endpoint, tally)
    shares, start = [], 0
    for job in jobs:
        end = start + len(job.samples)
        values = {name: column[start:end] for name, column in scores.values.items()}
        details = None if scores.details is None else scores.details[start:end]
        shares.append(Scored(values, scores.errors[start:end], details, totals(job.plan, values, end - start)))
        start = end
    return shares


def answer(job: Job, scored: Scored) -> bytes | RequestError:
    try:
        return ANSWERS[job.endpoint](job, scored)
    except RequestError as exc:
        return exc


def score_answer(job: Job, scored: Scored) -> bytes:
    return encode_json(
        {
            "rewards": {name: scored.values[name] for name in job.plan.names},
            "total": scored.total,
            "versions": {r.name: r.version for r in job.plan.rewards},
            "errors": scored.errors,
            "ids": [s.id for s in job.samples],
            "details": scored.details,  # None unless explain
        }
    )


# ---------------------------------------------------------------- OpenRLHF

# Placeholders a VLM processor expands to one token per image patch (or video frame patch): the
# prompt OpenRLHF sends holds one, the query it decoded from the token ids holds the expansion.
MEDIA_PADS = ("<|image_pad|>", "<|video_pad|>")
_MEDIA_PAD = re.compile("(" + "|".join(re.escape(p) for p in MEDIA_PADS) + ")")


def completion_of(query: str, prompt: str, index: int) -> str:
    """The completion in an OpenRLHF ``query``: what follows its ``prompt``, where each image or video
    placeholder of the prompt may stand for a run of them in the query, end tokens trimmed."""
    end = len(prompt) if query.startswith(prompt) else expanded_prompt_end(query, prompt)
    if end is None:
        raise RequestError(
            f"query[{index}]: does not start with prompts[{index}] (image and video pads allowed to expand), "
            f"so the completion is unknown; send the prompt text the query was tokenised from"
        )
    return trim_end_tokens(query[end:])


def expanded_prompt_end(query: str, prompt: str) -> int | None:
    """Where ``prompt`` ends in ``query`` if each run of one media pad in the prompt matches a run of
    one or more of the same pad in the query; None if it does not match. Linear in the query."""
    at = 0
    for i, piece in enumerate(_MEDIA_PAD.split(prompt)):
        if i % 2 == 0:  # text between pads: exactly
            if not query.startswith(piece, at):
                return None
            at += len(piece)
        elif not query.startswith(piece, at):
            return None
        else:
            while query.startswith(piece, at):
                at += len(piece)
    return at


def prepare_openrlhf(body: bytes, settings: Settings, defaults: Plan) -> Job:
    request = parse_body(OpenRLHFRequest, body)
    check_size("query", len(request.query), settings)
    samples = [
        Sample(completion=completion_of(q, p, i), solution=label)
        for i, (q, p, label) in enumerate(zip(request.query, request.prompts, request.labels, strict=True))
    ]
    job = Job("/v1/openrlhf", samples, defaults, settings)
    check_completion_tokens(job)
    return job


def openrlhf_answer(job: Job, scored: Scored) -> bytes:
    failed = [(i, e) for i, e in enumerate(scored.errors) if e is not None]
    if failed:
        # OpenRLHF has no way to carry "not scored"; a 0 would silently train on a wrong reward.
        reasons = "; ".join(f"labels[{i}]: {e}" for i, e in failed[:MAX_LISTED])
        raise RequestError(f"samples {listed([i for i, _ in failed])} cannot be scored: {reasons}")
    # No sample failed, so none has a None total (a reward is None only with an error); the
    # response model still checks every value.
    total = cast(list[float], scored.total)
    response = OpenRLHFResponse(
        rewards=total,
        scores=normalised(job.plan, total),
        extra_logs={n: scored.values[n] for n in job.plan.names},
    )
    return encode_json(response.model_dump())


def normalised(plan: Plan, total: list[float]) -> list[float]:
    """``total`` divided by the sum of the absolute weights: in [0, 1] when every reward is (the
    default set: format, od_length, ap), which is OpenRLHF's default ``--algo.dynamic_filtering_range``."""
    scale = sum(abs(w) for w in plan.weights.values())
    return [t / scale for t in total] if scale > 0 else list(total)


ANSWERS = {"/v1/score": score_answer, "/v1/openrlhf": openrlhf_answer}


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
