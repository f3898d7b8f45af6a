"""JSON answers: every body the service writes goes through :func:`encode_json`.

orjson is several times faster than ``json.dumps`` on large batches, but refuses two things a
request can smuggle into an answer: integers beyond 64 bits (a caller's ``id``, echoed back) and
strings holding a lone surrogate (a label written ``"\\ud800"`` inside a completion's JSON, echoed
by /v1/evaluate and by explain). Those answers (rare) go through ``json.dumps`` instead, which
writes both exactly (``\\ud800`` as an escape, big integers in full), so no input reaches a 500.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import Response


def encode_json(content: Any) -> bytes:
    """``content`` as JSON bytes. Numbers must be finite: orjson would write NaN as ``null``, so
    the values are checked where they are computed (a total that overflows is a 422 there)."""
    try:
        return orjson.dumps(content)
    except orjson.JSONEncodeError:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class JSONBytes(Response):
    """A JSON answer; ``content`` is already-encoded bytes or anything :func:`encode_json` takes."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else encode_json(content)
