"""The trainer commands' user errors and exit codes (the README's "Exit codes" table).

A user mistake (a model folder that does not exist, a bad data line, the reward service down at
the start, a wrong token...) ends the command with ONE message that names the problem and the
fix, on stderr, and the exit code of its kind; never a traceback. Everything else (a bug, CUDA
running out of memory) keeps its traceback: that is what a bug report needs.

Offline by default: every command sets ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` unless
the environment already sets them, so that a missing model folder fails at once instead of
retrying against the model hub for minutes.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_USAGE = 2  # bad option, missing model folder or checkpoint (argparse uses 2 as well)
EXIT_REWARD_SERVICE = 3  # the reward service stopped answering during the run (beyond the retry budget)
EXIT_STOPPED = 4  # a guard stopped training (NaN loss or gradient)
EXIT_DATA = 5  # a data file, a data line or an image is missing or unreadable
EXIT_SERVICE_AT_START = 6  # the reward service is unreachable, refuses the token or a reward, at the start

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_USAGE: "bad option or configuration: a model folder or checkpoint that does not exist, options that "
    "do not fit together",
    EXIT_REWARD_SERVICE: "the reward service stopped answering during the run, beyond the retry budget "
    "(resume from the last checkpoint)",
    EXIT_STOPPED: "a guard stopped training: NaN or infinite loss or gradient norm",
    EXIT_DATA: "a data file is missing, or lines or images of it are unreadable (every bad line is listed)",
    EXIT_SERVICE_AT_START: "the reward service is down or unreachable, refuses the token (401/403), does not "
    "serve a reward, or serves another version than the checkpoint being resumed was scored with",
}


class UserError(Exception):
    """A mistake the user can fix: ``str(error)`` says what and how; ``exit_code`` its kind."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def offline_by_default() -> None:
    """No model hub unless asked for (``HF_HUB_OFFLINE=0``): the project's models are local folders."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def hub_allowed() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() in ("0", "false", "no", "off", "")


def check_model_folder(path: str | os.PathLike, what: str = "model folder") -> None:
    """Refuse at once a model path that is not a local model folder (offline: no hub look-up)."""
    folder = Path(path)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UserError(
                f"{what} {folder} has no config.json: give the folder a model was saved to "
                "(save_pretrained, trainer.sft/train's --output_dir, or trainer.tiny_model)"
            )
        return
    if hub_allowed():
        return  # a hub name, and the user allowed downloads
    raise UserError(
        f"{what} {folder} does not exist: give the path of a local model folder (build a tiny one with "
        "`python -m trainer.tiny_model DIR`; download real weights once with `hf download Qwen/Qwen2.5-VL-3B-Instruct "
        "--local-dir DIR`), or set HF_HUB_OFFLINE=0 to let transformers download a hub name"
    )


def quiet_logs() -> None:
    """One line per event: no INFO line per HTTP request (httpx) in the progress bar, and none of
    the deprecation notices transformers 5 raises for TRL's and Trainer's own use of the
    ``gradient_checkpointing`` names (TRL's configs default ``gradient_checkpointing=True``; Trainer
    calls ``gradient_checkpointing_enable``): every run printed four, about nothing the user set."""
    for name in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings(
        "ignore", message=r"`(is_)?gradient_checkpointing\w*` is deprecated", category=FutureWarning
    )


def run_command(body: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
    """``body(argv)`` with user errors turned into one line on stderr and their exit code."""
    from trainer.data import DataError

    try:
        return body(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DATA


def reward_catalogue(client: Any, urls: Sequence[str]) -> dict:
    """GET /v1/rewards through ``client`` (with its retries), before any model is loaded: a service
    that is down, refuses the token or does not answer like a reward service is one `UserError`."""
    from shared.client import RewardRequestError, RewardServiceError

    where = ", ".join(urls)
    try:
        catalogue: dict = client.rewards_catalogue()
    except RewardRequestError as exc:
        if exc.status in (401, 403):
            raise UserError(
                f"the reward service at {where} refused the token (HTTP {exc.status}: {exc.detail}): give "
                "the service's token with --reward_token or REWARD_API_TOKEN",
                EXIT_SERVICE_AT_START,
            ) from None
        raise UserError(
            f"the reward service at {where} refused GET /v1/rewards: {exc}", EXIT_SERVICE_AT_START
        ) from None
    except RewardServiceError as exc:
        raise UserError(
            f"the reward service at {where} is not reachable ({exc}): start it (`python -m "
            "services.reward_api`, or `make serve`) or fix --reward_urls",
            EXIT_SERVICE_AT_START,
        ) from None
    return catalogue
