"""Clients of the reward service: `RewardClient` (sync) and `AsyncRewardClient` (asyncio), on httpx.

Both split a large batch into chunks of at most ``max_batch_size`` samples, spread the chunks over
the base URLs round-robin (concurrently for the async client), fail over to the next URL when one
is down, retry what is transient and merge the chunks' answers back into the caller's order.

The retry policy lives in one place, as pure objects with no I/O: `BackoffPolicy` (how long to
wait), `UrlPool` (which URLs are cooling down, shared by every call of one client) and
`AttemptPlan` (one logical request's walk over URLs and retries). The two clients only drive a
plan: send, classify the answer with `read_answer`, report back, sleep where the plan says.

What is retried: connection errors, timeouts, dropped connections, 429, 5xx, and a 2xx answer that
is not what the contract promises (unreadable JSON, lists not aligned with the samples sent): a
server fault. What is not: any other 4xx, raised at once as `RewardRequestError` with the server's
message. After the last attempt, `RewardServiceError` says which URLs were tried, how often, and
the last status or exception. The client never invents a reward: there is no default value, no 0
for a failure; a sample the server could not score keeps its ``None``.

Time is bounded twice: ``timeout`` is the most one attempt may take from connecting to the last
byte of the answer (a server that trickles its answer is cut off there, not after each slow read),
and ``deadline`` the most one call may take, retries, waits and every chunk included. A
Retry-After is honoured up to ``max_retry_after`` seconds, and never past the deadline: a wait
that cannot end in time is an error at once, not a sleep.

An answer is only returned once it is what the contract promises: rewards and totals finite JSON
numbers (no strings, booleans, NaN or Infinity), one per sample, every requested reward present,
and a pinned version answered by that version. Anything else is a server fault (retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from shared.contract import (
    API_PREFIX,
    REWARD_ALIASES,
    EvaluateResponse,
    RewardRef,
    Sample,
    ScoreRequest,
    ScoreResponse,
)

T = TypeVar("T")

SCORE_PATH = f"{API_PREFIX}/score"
REWARDS_PATH = f"{API_PREFIX}/rewards"
EVALUATE_PATH = f"{API_PREFIX}/evaluate"
READY_PATH = "/readyz"

RewardsArg = Sequence[str | RewardRef | Mapping[str, Any]] | None


# --------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class AttemptRecord:
    """One failed attempt, as reported in `RewardServiceError`."""

    url: str
    status: int | None  # None: no HTTP answer (connection error, timeout, dropped connection)
    reason: str

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"


class RewardServiceError(Exception):
    """The service could not give an answer: after the last retry, or a fault that cannot be retried.

    ``attempts`` lists every failed attempt (URL, status, reason), oldest first.
    """

    def __init__(self, message: str, attempts: Sequence[AttemptRecord] = ()) -> None:
        super().__init__(message)
        self.attempts = list(attempts)

    @property
    def last_status(self) -> int | None:
        return self.attempts[-1].status if self.attempts else None


class RewardRequestError(RewardServiceError):
    """The request itself is wrong (a 4xx other than 429, or a sample that fails validation here).

    Never retried: sending it again cannot help. ``detail`` is the server's message.
    """

    def __init__(self, message: str, *, status: int | None, detail: str, url: str | None = None) -> None:
        attempts = [AttemptRecord(url, status, detail)] if url else []
        super().__init__(message, attempts)
        self.status = status
        self.detail = detail
        self.url = url


# --------------------------------------------------------------------------------------------
# The retry policy (pure: no I/O, no sleeping; the clock and the random source are injected)


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential backoff with full jitter: before retry r, wait uniform(0, min(cap, base * 2**(r-1)))."""

    max_retries: int = 5
    base: float = 0.25
    cap: float = 10.0
    rng: Callable[[], float] = field(default=random.random, compare=False)
    max_retry_after: float = 30.0  # a server's Retry-After is honoured up to this many seconds

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base < 0 or self.cap < 0 or not 0 <= self.max_retry_after < math.inf:
            raise ValueError("max_retries, backoff_base, backoff_max and max_retry_after must be finite and >= 0")

    def retry_after(self, seconds: float | None) -> float | None:
        """The server's Retry-After, capped: ``Retry-After: 3600`` must not park a trainer for an hour."""
        return None if seconds is None else min(seconds, self.max_retry_after)

    def ceiling(self, retry: int) -> float:
        """The largest wait before retry number ``retry`` (1-based)."""
        return min(self.cap, self.base * 2 ** (retry - 1))

    def jitter(self, retry: int) -> float:
        # Full jitter: clients that failed together do not come back together.
        return self.rng() * self.ceiling(retry)


