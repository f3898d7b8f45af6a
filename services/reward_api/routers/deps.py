"""Dependencies shared by the routers: settings, the bearer-token check, the bounded batch runner."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import orjson
from fastapi import HTTPException, Request
from pydantic import BaseModel
from starlette.responses import Response

from shared.contract import ErrorBody

from ..settings import Settings

T = TypeVar("T")


class JSONBytes(Response):
    """JSON rendered by orjson (several times faster than json.dumps on large batches)."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return content if isinstance(content, bytes) else orjson.dumps(content)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def require_token(request: Request) -> None:
    """401 unless the request carries ``Authorization: Bearer <REWARD_API_TOKEN>`` (when one is set)."""
    token = request.app.state.settings.token
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # compare_digest: the time taken must not tell how much of a guessed token was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong bearer token (header Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": 'Bearer realm="reward_api"'},
        )


class Overloaded(Exception):
    """This worker already holds its limit of pending batches; answered 503 with Retry-After."""


class BatchRunner:
    """Runs CPU-bound batch work off the event loop, one batch at a time per worker.

    One thread is enough: the work holds the GIL, so more threads would only interleave batches
    and make every one of them slower. At most ``max_pending`` batches may be running or waiting;
    the next one is refused at once (never an unbounded queue), so a trainer sees back-pressure
    and /healthz stays answered.
    """

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self.pending = 0
        self._limiter = anyio.CapacityLimiter(1)

    @asynccontextmanager
    async def slot(self):
        # Checked and taken without an await in between: the event loop is single-threaded.
        if self.pending >= self.max_pending:
            raise Overloaded
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1

    async def run(self, fn: Callable[..., T], *args) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)


def get_runner(request: Request) -> BatchRunner:
    return request.app.state.runner


# The answers a batch endpoint may give besides 200, for the OpenAPI document.
BATCH_ERRORS = {413: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}


def json_body_schema(model: type[BaseModel]) -> dict:
    """``openapi_extra`` documenting ``model`` as the request body. The body is read as bytes and
    validated in the batch thread, so FastAPI sees no body parameter to document by itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


async def run_on_body(request: Request, runner: BatchRunner, work: Callable[..., bytes], *args) -> Response:
    """``work(body, *args)`` in the batch thread, its bytes answered as JSON. The slot is taken before
    the body is read: a full queue is a 503 at once, without receiving the upload."""
    async with runner.slot():
        body = await request.body()
        return JSONBytes(await runner.run(work, body, *args))
