"""The service's settings: one pydantic-settings model, the only place a setting is declared.

Each field gives its ``REWARD_API_<NAME>`` variable, its ``--<name>`` flag (the flag wins), its
validation and its help text; ``python -m services.reward_api --help`` and the README's settings
table (:func:`markdown_table`, checked by the tests) are generated from it.

Worker processes started by uvicorn (``--workers N``) rebuild the app from the environment, so
``__main__`` writes the values back into ``REWARD_API_*`` (:meth:`Settings.to_env`) before it
starts them; every process therefore sees exactly the same settings.

The default reward set is VLM-R1's detection recipe (format + odLength, weight 1 each) with plain
``ap`` alongside at weight 0: it does not move the reward but is logged (OpenRLHF ``extra_logs``,
metrics), since AP is the number the research reports.

The ``max_*`` settings are the resource budgets of one request (README, "Reliability").
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, CliApp, NoDecode, SettingsConfigDict

ENV_PREFIX = "REWARD_API_"
DEFAULT_REWARDS = ("format", "od_length", "ap")
DEFAULT_WEIGHTS = {"format": 1.0, "od_length": 1.0, "ap": 0.0}
LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]


class SettingsError(ValueError):
    """A setting that cannot work; the message names the variable or flag and the problem."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        cli_kebab_case=True,
        cli_prog_name="python -m services.reward_api",
        cli_exit_on_error=False,
        validate_default=True,
    )

    host: str = Field("127.0.0.1", min_length=1, description="bind address")
    port: int = Field(8000, ge=0, le=65535, description="bind port")
    workers: int = Field(1, ge=1, le=512, description="worker processes (uvicorn); metrics are summed over them")
    token: str | None = Field(
        None, min_length=1, pattern=r"^\S+$", description="bearer token required on /v1/* (unset: none)"
    )
    default_rewards: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_REWARDS,
        min_length=1,
        description="rewards of a request that names none, and of /v1/openrlhf (comma-separated)",
    )
    default_weights: Annotated[dict[str, float] | None, NoDecode] = Field(
        None,
        description="their weights in total, e.g. format=1,od_length=1,ap=0 (a reward not named: 1; "
        "unset: format=1,od_length=1,ap=0 for the default set)",
    )
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, le=2**40, description="larger request bodies get 413")
    max_samples: int = Field(4096, ge=1, le=10_000_000, description="more samples in one request get 422")
    max_gt_boxes: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="boxes in one ground truth; a sample with more is not scored (its error "
        "says why), an evaluation image with more gets 422",
    )
    max_box_pairs: int = Field(
        50_000_000,
        ge=1,
        le=10**12,
        description="predicted x ground-truth boxes of one request, summed over its samples "
        "(the matching work); more get 422",
    )
    max_categories: int = Field(
        2000, ge=1, le=1_000_000, description="categories of one /v1/evaluate request; more get 422"
    )
    max_repair_seconds: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="json_repair time of one request (repetition version 1 reads "
        "malformed JSON with it; version 2 repairs linearly, without it); "
        "samples needing more are not scored (their error says why)",
    )
    max_explain_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, le=2**34, description="size of explain details in one answer; more get 422"
    )
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, le=1024 * 1024, description="request line and headers; more get 431"
    )
    body_read_seconds: int = Field(
        10,
        ge=1,
        le=3600,
        description="seconds to receive a whole request body (time spent waiting for room in the byte "
        "budget not counted); a body not fully received by then gets 408",
    )
    max_queued_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        le=2**40,
        description="per worker, request-body bytes received and held at once (counted as "
        "chunks arrive; at least max_body_bytes)",
    )
    max_queued_samples: int = Field(
        65536, ge=1, le=100_000_000, description="per worker, samples waiting or being scored"
    )
    queue_wait_seconds: int = Field(
        30,
        ge=0,
        le=3600,
        description="how long a request waits, in arrival order, for room in the worker's "
        "two budgets; then 503 with Retry-After",
    )
    retry_after_seconds: int = Field(1, ge=0, le=3600, description="the Retry-After of an overload answer")
    scoring_processes: int | None = Field(
        None,
        ge=0,
        le=512,
        description="scoring processes shared by all the workers of the host: a batch of more than "
        "chunk_samples is scored by them in chunks, in parallel (unset: one per usable core; "
        "0: none, each worker scores its batches alone, on one core)",
    )
    chunk_samples: int = Field(
        256,
        ge=1,
        le=10_000_000,
        description="samples per chunk sent to a scoring process; a batch of at most this many "
        "is scored in the worker itself",
    )
    log_level: LogLevel = Field("info", description="uvicorn / service log level")

    @field_validator("default_rewards", mode="before")
    @classmethod
    def _reward_names(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        names = tuple(part.strip() for part in value.split(","))
        if any(not name for name in names):
            raise ValueError(f"must be a comma-separated list of reward names, got {value!r}")
        return names

    @field_validator("default_rewards")
    @classmethod
    def _no_duplicates(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(names)) != len(names):
            raise ValueError(f"names a reward twice: {','.join(names)}")
        return names

    @field_validator("default_weights", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        weights = {}
        for part in value.split(","):
            key, sep, number = part.partition("=")
            try:
                weight = float(number)
            except ValueError:
                weight = math.nan
            if not sep or not key.strip() or not math.isfinite(weight):
                raise ValueError(f"must look like 'format=1,od_length=0.5' (finite numbers), got {part!r}")
            weights[key.strip()] = weight
        return weights

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _weights_of_default_rewards(self) -> Settings:
        if self.default_weights is None:
            weights = dict(DEFAULT_WEIGHTS) if self.default_rewards == DEFAULT_REWARDS else {}
            object.__setattr__(self, "default_weights", weights)  # frozen: set once, here
        assert self.default_weights is not None
        extra = sorted(set(self.default_weights) - set(self.default_rewards))
        if extra:
            raise ValueError(f"{ENV_PREFIX}DEFAULT_WEIGHTS names rewards not in DEFAULT_REWARDS: {', '.join(extra)}")
        if not all(math.isfinite(w) for w in self.default_weights.values()):
            raise ValueError(f"{ENV_PREFIX}DEFAULT_WEIGHTS must be finite numbers")
        if self.max_queued_bytes < self.max_body_bytes:
            raise ValueError(
                f"{ENV_PREFIX}MAX_QUEUED_BYTES ({self.max_queued_bytes}) must be at least "
                f"{ENV_PREFIX}MAX_BODY_BYTES ({self.max_body_bytes}): one whole body must fit"
            )
        # Reward names themselves are checked against the registry by create_app(), which owns it.
        return self

    @property
    def weights(self) -> dict[str, float]:
        """The weight of every default reward (1.0 where DEFAULT_WEIGHTS says nothing)."""
        given = self.default_weights or {}
        return {name: float(given.get(name, 1.0)) for name in self.default_rewards}

    def to_env(self) -> dict[str, str]:
        """The REWARD_API_* variables that rebuild these settings in another process."""
        env = {}
        for key, value in self.model_dump().items():
            if value is None:
                continue
            if key == "default_rewards":
                value = ",".join(value)
            elif key == "default_weights":
                value = ",".join(f"{k}={v!r}" for k, v in value.items())
            env[ENV_PREFIX + key.upper()] = str(value)
        return env

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """From ``REWARD_API_*`` (keywords override); SettingsError names what is wrong."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    """'REWARD_API_PORT (--port): Input should be less than or equal to 65535; ...'."""
    parts = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        where = f"{ENV_PREFIX}{field.upper()} (--{field.replace('_', '-')}): " if field else ""
        message = error["msg"].removeprefix("Value error, ")
        given = error.get("input")
        shown = field and "got " not in message and not isinstance(given, dict)
        parts.append(f"{where}{message}" + (f", got {given!r}" if shown else ""))
    return "; ".join(parts)


def parse_cli(argv: list[str] | None = None) -> Settings:
    """Settings from the environment, each overridden by its command-line flag (``--max-samples``
    beats ``REWARD_API_MAX_SAMPLES``); exits with status 2 and the reason when one is wrong."""
    import sys

    try:
        return CliApp.run(Settings, cli_args=sys.argv[1:] if argv is None else argv)
    except ValidationError as exc:
        print(f"invalid settings: {_describe(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as exc:  # pydantic-settings' own CLI errors (an unknown flag, a missing value)
        if type(exc).__name__ != "SettingsError":
            raise
        print(f"invalid settings: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def markdown_table() -> str:
    """The README's settings table, from the model: flag, variable, default, meaning."""
    lines = ["| flag | variable | default | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, tuple):
            default = ",".join(default)
        elif default is None:
            default = "unset"
        lines.append(
            f"| `--{name.replace('_', '-')}` | `{ENV_PREFIX}{name.upper()}` | `{default}` | {field.description} |"
        )
    return "\n".join(lines)
