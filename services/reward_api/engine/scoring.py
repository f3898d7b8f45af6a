"""score_batch: every requested reward for every sample, each sample parsed once.

Per sample: one :class:`ParsedCompletion` and one :class:`GroundTruth`, wrapped in a
:class:`RewardInput` that all its rewards share (so ap, ap50 and od_length run one COCO
evaluation, and cosine reuses weighted_sum). A sample whose ground truth cannot be read gets
``None`` for every reward, an error message and the reason ``"invalid_solution"``; the other
samples are scored normally. Errors of the request itself (a reward needing completion_tokens
that a sample lacks, bad parameters) raise before anything is scored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .ground_truth import GroundTruth, SolutionError, canonical_text, parse_solution
from .parsing import ParsedCompletion, Prediction, RepairBudget, RepairBudgetSpent, repair_json
from .registry import RegistryError, ResolvedReward, resolve_rewards, validate_params
from .rewards import RewardInput, detection, repetition, weighted_sum

__all__ = [
    "INVALID_SOLUTION",
    "REPAIR_BUDGET",
    "REWARD_ERROR",
    "BatchScores",
    "BatchStats",
    "ExplainTooLarge",
    "MissingCompletionTokens",
    "TooManyBoxPairs",
    "listed",
    "parse_failures",
    "score_batch",
]

INVALID_SOLUTION = "invalid_solution"  # error reason: the sample's ground truth cannot be read
REWARD_ERROR = "reward_error"  # error reason: a reward raised (a bug); the sample is not scored
REPAIR_BUDGET = "repair_budget"  # error reason: the request's json_repair time was spent before it
MAX_LISTED = 20


class ExplainTooLarge(RegistryError):
    """The explain details would pass the caller's size budget; raised as soon as they do."""

    def __init__(self, budget: int, n_done: int, n_samples: int) -> None:
        super().__init__(
            "explain",
            f"the details of samples 0..{n_done - 1} (of {n_samples}) already pass the limit of {budget} bytes "
            "(REWARD_API_MAX_EXPLAIN_BYTES); ask explain for fewer samples, or for fewer boxes per completion",
        )


class TooManyBoxPairs(RegistryError):
    """Matching costs time in predicted x ground-truth boxes; the request passed its budget."""

    def __init__(self, budget: int, index: int) -> None:
        super().__init__(
            "samples",
            f"samples 0..{index} already need more than {budget} (prediction, ground truth) box pairs to match "
            "(REWARD_API_MAX_BOX_PAIRS); split the batch or send fewer boxes",
        )


class MissingCompletionTokens(RegistryError):
    """A reward needs completion_tokens (cosine) and some samples have none; ``indexes`` lists them."""

    def __init__(self, rewards: Sequence[str], indexes: Sequence[int]) -> None:
        super().__init__(
            "samples[].completion_tokens",
            f"required by {', '.join(rewards)}, missing for sample(s) {listed(indexes)}",
        )
        self.indexes = list(indexes)


