"""The service's settings: one frozen object, from the environment (``REWARD_API_*``) and the CLI.

Worker processes started by uvicorn (``--workers N``) rebuild the app from the environment, so
``__main__`` writes the CLI values back into ``REWARD_API_*`` before it starts them; every
process therefore sees exactly the same settings.

| variable                          | default                      | meaning                                    |
|-----------------------------------|------------------------------|--------------------------------------------|
| REWARD_API_HOST                   | 127.0.0.1                    | bind address                               |
| REWARD_API_PORT                   | 8000                         | bind port                                  |
| REWARD_API_WORKERS                | 1                            | worker processes                           |
| REWARD_API_TOKEN                  | (unset)                      | bearer token required on /v1/* when set    |
| REWARD_API_DEFAULT_REWARDS        | format,od_length,ap          | rewards used when a request names none,    |
|                                   |                              | and by /v1/openrlhf                        |
| REWARD_API_DEFAULT_WEIGHTS        | format=1,od_length=1,ap=0    | their weights in `total` (a reward not     |
|                                   | (for the default set)        | named: 1.0)                                |
| REWARD_API_MAX_BODY_BYTES         | 33554432 (32 MiB)            | larger request bodies get 413              |
| REWARD_API_MAX_SAMPLES            | 4096                         | more samples per request get 422           |
| REWARD_API_BODY_READ_SECONDS      | 10                           | a body not fully received by then: 408     |
| REWARD_API_MAX_QUEUED_BYTES       | 268435456 (256 MiB)          | per worker: body bytes received and held   |
|                                   |                              | at once (at least MAX_BODY_BYTES)          |
| REWARD_API_MAX_QUEUED_SAMPLES     | 65536                        | per worker: samples waiting or scoring     |
| REWARD_API_QUEUE_WAIT_SECONDS     | 30                           | how long a request waits for room in those |
|                                   |                              | two budgets; then 503 with Retry-After     |
| REWARD_API_RETRY_AFTER_SECONDS    | 1                            | the Retry-After of an overload answer      |
| REWARD_API_LOG_LEVEL              | info                         | uvicorn / service log level                |

The default reward set is VLM-R1's detection recipe (format + odLength, weight 1 each) with plain
``ap`` alongside at weight 0: it does not move the reward but is logged (OpenRLHF ``extra_logs``,
metrics), since AP is the number the research reports.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass

ENV_PREFIX = "REWARD_API_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


DEFAULT_REWARDS = ("format", "od_length", "ap")
DEFAULT_WEIGHTS = {"format": 1.0, "od_length": 1.0, "ap": 0.0}


class SettingsError(ValueError):
    """A setting that cannot work; the message names the variable and the problem."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    token: str | None = None
    default_rewards: tuple[str, ...] = DEFAULT_REWARDS
    # None: DEFAULT_WEIGHTS for the built-in reward set, else 1.0 for every reward.
    default_weights: Mapping[str, float] | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    max_samples: int = 4096
    body_read_seconds: int = 10
    max_queued_bytes: int = 256 * 1024 * 1024
    max_queued_samples: int = 65536
    queue_wait_seconds: int = 30
    retry_after_seconds: int = 1
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.default_weights is None:
            weights = dict(DEFAULT_WEIGHTS) if tuple(self.default_rewards) == DEFAULT_REWARDS else {}
            object.__setattr__(self, "default_weights", weights)  # frozen: set once, here
        _check_range("PORT", self.port, 0, 65535)
        _check_range("WORKERS", self.workers, 1, 512)
        _check_range("MAX_BODY_BYTES", self.max_body_bytes, 1024, 2**40)
        _check_range("MAX_SAMPLES", self.max_samples, 1, 10_000_000)
        _check_range("BODY_READ_SECONDS", self.body_read_seconds, 1, 3600)
        _check_range("MAX_QUEUED_BYTES", self.max_queued_bytes, 1024, 2**40)
        _check_range("MAX_QUEUED_SAMPLES", self.max_queued_samples, 1, 100_000_000)
        _check_range("QUEUE_WAIT_SECONDS", self.queue_wait_seconds, 0, 3600)
        _check_range("RETRY_AFTER_SECONDS", self.retry_after_seconds, 0, 3600)
        if self.max_queued_bytes < self.max_body_bytes:
            raise SettingsError(f"{ENV_PREFIX}MAX_QUEUED_BYTES ({self.max_queued_bytes}) must be at least "
                                f"{ENV_PREFIX}MAX_BODY_BYTES ({self.max_body_bytes}): one whole body must fit")
        if not self.host:
            raise SettingsError(f"{ENV_PREFIX}HOST must not be empty")
        if self.token is not None and (not self.token or any(c.isspace() for c in self.token)):
            raise SettingsError(f"{ENV_PREFIX}TOKEN must be non-empty and hold no white space")
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"{ENV_PREFIX}LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        if not self.default_rewards:
            raise SettingsError(f"{ENV_PREFIX}DEFAULT_REWARDS must name at least one reward")
        extra = sorted(set(self.default_weights) - set(self.default_rewards))
        if extra:
            raise SettingsError(
                f"{ENV_PREFIX}DEFAULT_WEIGHTS names rewards not in DEFAULT_REWARDS: {', '.join(extra)}"
            )
        # Reward names themselves are checked against the registry by create_app(), which owns it.

    @property
    def weights(self) -> dict[str, float]:
        """The weight of every default reward (1.0 where DEFAULT_WEIGHTS says nothing)."""
        return {name: float(self.default_weights.get(name, 1.0)) for name in self.default_rewards}

    def to_env(self) -> dict[str, str]:
        """The REWARD_API_* variables that rebuild these settings in another process."""
        env = {}
        for key, value in asdict(self).items():
            if value is None:
                continue
            if key == "default_rewards":
                value = ",".join(value)
            elif key == "default_weights":
                value = ",".join(f"{k}={v!r}" for k, v in value.items())
            env[ENV_PREFIX + key.upper()] = str(value)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Settings:
        environ = os.environ if environ is None else environ
        values = {}
        for key, parse in _PARSERS.items():
            raw = environ.get(ENV_PREFIX + key.upper())
            if raw is not None and raw.strip() != "":
                values[key] = parse(ENV_PREFIX + key.upper(), raw.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SettingsError(f"{ENV_PREFIX}{name} must be an integer in [{lo}, {hi}], got {value!r}")


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def _names(name: str, raw: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in raw.split(","))
    if any(not n for n in names):
        raise SettingsError(f"{name} must be a comma-separated list of reward names, got {raw!r}")
    if len(set(names)) != len(names):
        raise SettingsError(f"{name} names a reward twice: {raw!r}")
    return names


def _weights(name: str, raw: str) -> dict[str, float]:
    weights = {}
    for part in raw.split(","):
        key, sep, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not key.strip() or not math.isfinite(weight):
            raise SettingsError(f"{name} must look like 'format=1,od_length=0.5', got {part!r}")
        weights[key.strip()] = weight
    return weights


_PARSERS = {
    "host": lambda _n, raw: raw,
    "port": _int,
    "workers": _int,
    "token": lambda _n, raw: raw,
    "default_rewards": _names,
    "default_weights": _weights,
    "max_body_bytes": _int,
    "max_samples": _int,
    "body_read_seconds": _int,
    "max_queued_bytes": _int,
    "max_queued_samples": _int,
    "queue_wait_seconds": _int,
    "retry_after_seconds": _int,
    "log_level": lambda _n, raw: raw.lower(),
}


_HELP = {
    "host": "bind address (default 127.0.0.1)",
    "port": "bind port (default 8000)",
    "workers": "worker processes (default 1)",
    "token": "bearer token required on /v1/* (default: none)",
    "default_rewards": "comma list of rewards used when a request names none (default format,od_length,ap)",
    "default_weights": "their weights in total, e.g. format=1,od_length=1,ap=0",
    "max_body_bytes": "larger request bodies get 413 (default 33554432)",
    "max_samples": "more samples per request get 422 (default 4096)",
    "body_read_seconds": "seconds to receive a whole body, else 408 (default 10)",
    "max_queued_bytes": "per worker, request-body bytes held at once (default 268435456)",
    "max_queued_samples": "per worker, samples waiting or being scored (default 65536)",
    "queue_wait_seconds": "how long a request waits for room in the worker's budgets before 503 (default 30)",
    "retry_after_seconds": "Retry-After of an overload answer (default 1)",
    "log_level": f"one of {', '.join(LOG_LEVELS)} (default info)",
}


def parse_cli(argv: list[str] | None = None) -> Settings:
    """Settings from the environment, each overridden by its command-line flag.

    Every setting has both forms (``--max-samples`` and ``REWARD_API_MAX_SAMPLES``), and a flag's
    text goes through the same parser as the variable's, so both are checked the same way.
    """
    parser = argparse.ArgumentParser(
        prog="python -m services.reward_api",
        description="The reward service. Each flag may also be given as its REWARD_API_* variable; the flag wins.",
    )
    for key in _PARSERS:
        flag = "--" + key.replace("_", "-")
        parser.add_argument(flag, dest=key, metavar=key.upper(), help=f"{_HELP[key]}; env {ENV_PREFIX}{key.upper()}")
    args = vars(parser.parse_args(argv))
    try:
        overrides = {
            key: _PARSERS[key](f"--{key.replace('_', '-')}", raw.strip())
            for key, raw in args.items()
            if raw is not None
        }
        return Settings.from_env(**overrides)
    except SettingsError as exc:
        parser.exit(2, f"invalid settings: {exc}\n")
