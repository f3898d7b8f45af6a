"""The catalogue of rewards: names, aliases, versions, parameters, departures from the reference.

Each reward name maps to its versions and each version to one :class:`RewardSpec` (the function
that computes it, its parameters, its documented departures). A change to a reward's arithmetic is
a new version beside the old one, e.g. ``"weighted_sum": {"1": ..., "2": ...}``; a request that
pins ``{"name": "weighted_sum", "version": "1"}`` keeps getting version 1, and ``DEFAULT_VERSION``
says which version an unpinned name gets ("2" for every reward). Every version's departures from
the published reference, each with an example and both values, live in :mod:`.departures`.

Errors are exceptions whose message starts with the request field at fault
(``rewards[2]``, ``rewards[0].version``, ``params.weighted_sum.alpha``); the HTTP layer maps them to 422.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.contract import REWARD_ALIASES

from .boxes import is_finite_number
from .departures import Departure, departures_of
from .rewards import RewardInput, cosine, detection, repetition, weighted_sum
from .rewards import format as format_reward

__all__ = [
    "ALIASES",
    "DEFAULT_VERSION",
    "REWARDS",
    "Departure",
    "DuplicateReward",
    "ParamSpec",
    "ParamsError",
    "RegistryError",
    "ResolvedReward",
    "RewardSpec",
    "UnknownReward",
    "UnknownVersion",
    "canonical_name",
    "catalogue",
    "get_spec",
    "resolve_rewards",
    "validate_params",
]


# ---------------------------------------------------------------- errors


class RegistryError(ValueError):
    """A request names a reward, version or parameter wrongly; ``field`` is where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class UnknownReward(RegistryError):
    """No reward of that name or alias."""


class UnknownVersion(RegistryError):
    """The reward exists but not in the version asked for."""


class DuplicateReward(RegistryError):
    """The same reward asked for twice (aliases included)."""


class ParamsError(RegistryError):
    """A parameter that is unknown, not a finite number, or out of its range."""


# ---------------------------------------------------------------- specs


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: float
    description: str
    constraint: str  # human-readable, shown in the catalogue and in errors
    accepts: Callable[[float], bool]


@dataclass(frozen=True)
class RewardSpec:
    name: str
    version: str
    description: str
    compute: Callable[[RewardInput], float]
    params: tuple[ParamSpec, ...] = ()
    departures: tuple[Departure, ...] = ()
    needs_completion_tokens: bool = False
    uses_params_of: tuple[str, ...] = ()  # other rewards whose parameters this one reads
    check_params: Callable[[dict[str, float]], str | None] | None = None  # a rule across parameters

    def defaults(self) -> dict[str, float]:
        return {p.name: p.default for p in self.params}

    def describe(self) -> dict[str, Any]:
        """JSON-ready description of this version (GET /v1/rewards)."""
        return {
            "version": self.version,
            "description": self.description,
            "params": {
                p.name: {"default": p.default, "description": p.description, "constraint": p.constraint}
                for p in self.params
            },
            "uses_params_of": list(self.uses_params_of),
            "needs_completion_tokens": self.needs_completion_tokens,
            "departures": [d.describe() for d in self.departures],
        }


@dataclass(frozen=True)
class ResolvedReward:
    """A reward as a request asked for it: canonical name, the version served, the spec."""

    name: str
    version: str
    spec: RewardSpec
    requested_as: str

    @property
    def needs_completion_tokens(self) -> bool:
        return self.spec.needs_completion_tokens

    def compute(self, inp: RewardInput) -> float:
        return self.spec.compute(inp)


# ---------------------------------------------------------------- the catalogue: versions 1 and 2


def _non_negative(value: float) -> bool:
    return value >= 0


def _weights_positive(params: dict[str, float]) -> str | None:
    if params["alpha"] + params["beta"] + params["gamma"] > 0:
        return None
    return "alpha + beta + gamma must be positive"


_WEIGHTED_SUM_PARAMS = (
    ParamSpec("alpha", weighted_sum.DEFAULTS["alpha"], "weight of position (matched IoU)", ">= 0", _non_negative),
    ParamSpec(
        "beta", weighted_sum.DEFAULTS["beta"], "weight of label (matches with equal labels)", ">= 0", _non_negative
    ),
    ParamSpec(
        "gamma", weighted_sum.DEFAULTS["gamma"], "weight of completeness (misses, false alarms)", ">= 0", _non_negative
    ),
    ParamSpec(
        "iou_threshold",
        weighted_sum.DEFAULTS["iou_threshold"],
        "least IoU of a greedy match",
        "in (0, 1]",
        lambda v: 0 < v <= 1,
    ),
)
_COSINE_PARAMS = (
    ParamSpec(
        "max_length",
        cosine.DEFAULT_MAX_LENGTH,
        "L_max: completion_tokens are clamped to [0, L_max]",
        "> 0",
        lambda v: v > 0,
    ),
    ParamSpec(
        "correct_threshold",
        cosine.DEFAULT_CORRECT_THRESHOLD,
        "weighted_sum at or above this is correct",
        "in [0, 1]",
        lambda v: 0 <= v <= 1,
    ),
)