class UrlPool:
    """The base URLs and what this client has learnt about each; shared by every call of one client,
    so a URL found down is skipped by the next chunks too instead of costing each a failed attempt.

    Two kinds of "not now": a URL that asked for time (Retry-After) is *blocked* until then: it is
    not asked earlier, even if it is the only one. A URL that just failed otherwise is *suspect* for
    a while: another URL is preferred, but if all are suspect it is retried after the plan's backoff.
    """

    def __init__(self, urls: Sequence[str], clock: Callable[[], float] = time.monotonic) -> None:
        if not urls:
            raise ValueError("at least one base URL is needed")
        self.urls = list(urls)
        self._clock = clock
        self._blocked_until = [0.0] * len(urls)
        self._suspect_until = [0.0] * len(urls)
        self._failures = [0] * len(urls)
        self._next_start = 0
        self._lock = threading.Lock()  # the sync client may be shared by threads

    def next_start(self) -> int:
        """Round-robin start index: consecutive calls and chunks begin on different URLs."""
        with self._lock:
            start = self._next_start
            self._next_start = (start + 1) % len(self.urls)
            return start

    def pick(self, preferred: int) -> tuple[int, float]:
        """(index, wait): from ``preferred`` on, the first healthy URL, else the first not blocked,
        else the one unblocked soonest and how long until then."""
        now = self._clock()
        order = [(preferred + k) % len(self.urls) for k in range(len(self.urls))]
        unblocked = [i for i in order if self._blocked_until[i] <= now]
        healthy = [i for i in unblocked if self._suspect_until[i] <= now]
        if healthy or unblocked:
            return (healthy or unblocked)[0], 0.0
        soonest = min(order, key=lambda i: self._blocked_until[i])
        return soonest, self._blocked_until[soonest] - now

    def failed(self, index: int, retry_after: float | None, suspect_for: float) -> None:
        with self._lock:
            now = self._clock()
            self._failures[index] += 1
            self._suspect_until[index] = max(self._suspect_until[index], now + suspect_for)
            if retry_after is not None:
                self._blocked_until[index] = max(self._blocked_until[index], now + retry_after)

    def consecutive_failures(self, index: int) -> int:
        return self._failures[index]

    def succeeded(self, index: int) -> None:
        with self._lock:
            self._failures[index] = 0
            self._suspect_until[index] = 0.0


@dataclass(frozen=True)
class Attempt:
    number: int  # 1 = first try
    url: str
    delay: float  # seconds to wait before sending
    timeout: float = math.inf  # the most this attempt may take once sent, connect to last byte


@dataclass(frozen=True)
class RetryEvent:
    """Given to the ``on_retry`` hook before each retry (the trainer counts them as a metric)."""

    method: str
    path: str
    attempt: int  # the number of the attempt about to be made (2 = first retry)
    url: str  # where it goes
    delay: float  # seconds it waits first
    failed: AttemptRecord  # what went wrong with the previous attempt


