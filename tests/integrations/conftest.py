"""The frameworks' released code (pinned in pyproject's `integrations` extra) against a live service.

The service runs with its default settings and 2 workers, as a user would start it. A tiny Qwen2.5-VL
(trainer.tiny_model: the real processor, chat template and special tokens) gives realistic traffic:
chat template, expanded image pads, end tokens.
"""

from __future__ import annotations

import httpx
import pytest

from services.reward_api.local import LocalService

CAT = {"bbox_2d": [10, 20, 110, 220], "label": "cat"}
DOG = {"bbox_2d": [300, 40, 420, 200], "label": "dog"}


def fenced(items: list[dict]) -> str:
    import json

    return f"```json\n{json.dumps(items)}\n```"


def answer_text(items: list[dict], think: str = "I look at the image.") -> str:
    return f"<think>{think}</think>\n<answer>{fenced(items)}</answer>"


def label_text(items: list[dict]) -> str:
    return f"<answer>{fenced(items)}</answer>"


OPEN_FILES = 16384  # the 4,096-request burst holds a socket per request on each side


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files (inherited by the service started after it)
    towards OPEN_FILES, within the hard limit; the limit in force is returned."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@pytest.fixture(scope="session")
def service() -> LocalService:
    raise_open_files_limit()
    with LocalService.start(workers=2, env={"REWARD_API_LOG_LEVEL": "warning"}) as running:
        yield running


@pytest.fixture(scope="session")
def processor(tiny_model_dir):
    from trainer.model import load_processor

    return load_processor(str(tiny_model_dir))


def score_directly(service: LocalService, samples: list[dict], **fields) -> dict:
    """The service's own /v1/score answer: what every framework's path must reproduce."""
    answer = httpx.post(service.url + "/v1/score", json={"samples": samples, **fields}, timeout=30)
    answer.raise_for_status()
    return answer.json()
