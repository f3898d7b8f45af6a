"""The routers' dependencies, as ``Annotated`` aliases: the settings, the default reward plan,
the bearer-token check (FastAPI's HTTPBearer: documented in OpenAPI), the bounded batch runner."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.responses import Response

from shared.contract import ErrorBody

from ..errors import ServiceError, Unauthorized
from ..responses import JSONBytes
from ..settings import Settings

T = TypeVar("T")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_defaults(request: Request) -> Any:
    """The resolved default reward set (routers/request_handling.Plan)."""
    return request.app.state.defaults


# auto_error=False: a missing or non-Bearer header is our 401 (with the service's message), and a
# service without a token takes any request.
bearer = HTTPBearer(auto_error=False, description="REWARD_API_TOKEN, when the service is started with one")


def require_token(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """401 unless the request carries ``Authorization: Bearer <REWARD_API_TOKEN>`` (when one is set)."""
    if settings.token is None:
        return
    given = credentials.credentials.strip() if credentials is not None else ""
    # compare_digest: the time taken must not tell how much of a guessed token was right.
    if not hmac.compare_digest(given.encode(), settings.token.encode()):
        raise Unauthorized()


class Overloaded(ServiceError):
    """This worker already holds its limit of pending batches; answered 503 with Retry-After."""

    status_code = 503

    def __init__(self, max_pending: int, retry_after: int) -> None:
        super().__init__(
            f"overloaded: this worker already holds {max_pending} pending batches; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


class BatchRunner:
    """Runs CPU-bound batch work off the event loop, one batch at a time per worker.

    One thread is enough: the work holds the GIL, so more threads would only interleave batches
    and make every one of them slower. At most ``max_pending`` batches may be running or waiting;
    the next one is refused at once (never an unbounded queue), so a trainer sees back-pressure
    and /healthz stays answered.
    """

    def __init__(self, max_pending: int, retry_after: int = 1) -> None:
        self.max_pending = max_pending
        self.retry_after = retry_after
        self.pending = 0
        self._limiter = anyio.CapacityLimiter(1)

    @asynccontextmanager
    async def slot(self):
        # Checked and taken without an await in between: the event loop is single-threaded.
        if self.pending >= self.max_pending:
            raise Overloaded(self.max_pending, self.retry_after)
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1

    async def run(self, fn: Callable[..., T], *args) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)


def get_runner(request: Request) -> BatchRunner:
    return request.app.state.runner


CurrentSettings = Annotated[Settings, Depends(get_settings)]
DefaultPlan = Annotated[Any, Depends(get_defaults)]
Runner = Annotated[BatchRunner, Depends(get_runner)]


# The answers a batch endpoint may give besides 200, for the OpenAPI document.
BATCH_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 413, 422, 431, 503)
}


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