class TransientFailure(Exception):
    """An answer (or no answer) worth another try."""

    def __init__(self, status: int | None, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.retry_after = status, reason, retry_after


class AttemptPlan:
    """One logical request's walk over the URLs: where each attempt goes, how long it waits first,
    and when to give up. Pure; the client drives it:

        attempt = plan.next_attempt()   # raises RewardServiceError when the budget is spent
        ... wait attempt.delay, send to attempt.url ...
        plan.succeeded() | plan.failed(TransientFailure(...))
    """

    def __init__(
        self,
        method: str,
        path: str,
        pool: UrlPool,
        policy: BackoffPolicy,
        start: int,
        on_retry: Callable[[RetryEvent], None] | None = None,
        *,
        timeout: float = math.inf,
        deadline: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``timeout``: the most one attempt may take; ``deadline``: the ``clock`` time by which
        the whole logical request must be answered or given up."""
        self.method, self.path = method, path
        self._pool, self._policy, self._on_retry = pool, policy, on_retry
        self._preferred = start
        self._current: int | None = None
        self._timeout, self._deadline, self._clock = timeout, deadline, clock
        self.failures: list[AttemptRecord] = []

    def next_attempt(self) -> Attempt:
        number = len(self.failures) + 1
        if number > self._policy.max_retries + 1:
            raise self._exhausted()
        index, wait = self._pool.pick(self._preferred)
        self._current = index
        delay = wait if number == 1 else max(wait, self._policy.jitter(number - 1))
        left = self._deadline - self._clock() - delay
        if left <= 0:
            raise self._exhausted(
                f"the call's deadline ends before attempt {number} could start (it would first wait {delay:.3g} s)"
            )
        attempt = Attempt(number, self._pool.urls[index], delay, min(self._timeout, left))
        if number > 1 and self._on_retry is not None:
            self._on_retry(RetryEvent(self.method, self.path, number, attempt.url, delay, self.failures[-1]))
        return attempt

    def failed(self, failure: TransientFailure) -> None:
        index = self._require_current()
        self.failures.append(AttemptRecord(self._pool.urls[index], failure.status, failure.reason))
        # Retry-After is the server's own word on when to come back. Besides, a URL that failed is
        # avoided for an exponentially growing while (keyed on its consecutive failures), so a dead
        # replica stops costing every chunk a connection attempt.
        suspect_for = self._policy.ceiling(self._pool.consecutive_failures(index) + 1)
        self._pool.failed(index, self._policy.retry_after(failure.retry_after), suspect_for)
        self._preferred = (index + 1) % len(self._pool.urls)  # fail over: next URL first

    def succeeded(self) -> None:
        self._pool.succeeded(self._require_current())

    def _require_current(self) -> int:
        if self._current is None:
            raise RuntimeError("next_attempt() must be called first")
        return self._current

    def _exhausted(self, why: str | None = None) -> RewardServiceError:
        if not self.failures:
            return RewardServiceError(f"{self.method} {self.path} was not sent: {why}")
        urls = list(dict.fromkeys(record.url for record in self.failures))
        last = self.failures[-1]
        lines = [
            f"{self.method} {self.path} failed after {len(self.failures)} attempts "
            f"(max_retries={self._policy.max_retries}) on {', '.join(urls)}; "
            f"last: {last.url}: {last.reason}" + (f"; {why}" if why else ""),
            "attempts:",
            *(f"  {n}. {record}" for n, record in enumerate(self.failures, 1)),
        ]
        return RewardServiceError("\n".join(lines), self.failures)


# --------------------------------------------------------------------------------------------
# Reading answers (pure)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def error_detail(response: httpx.Response) -> str:
    """The server's message from an error body (``{"detail": str | [validation errors]}``), else the raw text."""
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(detail, list):  # FastAPI validation errors: name the field of each
        return "; ".join(_format_validation_item(item) for item in detail)
    return str(detail)


def _format_validation_item(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    location = ".".join(str(part) for part in item.get("loc", ()))
    message = item.get("msg", item)
    return f"{location}: {message}" if location else str(message)


def read_answer(response: httpx.Response, read: Callable[[Any], T]) -> T:
    """Classify one HTTP answer: the value ``read`` makes of a good body, or raise.

    Raises TransientFailure (retry it), RewardRequestError (the request is wrong) or
    RewardServiceError (an answer no retry will change, e.g. a redirect to somewhere else).
    """
    status = response.status_code
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise TransientFailure(status, f"HTTP {status}: {error_detail(response)}", retry_after)
    if 400 <= status < 500:
        detail = error_detail(response)
        url = str(response.request.url)
        raise RewardRequestError(
            f"{response.request.method} {url} was refused with HTTP {status}: {detail}",
            status=status,
            detail=detail,
            url=url,
        )
    if not 200 <= status < 300:
        record = AttemptRecord(str(response.request.url), status, f"unexpected HTTP {status}")
        raise RewardServiceError(f"{record}: not a reward service answer", [record])
    try:
        return read(response.json())
    except (ValueError, TypeError) as exc:  # bad JSON, wrong shape, lists not aligned: server fault
        raise TransientFailure(status, f"HTTP {status} with an invalid body: {_short(exc)}") from exc


def transport_failure(exc: httpx.RequestError) -> TransientFailure:
    return TransientFailure(None, f"{type(exc).__name__}: {exc or 'no detail'}")


def _short(exc: Exception, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def _read_object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise TypeError(f"expected a JSON object, got {type(body).__name__}")
    return body


# --------------------------------------------------------------------------------------------
# Batches: building requests, splitting, merging (pure)


def build_requests(
    samples: Sequence[Sample | Mapping[str, Any]],
    rewards: RewardsArg,
    weights: Mapping[str, float] | None,
    params: Mapping[str, Mapping[str, float]] | None,
    explain: bool,
    max_batch_size: int,
) -> list[ScoreRequest]:
    """Validate here (a wrong sample is the caller's error, named by its index) and split into chunks."""
    try:
        checked = [s if isinstance(s, Sample) else Sample.model_validate(s) for s in samples]
        # model_validate: the caller's mappings become the model's dicts, checked like any input.
        template = ScoreRequest.model_validate(
            {"samples": [], "rewards": _reward_refs(rewards), "weights": weights, "params": params, "explain": explain}
        )
    except ValidationError as exc:
        raise RewardRequestError(f"invalid score request: {exc}", status=None, detail=str(exc)) from exc
    if not checked:  # an empty batch is valid: let the server answer it
        return [template]
    return [
        template.model_copy(update={"samples": checked[i : i + max_batch_size]})
        for i in range(0, len(checked), max_batch_size)
    ]


def _reward_refs(rewards: RewardsArg) -> list[str | RewardRef] | None:
    if rewards is None:
        return None
    if isinstance(rewards, str):  # "ap" would otherwise become ["a", "p"]
        return [rewards]
    return [r if isinstance(r, (str, RewardRef)) else RewardRef.model_validate(r) for r in rewards]


def request_body(request: ScoreRequest) -> dict[str, Any]:
    body = request.model_dump(mode="json")
    # Optional top-level fields left out rather than sent as null: the server's defaults apply.
    return {key: value for key, value in body.items() if value is not None}


def requested_versions(rewards: Sequence[str | RewardRef] | None) -> dict[str, str | None] | None:
    """{canonical name: pinned version or None} of the rewards asked for; None: the server's defaults.

    >>> requested_versions(["odLength", RewardRef(name="ap", version="1")])
    {'od_length': None, 'ap': '1'}
    """
    if rewards is None:
        return None
    wanted: dict[str, str | None] = {}
    for ref in rewards:
        name, version = (ref, None) if isinstance(ref, str) else (ref.name, ref.version)
        wanted[REWARD_ALIASES.get(name, name)] = version
    return wanted


def check_rewards_answered(response: ScoreResponse, wanted: dict[str, str | None] | None) -> None:
    """Raise ValueError unless every requested reward is in the answer, versioned, and a pinned one
    at its pinned version (a server that answers another version would silently change the values)."""
    unversioned = sorted(set(response.rewards) - set(response.versions))
    if unversioned:
        raise ValueError(f"rewards {unversioned} are answered without a version")
    if wanted is None:
        return
    missing = sorted(set(wanted) - set(response.rewards))
    if missing:
        raise ValueError(f"the answer lacks requested rewards {missing} (answered: {sorted(response.rewards)})")
    wrong = {
        name: (pin, response.versions[name])
        for name, pin in wanted.items()
        if pin is not None and response.versions[name] != pin
    }
    if wrong:
        raise ValueError(
            "answered at other versions than pinned: "
            + ", ".join(f"{n} pinned {p!r}, answered {a!r}" for n, (p, a) in wrong.items())
        )


def response_reader(n_samples: int, rewards: Sequence[str | RewardRef] | None = None) -> Callable[[Any], ScoreResponse]:
    """The reader of one chunk's answer: strictly the contract's ScoreResponse (finite JSON numbers,
    no strings or booleans for numbers), aligned with the ``n_samples`` sent, answering ``rewards``."""
    wanted = requested_versions(rewards)

    def read(body: Any) -> ScoreResponse:
        response = ScoreResponse.model_validate(body, strict=True)
        response.check_aligned(n_samples)  # a short list is a server fault: retried by the caller
        check_rewards_answered(response, wanted)
        return response

    return read


def read_evaluation(body: Any) -> dict:
    """A /v1/evaluate answer, strictly the contract's EvaluateResponse, as a dict."""
    return _strict_finite(EvaluateResponse, body).model_dump()


def _strict_finite(model: type[BaseModel], body: Any) -> Any:
    value = model.model_validate(body, strict=True)
    bad = _non_finite(value.model_dump())
    if bad:
        raise ValueError(f"non-finite number at {bad}")
    return value


def _non_finite(value: Any, path: str = "body") -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{path}[{key!r}]")
        if found:
            return found
    return None


def merge_responses(parts: Sequence[ScoreResponse]) -> ScoreResponse:
    """Concatenate chunk answers in chunk order. Chunks scored by different reward sets or versions
    (a rolling deploy behind the URLs) cannot be merged into one consistent batch: that is an error."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    for part in parts[1:]:
        if list(part.rewards) != list(first.rewards) or part.versions != first.versions:
            raise RewardServiceError(
                "chunks of one batch were scored differently: "
                f"{dict(first.versions)} vs {dict(part.versions)} (rewards {list(first.rewards)} vs "
                f"{list(part.rewards)}); are the base URLs running different service versions?"
            )
    details = [part.details for part in parts if part.details is not None]
    return ScoreResponse(
        rewards={name: [v for part in parts for v in part.rewards[name]] for name in first.rewards},
        total=[v for part in parts for v in part.total],
        versions=dict(first.versions),
        errors=[e for part in parts for e in part.errors],
        ids=[i for part in parts for i in part.ids],
        details=[d for part_details in details for d in part_details] if len(details) == len(parts) else None,
    )


# --------------------------------------------------------------------------------------------
# The clients


class ClientSettings(BaseModel):
    """The clients' settings from the environment, read here and nowhere else (the CLIs, the
    evaluators and the framework adapters all start from it):

    ==========================  =========================================  ====================
    variable                    meaning                                    default
    ==========================  =========================================  ====================
    REWARD_API_URL              base URL(s) of the service, comma-separated  http://127.0.0.1:8000
    REWARD_API_TOKEN            bearer token                               (none)
    REWARD_API_TIMEOUT          s one attempt may take, connect to answer  60
    REWARD_API_DEADLINE         s one call may take, retries included      (timeout+backoff_max)
                                                                           x (retries+1)
    REWARD_API_MAX_RETRIES      retries of a transient failure             5
    ==========================  =========================================  ====================

    >>> ClientSettings.from_env({"REWARD_API_URL": "http://a:1, http://b:2", "REWARD_API_TIMEOUT": "5"})
    ClientSettings(urls=['http://a:1', 'http://b:2'], token=None, timeout=5.0, deadline=None, max_retries=5)
    """

    urls: list[str] = ["http://127.0.0.1:8000"]
    token: str | None = None
    timeout: float = 60.0
    deadline: float | None = None
    max_retries: int = 5

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if env.get("REWARD_API_URL", "").strip():
            values["urls"] = [u.strip() for u in env["REWARD_API_URL"].split(",") if u.strip()]
        for key in ("token", "timeout", "deadline", "max_retries"):
            raw = env.get(f"REWARD_API_{key.upper()}", "").strip()
            if raw:
                values[key] = raw
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ValueError(f"invalid REWARD_API_* client setting: {validation_summary(exc)}") from None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for RewardClient / AsyncRewardClient (the URLs are the first argument)."""
        return {
            "token": self.token,
            "timeout": self.timeout,
            "deadline": self.deadline,
            "max_retries": self.max_retries,
        }


def validation_summary(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())


class _ClientBase:
    """What the sync and async clients share: settings, the URL pool, plans, request building."""

    def __init__(
        self,
        base_urls: str | Sequence[str],
        *,
        token: str | None = None,
        timeout: float = 60.0,
        deadline: float | None = None,
        max_batch_size: int = 1024,
        max_retries: int = 5,
        backoff_base: float = 0.25,
        backoff_max: float = 10.0,
        max_retry_after: float = 30.0,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
    ) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if not 0 < timeout < math.inf or (deadline is not None and not 0 < deadline < math.inf):
            raise ValueError("timeout and deadline must be finite and > 0")
        self.base_urls = [url.rstrip("/") for url in urls]
        self.max_batch_size = max_batch_size
        self.timeout = timeout
        # Default: every attempt may use its whole timeout and every wait its longest backoff.
        self.deadline = deadline if deadline is not None else (max_retries + 1) * (timeout + backoff_max)
        self.policy = BackoffPolicy(max_retries, backoff_base, backoff_max, max_retry_after=max_retry_after)
        self.pool = UrlPool(self.base_urls)
        self.on_retry = on_retry
        self.retry_count = 0  # retries made by this client so far (all calls)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = self._open(transport)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **settings: Any):
        """A client configured by ``REWARD_API_*`` (see `ClientSettings`); keywords override."""
        config = ClientSettings.from_env(environ)
        return cls(config.urls, **{**config.client_kwargs(), **settings})

    def _open(self, transport):
        """The httpx client (sync or async) the subclass sends with."""
        raise NotImplementedError

    def _call_deadline(self) -> float:
        return time.monotonic() + self.deadline

    def _plan(self, method: str, path: str, deadline: float) -> AttemptPlan:
        return AttemptPlan(
            method,
            path,
            self.pool,
            self.policy,
            self.pool.next_start(),
            self._count_retry,
            timeout=self.timeout,
            deadline=deadline,
        )

    def _count_retry(self, event: RetryEvent) -> None:
        self.retry_count += 1
        if self.on_retry is not None:
            self.on_retry(event)

    def _score_requests(self, samples, rewards, weights, params, explain) -> list[ScoreRequest]:
        return build_requests(samples, rewards, weights, params, explain, self.max_batch_size)


def _too_slow(timeout: float) -> TransientFailure:
    return TransientFailure(None, f"no complete answer within the attempt's {timeout:.3g} s")


class RewardClient(_ClientBase):
    """Synchronous client. Chunks of a large batch go out one after the other, each starting on the
    next base URL. Use as a context manager, or call close().

    Settings (all keywords): ``token``, ``timeout`` (s one attempt may take, connect to last byte,
    60), ``deadline`` (s one call may take, retries and chunks included; default
    ``(max_retries + 1) * (timeout + backoff_max)``), ``max_batch_size`` (1024), ``max_retries``
    (5), ``backoff_base`` (0.25 s), ``backoff_max`` (10 s), ``max_retry_after`` (30 s),
    ``transport`` (an ``httpx.BaseTransport``), ``on_retry`` (called with each `RetryEvent`).

    >>> with RewardClient(url) as client:
    ...     answer = client.score([{"completion": completion, "solution": solution}], rewards=["format", "ap"])
    >>> answer.rewards["format"], [round(v, 9) for v in answer.rewards["ap"]], answer.versions
    ([1.0], [1.0], {'format': '2', 'ap': '2'})
    """

    def _open(self, transport: httpx.BaseTransport | None) -> httpx.Client:
        return httpx.Client(headers=self._headers, timeout=self.timeout, transport=transport)

    def score(
        self,
        samples: Sequence[Sample | Mapping[str, Any]],
        rewards: RewardsArg = None,
        weights: Mapping[str, float] | None = None,
        params: Mapping[str, Mapping[str, float]] | None = None,
        explain: bool = False,
    ) -> ScoreResponse:
        """Score ``samples``; every list of the answer is aligned with them, in their order.

        >>> with RewardClient(url) as client:
        ...     answer = client.score([{"completion": "no answer", "solution": solution, "id": 7}],
        ...                           rewards=["format", {"name": "od_length", "version": "1"}])
        >>> answer.rewards, answer.ids
        ({'format': [0.0], 'od_length': [0.0]}, [7])
        """
        deadline = self._call_deadline()
        chunks = self._score_requests(samples, rewards, weights, params, explain)
        return merge_responses([self._score_chunk(chunk, deadline) for chunk in chunks])

    def rewards_catalogue(self) -> dict:
        """GET /v1/rewards: the rewards the server computes, their versions, parameters, defaults.

        >>> with RewardClient(url) as client:
        ...     catalogue = client.rewards_catalogue()
        >>> catalogue["defaults"]["rewards"]
        ['format', 'od_length', 'ap']
        """
        return self._call("GET", REWARDS_PATH, None, _read_object, self._call_deadline())

    def evaluate(self, payload: Mapping[str, Any]) -> dict:
        """POST /v1/evaluate with the same retries and failover; the payload is sent as is, unsplit.

        >>> with RewardClient(url) as client:
        ...     metrics = client.evaluate({"images": [{"completion": completion, "solution": solution}]})
        >>> round(metrics["ap"], 9), metrics["precision"], metrics["recall"]
        (1.0, 1.0, 1.0)
        """
        return self._call("POST", EVALUATE_PATH, dict(payload), read_evaluation, self._call_deadline())

    def health(self) -> dict[str, bool]:
        """Readiness of each base URL (GET /readyz answered 2xx). A probe: no retries.

        >>> with RewardClient([url, "http://127.0.0.1:9"], timeout=2) as client:
        ...     list(client.health().values())
        [True, False]
        """
        return {url: self._probe(url) for url in self.base_urls}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _score_chunk(self, chunk: ScoreRequest, deadline: float) -> ScoreResponse:
        read = response_reader(len(chunk.samples), chunk.rewards)
        return self._call("POST", SCORE_PATH, request_body(chunk), read, deadline)

    def _call(self, method: str, path: str, body: Any, read: Callable[[Any], T], deadline: float) -> T:
        plan = self._plan(method, path, deadline)
        while True:
            attempt = plan.next_attempt()
            if attempt.delay > 0:
                time.sleep(attempt.delay)
            try:
                value = read_answer(self._send(method, attempt.url + path, body, attempt.timeout), read)
            except httpx.RequestError as exc:
                plan.failed(transport_failure(exc))
            except TransientFailure as failure:
                plan.failed(failure)
            else:
                plan.succeeded()
                return value

    def _send(self, method: str, url: str, body: Any, timeout: float) -> httpx.Response:
        """One attempt, answered in full within ``timeout`` seconds or given up. httpx's own
        timeouts are per operation (a server trickling a byte a second never trips them), so the
        socket is shut at the attempt's end, which ends a read blocked on a trickle."""
        started = time.monotonic()
        request = self._http.build_request(method, url, json=body, timeout=timeout)
        response = self._http.send(request, stream=True)
        left = timeout - (time.monotonic() - started)
        cutoff = threading.Timer(max(left, 0.0), _shut_socket, (response,))
        cutoff.daemon = True
        cutoff.start()
        try:
            raw = b"".join(response.iter_raw())
        except httpx.TransportError:
            if time.monotonic() - started >= timeout:
                raise _too_slow(timeout) from None
            raise
        finally:
            cutoff.cancel()
            response.close()
        if time.monotonic() - started > timeout:
            raise _too_slow(timeout)
        # The raw bytes with the original headers: httpx decodes any content-encoding once, here.
        return httpx.Response(response.status_code, headers=response.headers, content=raw, request=request)

    def _probe(self, url: str) -> bool:
        try:
            return self._http.get(url + READY_PATH).is_success
        except httpx.RequestError:
            return False


def _shut_socket(response: httpx.Response) -> None:
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: the attempt is over anyway
            sock.shutdown(socket.SHUT_RDWR)


class AsyncRewardClient(_ClientBase):
    """asyncio client with the same API as `RewardClient` (``async def``). The chunks of a large
    batch are sent concurrently (at most ``max_concurrency`` at a time), spread over the base URLs.

    It may be created anywhere but must be used from one event loop (httpx's connection pool
    belongs to the loop that first uses it).

    >>> async def main():
    ...     async with AsyncRewardClient(url) as client:
    ...         return await client.score([{"completion": completion, "solution": solution}], rewards=["ap"])
    >>> asyncio.run(main()).total  # pycocotools' AP of a perfect box: 101 precisions summed
    [0.9999999999999998]
    """

    def __init__(self, base_urls: str | Sequence[str], *, max_concurrency: int | None = None, **settings: Any) -> None:
        """``settings`` as for `RewardClient` (``transport`` an ``httpx.AsyncBaseTransport``)."""
        super().__init__(base_urls, **settings)
        # Bounded so that a huge batch does not queue past httpx's pool timeout; a few per URL
        # keeps every replica's workers busy.
        self.max_concurrency = max_concurrency or 4 * len(self.base_urls)

    def _open(self, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(headers=self._headers, timeout=self.timeout, transport=transport)

    async def score(
        self,
        samples: Sequence[Sample | Mapping[str, Any]],
        rewards: RewardsArg = None,
        weights: Mapping[str, float] | None = None,
        params: Mapping[str, Mapping[str, float]] | None = None,
        explain: bool = False,
    ) -> ScoreResponse:
        """Score ``samples``; every list of the answer is aligned with them, in their order."""
        deadline = self._call_deadline()
        chunks = self._score_requests(samples, rewards, weights, params, explain)
        gate = asyncio.Semaphore(self.max_concurrency)

        async def score_one(chunk: ScoreRequest) -> ScoreResponse:
            async with gate:
                return await self._score_chunk(chunk, deadline)

        return merge_responses(await _gather_or_cancel([score_one(chunk) for chunk in chunks]))

    async def rewards_catalogue(self) -> dict:
        """GET /v1/rewards: the rewards the server computes, their versions, parameters, defaults."""
        return await self._call("GET", REWARDS_PATH, None, _read_object, self._call_deadline())

    async def evaluate(self, payload: Mapping[str, Any]) -> dict:
        """POST /v1/evaluate with the same retries and failover; the payload is sent as is, unsplit."""
        return await self._call("POST", EVALUATE_PATH, dict(payload), read_evaluation, self._call_deadline())

    async def health(self) -> dict[str, bool]:
        """Readiness of each base URL (GET /readyz answered 2xx). A probe: no retries."""
        ready = await asyncio.gather(*(self._probe(url) for url in self.base_urls))
        return dict(zip(self.base_urls, ready, strict=True))

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _score_chunk(self, chunk: ScoreRequest, deadline: float) -> ScoreResponse:
        read = response_reader(len(chunk.samples), chunk.rewards)
        return await self._call("POST", SCORE_PATH, request_body(chunk), read, deadline)

    async def _call(self, method: str, path: str, body: Any, read: Callable[[Any], T], deadline: float) -> T:
        plan = self._plan(method, path, deadline)
        while True:
            attempt = plan.next_attempt()
            if attempt.delay > 0:
                await asyncio.sleep(attempt.delay)
            try:
                # The whole attempt, connect to last byte, in its time (httpx's timeouts are per read).
                async with asyncio.timeout(attempt.timeout):
                    response = await self._http.request(method, attempt.url + path, json=body)
                value = read_answer(response, read)
            except TimeoutError:
                plan.failed(_too_slow(attempt.timeout))
            except httpx.RequestError as exc:
                plan.failed(transport_failure(exc))
            except TransientFailure as failure:
                plan.failed(failure)
            else:
                plan.succeeded()
                return value

    async def _probe(self, url: str) -> bool:
        try:
            return (await self._http.get(url + READY_PATH)).is_success
        except httpx.RequestError:
            return False


async def _gather_or_cancel(coroutines: Sequence[Any]) -> list[Any]:
    """asyncio.gather that cancels the other chunks when one fails: their answers would be thrown away."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