_DESCRIPTIONS = {
    "format": "1.0 if the completion is exactly <think>...</think>, white space, <answer>...</answer>; else 0.0",
    "ap": "single-image COCO mAP@[.5:.95] of the answer's boxes against the ground truth (pycocotools stats[0])",
    "ap50": "single-image COCO AP at IoU 0.5 of the answer's boxes against the ground truth (pycocotools stats[1])",
    "od_length": "ap x min(1, n_gt / n_pred): AP that stops paying for more boxes than the ground truth has",
    "weighted_sum": "greedy IoU matching of boxes: weighted position, label and completeness scores, in [0, 1]",
    "repetition": "penalty in [-1, 0] for repeated boxes in the box list, else for repeated word 6-grams",
}
_COSINE_V1 = (
    "length-aware correctness: weighted_sum >= threshold scores 1.0 down to 0.5, else 0.0 down to -0.5, "
    "along a cosine of completion_tokens"
)
_COSINE_V2 = (
    "length-aware correctness: weighted_sum >= threshold scores 1.0 down to 0.5, else -0.5 up to 0.0, "
    "along a cosine of completion_tokens (a wrong answer is penalised less the longer it explores)"
)


def _specs(version: str, functions: Mapping[str, Callable[[RewardInput], float]], cosine_description: str):
    departures = departures_of(version)
    plain = {
        name: RewardSpec(name, version, _DESCRIPTIONS[name], functions[name], departures=departures[name])
        for name in ("format", "ap", "ap50", "od_length", "repetition")
    }
    return (
        plain["format"],
        plain["ap"],
        plain["ap50"],
        plain["od_length"],
        RewardSpec(
            "weighted_sum",
            version,
            _DESCRIPTIONS["weighted_sum"],
            functions["weighted_sum"],
            params=_WEIGHTED_SUM_PARAMS,
            check_params=_weights_positive,
            departures=departures["weighted_sum"],
        ),
        plain["repetition"],
        RewardSpec(
            "cosine",
            version,
            cosine_description,
            functions["cosine"],
            params=_COSINE_PARAMS,
            needs_completion_tokens=True,
            uses_params_of=("weighted_sum",),
            departures=departures["cosine"],
        ),
    )


_V1 = _specs(
    "1",
    {
        "format": format_reward.score,
        "ap": detection.score_ap,
        "ap50": detection.score_ap50,
        "od_length": detection.score_od_length,
        "weighted_sum": weighted_sum.score,
        "repetition": repetition.score,
        "cosine": cosine.score,
    },
    _COSINE_V1,
)
_V2 = _specs(
    "2",
    {
        "format": format_reward.score,
        "ap": detection.score_ap_v2,
        "ap50": detection.score_ap50_v2,
        "od_length": detection.score_od_length_v2,
        "weighted_sum": weighted_sum.score_v2,
        "repetition": repetition.score_v2,
        "cosine": cosine.score_v2,
    },
    _COSINE_V2,
)

REWARDS: dict[str, dict[str, RewardSpec]] = {}
for _spec in _V1 + _V2:
    REWARDS.setdefault(_spec.name, {})[_spec.version] = _spec

# Version 2 (issue 10) follows the reference where version 1 misread it; "1" stays served, unchanged.
DEFAULT_VERSION: dict[str, str] = dict.fromkeys(REWARDS, "2")
ALIASES = REWARD_ALIASES  # fixed by the HTTP contract, which the client reads too


# ---------------------------------------------------------------- resolving


def canonical_name(name: Any) -> str | None:
    """The canonical name of a reward name or alias; None when it is neither."""
    if not isinstance(name, str):
        return None
    if name in REWARDS:
        return name
    return ALIASES.get(name)


def get_spec(name: str, version: str | None = None) -> RewardSpec:
    """The spec of a canonical name or alias, in ``version`` (default: the default version)."""
    canonical = canonical_name(name)
    if canonical is None:
        raise UnknownReward("name", _unknown_reward_message(name))
    version = DEFAULT_VERSION[canonical] if version is None else version
    try:
        return REWARDS[canonical][version]
    except KeyError:
        raise UnknownVersion("version", _unknown_version_message(canonical, version)) from None


def _unknown_reward_message(name: Any) -> str:
    aliases = ", ".join(f"{alias} (= {target})" for alias, target in ALIASES.items())
    return f"unknown reward {name!r}; known: {', '.join(REWARDS)}; aliases: {aliases}"


