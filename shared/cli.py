"""Score a JSONL file with the reward service.

    python -m shared.cli score samples.jsonl --url http://127.0.0.1:8000 [--url http://host2:8000] \\
        --rewards format,ap --weights ap=1 --out scored.jsonl [--token T]

Input: one JSON object per line, ``{"completion": str, "solution": str | [boxes], "completion_tokens"?: int,
"id"?: str | int}``; blank lines are skipped. Every line is checked before anything is sent, and
every bad line is reported with its number. Output: one line per sample, in input order,
``{"id", "rewards": {name: value | null}, "total", "error"}``. The summary (mean of each reward
over the samples it scored, and the errors by line number) goes to stdout, or to stderr when the results do.

Exit status: 0 scored (per-sample errors are reported, not fatal), 1 the service failed after its
retries, 2 bad input or a request the service refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from shared.client import AsyncRewardClient, ClientSettings, RewardRequestError, RewardServiceError
from shared.contract import Sample, ScoreResponse

MAX_REPORTED_BAD_LINES = 20


class InputError(ValueError):
    """The input file or an argument is wrong; the message says where."""


def parse_weights(text: str) -> dict[str, float]:
    """``"ap=1,format=0.5"`` -> ``{"ap": 1.0, "format": 0.5}``; a malformed item is named in the error."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            weights[name.strip()] = float(value)
        except ValueError:
            raise InputError(f"weight {item!r} is not name=number") from None
    return weights


def read_samples(path: Path) -> tuple[list[Sample], list[int]]:
    """Every sample of a JSONL file and the line number of each; InputError naming each bad line
    (up to 20) otherwise."""
    samples: list[Sample] = []
    line_numbers: list[int] = []
    problems: list[str] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                samples.append(_parse_line(line))
                line_numbers.append(number)
            except InputError as exc:
                problems.append(f"{path}:{number}: {exc}")
    if problems:
        shown = problems[:MAX_REPORTED_BAD_LINES]
        more = len(problems) - len(shown)
        raise InputError("\n".join(shown + ([f"... and {more} more bad lines"] if more else [])))
    return samples, line_numbers


def _parse_line(line: str) -> Sample:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise InputError(f"expected a JSON object, got {type(value).__name__}")
    try:
        return Sample.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'sample'}: {error['msg']}" for error in exc.errors()
        )
        raise InputError(problems) from None


@dataclass
class Summary:
    """Running totals over the scored samples; ``None`` values are counted apart, never averaged as 0."""

    count: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    scored: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

    def add(self, response: ScoreResponse, line_numbers: Sequence[int]) -> None:
        columns = {**response.rewards, "total": response.total}
        for name, values in columns.items():
            present = [v for v in values if v is not None]
            self.sums[name] = self.sums.get(name, 0.0) + sum(present)
            self.scored[name] = self.scored.get(name, 0) + len(present)
        for line, error in zip(line_numbers, response.errors, strict=True):
            if error is not None:
                self.errors.append(f"line {line}: {error}")
        self.count += len(response.total)
        self.versions.update(response.versions)

    def render(self) -> str:
        versions = ", ".join(f"{name}={version}" for name, version in self.versions.items())
        lines = [f"scored {self.count} samples (versions: {versions or 'none'})"]
        width = max((len(name) for name in self.sums), default=5)
        for name, total in self.sums.items():
            n = self.scored[name]
            mean = f"{total / n:.4f}" if n else "n/a"
            lines.append(f"  {name:<{width}}  mean {mean}  ({n} scored)")
        lines.append(f"errors: {len(self.errors)}")
        lines += [f"  {error}" for error in self.errors[:MAX_REPORTED_BAD_LINES]]
        return "\n".join(lines)


def result_lines(samples: Sequence[Sample], response: ScoreResponse) -> Iterable[str]:
    for i, sample in enumerate(samples):
        row = {
            "id": sample.id,
            "rewards": {name: values[i] for name, values in response.rewards.items()},
            "total": response.total[i],
            "error": response.errors[i],
        }
        yield json.dumps(row, ensure_ascii=False) + "\n"


async def score_file(args: argparse.Namespace, samples: list[Sample], line_numbers: list[int], out: IO[str]) -> Summary:
    summary = Summary()
    async with AsyncRewardClient(
        args.url, token=args.token, timeout=args.timeout, max_batch_size=args.batch_size, max_retries=args.max_retries
    ) as client:
        # Hand the client several requests' worth at a time so it can spread them over the URLs,
        # while results are still written as they come rather than all at the end.
        group = args.batch_size * client.max_concurrency
        for start in range(0, len(samples), group):
            chunk = samples[start : start + group]
            response = await client.score(chunk, rewards=args.rewards, weights=args.weights, params=args.params)
            out.writelines(result_lines(chunk, response))
            summary.add(response, line_numbers[start : start + group])
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description="Client of the reward service.")
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score a JSONL file of samples")
    score.add_argument("file", type=Path, help="JSONL: completion, solution, completion_tokens?, id?")
    score.add_argument("--url", action="append", required=True, help="base URL of a server; repeat for several")
    score.add_argument("--rewards", type=_names, default=None, help="comma-separated names (default: the server's)")
    score.add_argument("--weights", type=_weights_arg, default=None, help="name=weight,... for the total")
    score.add_argument(
        "--params",
        type=_params_arg,
        default=None,
        help='reward parameters as JSON, e.g. \'{"weighted_sum": {"alpha": 0.7}}\'',
    )
    score.add_argument("--out", type=Path, default=None, help="output JSONL (default: stdout)")
    score.add_argument(
        "--token", default=ClientSettings.from_env().token, help="bearer token (default: env REWARD_API_TOKEN)"
    )
    score.add_argument("--batch-size", type=_positive, default=1024, help="samples per request (default 1024)")
    score.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    score.add_argument("--max-retries", type=int, default=5, help="retries per request (default 5)")
    return parser


def _weights_arg(text: str) -> dict[str, float]:
    try:
        return parse_weights(text)
    except InputError as exc:  # argparse shows the message of ArgumentTypeError only
        raise argparse.ArgumentTypeError(str(exc)) from None


def _params_arg(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('expected a JSON object like {"weighted_sum": {"alpha": 0.7}}')
    return value


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one reward name")
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        samples, line_numbers = read_samples(args.file)
    except (InputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out.open("w", encoding="utf-8") if args.out else sys.stdout
    try:
        summary = asyncio.run(score_file(args, samples, line_numbers, out))
    except RewardRequestError as exc:
        print(f"error: the service refused the request: {exc}", file=sys.stderr)
        return 2
    except RewardServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.out:
            out.close()
    print(summary.render(), file=sys.stdout if args.out else sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