def listed(items: Sequence[Any]) -> str:
    """``"0, 3, 7"``, at most MAX_LISTED of them, then ``"and N more"``: messages stay readable."""
    shown = ", ".join(str(i) for i in items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


@dataclass(frozen=True)
class BatchStats:
    """What the metrics layer records, without parsing anything again.

    ``predicted_boxes[i]``: items in sample i's answer box list (None without an answer block);
    ``sample_failures[i]``: the parse-failure kinds of sample i's answer; ``parse_failures``: how
    many samples had each kind; ``box_pairs[i]``: the (prediction, ground truth) pairs sample i
    counts against ``max_box_pairs`` (0 when its ground truth is unreadable), so a batch scored in
    chunks can check a request's budget as one batch would.
    """

    predicted_boxes: list[int | None]
    sample_failures: list[tuple[str, ...]]
    parse_failures: dict[str, int]
    box_pairs: list[int]


@dataclass(frozen=True)
class BatchScores:
    """Rewards of a batch, every list aligned with the samples; None = not scored, never 0."""

    values: dict[str, list[float | None]]
    versions: dict[str, str]
    errors: list[str | None]
    error_reasons: list[str | None]
    details: list[dict[str, Any]] | None
    stats: BatchStats


_ABSENT = object()


def _field(sample: Any, name: str) -> Any:
    """A sample's field, from a dict, another mapping, or an object (the service's pydantic Sample).
    The abstract Mapping check is slow, so plain dicts and attributes are tried before it."""
    if type(sample) is dict:
        return sample.get(name)
    value = getattr(sample, name, _ABSENT)
    if value is not _ABSENT:
        return value
    return sample.get(name) if isinstance(sample, Mapping) else None


def parse_failures(parsed: ParsedCompletion) -> tuple[str, ...]:
    """The answer's parse-failure kinds: "no_answer", "no_json_fence", "invalid_json",
    "not_a_list" (the box list is empty because of it), then per item "not_an_object",
    "no_label", "invalid_box" (each listed once)."""
    failure = parsed.answer_box_list.failure
    if failure is not None:
        return (failure,)
    kinds = []
    predictions = parsed.answer_predictions
    if any(not p.is_object for p in predictions):
        kinds.append("not_an_object")
    if any(p.is_object and p.label is None for p in predictions):
        kinds.append("no_label")
    if any(p.is_object and p.box is None for p in predictions):
        kinds.append("invalid_box")
    return tuple(kinds)


def _resolve(rewards: Sequence[Any]) -> list[ResolvedReward]:
    if all(isinstance(r, ResolvedReward) for r in rewards):
        return list(rewards)
    return resolve_rewards([r.requested_as if isinstance(r, ResolvedReward) else r for r in rewards])


def _check_completion_tokens(samples: Sequence[Any], rewards: Sequence[ResolvedReward]) -> None:
    needing = [r.name for r in rewards if r.needs_completion_tokens]
    if not needing:
        return
    missing = [i for i, s in enumerate(samples) if _field(s, "completion_tokens") is None]
    if missing:
        raise MissingCompletionTokens(needing, missing)


def score_batch(
    samples: Sequence[Any],
    rewards: Sequence[ResolvedReward | str | Mapping],
    params: Mapping[str, Any] | None = None,
    explain: bool = False,
    *,
    max_gt_boxes: int | None = None,
    max_box_pairs: int | None = None,
    explain_budget: int | None = None,
    repair_seconds: float | None = None,
    request_sizes: Sequence[int] | None = None,
) -> BatchScores:
    """Score ``samples`` (objects or dicts with completion, solution, completion_tokens).

    ``rewards``: resolved rewards (or names/refs, resolved here); ``params``: per-reward
    parameters, raw or already validated (defaults fill the rest). Raises RegistryError
    subclasses (ParamsError, MissingCompletionTokens, ...) for errors of the request itself.
    ``max_gt_boxes``: a ground truth with more boxes is not read (the sample's error says so);
    ``max_box_pairs``: predicted x ground-truth boxes summed over the batch (TooManyBoxPairs beyond);
    ``explain_budget``: bytes the details may take, as JSON (ExplainTooLarge beyond);
    ``repair_seconds``: json_repair time for the whole batch (a sample needing more: not scored).
    ``request_sizes``: where the batch is several requests' samples one after the other (the
    service coalesces concurrent requests), their sizes in order; the three budgets above then
    apply to each request on its own, so no request spends another's. Default: one request.
    """
    resolved = _resolve(rewards)
    checked_params = validate_params(params or {}, resolved)
    _check_completion_tokens(samples, resolved)

    values: dict[str, list[float | None]] = {r.name: [] for r in resolved}
    errors: list[str | None] = []
    reasons: list[str | None] = []
    details: list[dict[str, Any]] | None = [] if explain else None
    predicted_boxes: list[int | None] = []
    sample_failures: list[tuple[str, ...]] = []
    box_pairs_of: list[int] = []
    read_truth = _TruthCache(max_gt_boxes)
    starts = _request_starts(request_sizes, len(samples))
    # weighted_sum (cosine reuses it) matches its own reading of the boxes, one per version asked.
    ws_versions = {r.version for r in resolved if r.name in ("weighted_sum", "cosine")}

    for index, sample in enumerate(samples):
        if index in starts:  # a new request: its own budgets
            first, explained_bytes, box_pairs = index, 0, 0
            repair = repair_json if repair_seconds is None else RepairBudget(repair_seconds)
        completion = _field(sample, "completion")
        if not isinstance(completion, str):
            raise TypeError(f"samples[{index}].completion must be a string")
        parsed = ParsedCompletion(completion, repair)
        truth = read_truth(_field(sample, "solution"))
        pairs = _predicted_boxes(parsed, ws_versions) * truth.n if isinstance(truth, GroundTruth) else 0
        box_pairs_of.append(pairs)
        box_pairs += pairs
        if max_box_pairs is not None and box_pairs > max_box_pairs:
            raise TooManyBoxPairs(max_box_pairs, index - first)
        scored, error, reason, inp = _score_sample(parsed, truth, sample, resolved, checked_params)
        for r in resolved:
            values[r.name].append(scored.get(r.name))
        errors.append(error)
        reasons.append(reason)
        predicted_boxes.append(None if parsed.answer is None else len(parsed.answer_items))
        failures = parse_failures(parsed)
        sample_failures.append(failures)
        if details is not None:
            details.append(_details(parsed, failures, inp, resolved, error, reason))
            if explain_budget is not None:
                explained_bytes += _json_size(details[-1])
                if explained_bytes > explain_budget:
                    raise ExplainTooLarge(explain_budget, index + 1 - first, starts[first])

    counts = Counter(kind for kinds in sample_failures for kind in kinds)
    return BatchScores(
        values=values,
        versions={r.name: r.version for r in resolved},
        errors=errors,
        error_reasons=reasons,
        details=details,
        stats=BatchStats(predicted_boxes, sample_failures, dict(counts), box_pairs_of),
    )


def _request_starts(sizes: Sequence[int] | None, n: int) -> dict[int, int]:
    """{index of a request's first sample: that request's size}."""
    sizes = [n] if sizes is None else list(sizes)
    if sum(sizes) != n or any(size < 0 for size in sizes):
        raise ValueError(f"request_sizes {sizes} do not add up to the {n} samples")
    starts, at = {}, 0
    for size in sizes:
        if size:
            starts[at] = size
        at += size
    return starts


class _TruthCache:
    """parse_solution, once per distinct solution in a batch.

    A GRPO batch holds each prompt's ground truth once per generation (8 times with the research's
    recipe); a GroundTruth is immutable, so the samples that share a solution share its reading.
    A text is its own key; a structured list's key is its canonical text, which is all that
    parse_solution reads of it (and which is cheaper to write than the list is to read).
    """

    def __init__(self, max_boxes: int | None = None) -> None:
        self._read: dict[tuple[str, str], GroundTruth | SolutionError] = {}
        self._max_boxes = max_boxes

    def __call__(self, solution: Any) -> GroundTruth | SolutionError:
        if isinstance(solution, str):
            key = ("text", solution)
        elif isinstance(solution, list):
            try:
                key = ("list", canonical_text(solution))
            except SolutionError as exc:
                return exc
        else:
            return _read_or_error(solution)  # not a solution at all: parse_solution says why
        if key not in self._read:
            self._read[key] = _read_or_error(solution, self._max_boxes)
        return self._read[key]


def _read_or_error(solution: Any, max_boxes: int | None = None) -> GroundTruth | SolutionError:
    try:
        truth = parse_solution(solution)
    except SolutionError as exc:
        return exc
    if max_boxes is not None and truth.n > max_boxes:
        # Matching costs time in predictions x ground-truth boxes: the ground truth is bounded.
        return SolutionError(
            f"solution: {truth.n} boxes, more than the limit of {max_boxes} per ground truth (REWARD_API_MAX_GT_BOXES)"
        )
    return truth


def _predicted_boxes(parsed: ParsedCompletion, ws_versions: set[str]) -> int:
    """Boxes the rewards will match: the answer's list, and weighted_sum's own reading of it in each
    version asked (version 2 reads the twice-normalised text; a value that is not a list matches nothing)."""
    n = len(parsed.answer_items) if parsed.answer is not None else 0
    for version in ws_versions:
        n = max(n, len(parsed.ws_items if version == "1" else parsed.ws_items_v2))
    return n


def _json_size(value: Any) -> int:
    """Bytes of ``value`` as JSON (orjson when it can, else json; only sizes are compared)."""
    try:
        import orjson

        return len(orjson.dumps(value))
    except (ImportError, TypeError):
        import json

        return len(json.dumps(value, default=str))


def _score_sample(parsed, truth, sample, resolved, params):
    """(values by name, error, reason, RewardInput or None) of one sample."""
    if isinstance(truth, SolutionError):
        return {}, str(truth), INVALID_SOLUTION, None
    inp = RewardInput(parsed, truth, _field(sample, "completion_tokens"), params)
    scored: dict[str, float] = {}
    for r in resolved:
        try:
            scored[r.name] = float(r.compute(inp))
        except SolutionError as exc:  # a ground truth only one version cannot read (weighted_sum 2)
            return {}, str(exc), INVALID_SOLUTION, None
        except RepairBudgetSpent:  # only version 1 repairs with json_repair (version 2: repair.py, linear)
            return (
                {},
                (
                    f"{r.name}: this request's json_repair time is spent (REWARD_API_MAX_REPAIR_SECONDS); "
                    "not scored: send fewer malformed answers per request"
                ),
                REPAIR_BUDGET,
                inp,
            )
        except Exception as exc:  # a bug in one reward must not take the whole batch down
            return {}, f"{r.name} failed: {type(exc).__name__}: {exc}", REWARD_ERROR, inp
    return scored, None, None, inp


# ---------------------------------------------------------------- explain


def _details(
    parsed: ParsedCompletion, failures: tuple[str, ...], inp: RewardInput | None, resolved, error, reason
) -> dict[str, Any]:
    names = {r.name for r in resolved}
    version = {r.name: r.version for r in resolved}  # explain what was computed, in its version
    detection_version = next((version[n] for n in ("ap", "ap50", "od_length") if n in version), "2")
    ws_version = version.get("weighted_sum", version.get("cosine", "2"))
    out: dict[str, Any] = {"completion": _completion_details(parsed, failures)}
    if error is not None:
        out["error"] = {"message": error, "reason": reason}
    if inp is None:
        return out
    out["ground_truth"] = _truth_details(inp.truth)
    if reason in (REWARD_ERROR, REPAIR_BUDGET):
        return out  # the failing reward would only fail again
    if names & {"ap", "ap50", "od_length"}:
        result = detection.shared_result(inp, detection_version)
        out["detection"] = result.details()
        out["completion"]["items"] = _item_details(parsed.answer_predictions, result.item_status)
    if names & {"weighted_sum", "cosine"}:
        out["weighted_sum"] = weighted_sum.shared_result(inp, ws_version).details()
    if "repetition" in names:
        out["repetition"] = repetition.shared_result(inp, version["repetition"]).details()
    if "cosine" in names:
        out["cosine"] = {
            "acc": weighted_sum.shared_result(inp, version["cosine"]).value,
            "correct_threshold": inp.params_of("cosine").get("correct_threshold"),
            "completion_tokens": inp.completion_tokens,
            "max_length": inp.params_of("cosine").get("max_length"),
        }
    if "format" in names:
        out["format"] = {"matches": parsed.format_ok}
    return out


def _completion_details(parsed: ParsedCompletion, failures: tuple[str, ...]) -> dict[str, Any]:
    box_list = parsed.answer_box_list
    return {
        "answer_found": parsed.answer is not None,
        "box_list": box_list.failure or "ok",
        "n_items": len(box_list.items),
        "parse_failures": list(failures),
    }


def _item_details(predictions: tuple[Prediction, ...], statuses: tuple[str, ...]) -> list[dict[str, Any]]:
    items = []
    for index, (prediction, status) in enumerate(zip(predictions, statuses, strict=True)):
        entry: dict[str, Any] = {"index": index, "label": prediction.label, "status": status}
        if prediction.box is not None:
            entry["bbox_2d"] = [float(v) for v in prediction.box]
        elif prediction.is_object:
            entry["box_problem"] = prediction.box_problem
        items.append(entry)
    return items


def _truth_details(truth: GroundTruth) -> dict[str, Any]:
    return {
        "is_none": truth.is_none,
        "n": truth.n,
        "labels": list(truth.labels),
        "boxes": truth.boxes.tolist(),
    }