def _unknown_version_message(name: str, version: Any) -> str:
    served = ", ".join(repr(v) for v in REWARDS[name])
    return f"{name} has no version {version!r}; this server serves {served}"


def _name_and_version(ref: Any, field: str) -> tuple[Any, Any]:
    if isinstance(ref, str):
        return ref, None
    if isinstance(ref, Mapping):
        extra = sorted(set(ref) - {"name", "version"})
        if extra:
            raise UnknownReward(f"{field}.{extra[0]}", 'a reward reference holds only "name" and "version"')
        if "name" not in ref:
            raise UnknownReward(f"{field}.name", "missing")
        return ref["name"], ref.get("version")
    if hasattr(ref, "name"):  # e.g. the wire model's RewardRef
        return ref.name, getattr(ref, "version", None)
    raise UnknownReward(field, 'a reward is a name or {"name": ..., "version": ...}')


def resolve_rewards(refs: Sequence[Any]) -> list[ResolvedReward]:
    """Rewards as requested (names, aliases or ``{"name", "version"}``), in order.

    Raises UnknownReward, UnknownVersion or DuplicateReward naming ``rewards[i]``.
    """
    resolved: list[ResolvedReward] = []
    first_index: dict[str, int] = {}
    for index, ref in enumerate(refs):
        field = f"rewards[{index}]"
        name, version = _name_and_version(ref, field)
        canonical = canonical_name(name)
        if canonical is None:
            raise UnknownReward(field if isinstance(ref, str) else f"{field}.name", _unknown_reward_message(name))
        if version is None:
            version = DEFAULT_VERSION[canonical]
        if not isinstance(version, str) or version not in REWARDS[canonical]:
            raise UnknownVersion(f"{field}.version", _unknown_version_message(canonical, version))
        if canonical in first_index:
            raise DuplicateReward(
                field, f"{canonical} is already requested at rewards[{first_index[canonical]}] (aliases included)"
            )
        first_index[canonical] = index
        resolved.append(ResolvedReward(canonical, version, REWARDS[canonical][version], name))
    return resolved


# ---------------------------------------------------------------- parameters


def _check_reward_params(spec: RewardSpec, values: Any, field: str) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise ParamsError(field, "must be an object of parameter values")
    known = {p.name: p for p in spec.params}
    for key, value in values.items():
        if key not in known:
            takes = ", ".join(known) or "no parameters"
            raise ParamsError(f"{field}.{key}", f"unknown parameter; {spec.name} takes {takes}")
        if not is_finite_number(value):
            raise ParamsError(f"{field}.{key}", f"must be a finite number, got {value!r}")
        if not known[key].accepts(value):
            raise ParamsError(f"{field}.{key}", f"must be {known[key].constraint}, got {value!r}")
    merged = {**spec.defaults(), **values}
    problem = spec.check_params(merged) if spec.check_params else None
    if problem:
        raise ParamsError(field, problem)
    return merged


def validate_params(
    params: Mapping[str, Any] | None, rewards: Sequence[ResolvedReward] = ()
) -> dict[str, dict[str, float]]:
    """Parameters checked and completed with defaults, keyed by canonical reward name.

    Holds an entry for every requested reward that takes parameters, for the rewards whose
    parameters those read (cosine reads weighted_sum's), and for every reward given in ``params``.
    Keys may be aliases. Idempotent: its output validates to itself.
    """
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ParamsError("params", "must be an object keyed by reward name")
    specs: dict[str, RewardSpec] = {r.name: r.spec for r in rewards}
    for r in rewards:
        for other in r.spec.uses_params_of:
            specs.setdefault(other, get_spec(other))
    given: dict[str, dict[str, float]] = {}
    for key, values in params.items():
        name = canonical_name(key)
        if name is None:
            raise ParamsError(f"params.{key}", _unknown_reward_message(key))
        if name in given:
            raise ParamsError(f"params.{key}", f"parameters of {name} are given twice (aliases included)")
        spec = specs.setdefault(name, get_spec(name))
        given[name] = _check_reward_params(spec, values, f"params.{key}")
    return {name: given.get(name, spec.defaults()) for name, spec in specs.items() if spec.params}


# ---------------------------------------------------------------- catalogue


def catalogue() -> list[dict[str, Any]]:
    """JSON-ready description of every reward (GET /v1/rewards): the default version's fields at
    the top level, and every served version under ``versions``."""
    entries = []
    for name, versions in REWARDS.items():
        default = versions[DEFAULT_VERSION[name]]
        entries.append(
            {
                "name": name,
                "aliases": sorted(alias for alias, target in ALIASES.items() if target == name),
                "default_version": default.version,
                **{k: v for k, v in default.describe().items() if k != "version"},
                "versions": {version: spec.describe() for version, spec in versions.items()},
            }
        )
    return entries
