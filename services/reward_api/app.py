"""create_app(settings): the FastAPI application.

Thin on purpose: routers (one list below), dependencies (routers/deps.py), two pure ASGI
middlewares (body-size limit, request metrics) and error handlers that always answer JSON.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import asynccontextmanager

import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.contract import API_PREFIX

from . import metrics
from .routers import catalog, evaluate, health, openrlhf, score
from .routers.batch import RequestError, resolve_default_rewards
from .routers.deps import BatchRunner, BodyTimeout, JSONBytes, Overloaded, require_token
from .settings import Settings, SettingsError

log = logging.getLogger("reward_api")

# Routers under /v1 (bearer token when configured); adding an endpoint is one entry here.
V1_ROUTERS: list[APIRouter] = [score.router, openrlhf.router, catalog.router, evaluate.router]
# Operational endpoints stay open: probes and Prometheus carry no token.
OPEN_ROUTERS: list[APIRouter] = [health.router]


def resolve_defaults(settings: Settings):
    """The default reward set, resolved; a SettingsError if the registry cannot serve it."""
    try:
        return resolve_default_rewards(settings)
    except RequestError as exc:
        raise SettingsError(f"REWARD_API_DEFAULT_REWARDS: {exc.detail}") from None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    app = FastAPI(
        title="Reward service",
        version="1",
        description="Object-detection rewards for RL on vision-language models (VLM-R1 style).",
        default_response_class=JSONBytes,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.defaults = resolve_defaults(settings)
    app.state.runner = BatchRunner(settings.max_queued_bytes, settings.max_queued_samples,
                                   settings.queue_wait_seconds)
    for router in V1_ROUTERS:
        app.include_router(router, prefix=API_PREFIX, dependencies=[Depends(require_token)])
    for router in OPEN_ROUTERS:
        app.include_router(router)
    _add_error_handlers(app)
    # The last added is the outermost: metrics see every answer, the 413s included, and the size
    # check runs before anything reads the body.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, endpoints=_endpoint_paths())
    return app


def _endpoint_paths() -> set[str]:
    paths = {API_PREFIX + route.path for router in V1_ROUTERS for route in router.routes}
    return paths | {route.path for router in OPEN_ROUTERS for route in router.routes}


@asynccontextmanager
async def _lifespan(app: FastAPI):
    registration = health.register_worker()
    try:
        yield
    finally:
        health.unregister_worker(registration)
        metrics.mark_dead(os.getpid())


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> Response:
        return refusal(request, exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        return refusal(request, exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(BodyTimeout)
    async def _body_timeout(request: Request, exc: BodyTimeout) -> Response:
        seconds = request.app.state.settings.body_read_seconds
        return refusal(request, 408, f"the request body was not received within {seconds} s "
                                     f"(REWARD_API_BODY_READ_SECONDS); send the whole body at once",
                       {"Connection": "close"})

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        # Only reached for query/path parameters: bodies are validated in routers/batch.py.
        return refusal(request, 422, exc.errors())

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded) -> Response:
        settings = request.app.state.settings
        return refusal(request, 503, f"overloaded: waited {settings.queue_wait_seconds} s for room in this "
                                     f"worker's budget of {exc.what}; retry after {settings.retry_after_seconds} s",
                       {"Retry-After": str(settings.retry_after_seconds)})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return JSONBytes({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)


def refusal(request: Request, status: int, detail, headers: dict | None = None) -> Response:
    """A 4xx/503 answer, logged with its detail: the caller's framework may show only the status."""
    log.warning("%s %s answered %d: %.500s", request.method, request.url.path, status, detail)
    return JSONBytes({"detail": detail}, status_code=status, headers=headers)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the limit of {limit} bytes (REWARD_API_MAX_BODY_BYTES)")


class BodyLimitMiddleware:
    """413 for bodies over the limit without reading them: a declared Content-Length is checked
    first; a chunked or lying body is counted as it streams in and cut off at the limit."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            log.warning("%s %s answered 413: %s", scope["method"], scope["path"], BodyTooLarge(self.limit).detail)
            return await _send_json(send, 413, {"detail": BodyTooLarge(self.limit).detail})
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:  # raised outside FastAPI's handlers (e.g. a streaming reader)
            log.warning("%s %s answered 413: %s", scope["method"], scope["path"], exc.detail)
            if not started:
                await _send_json(send, 413, {"detail": exc.detail})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send: Send, status: int, body: dict) -> None:
    payload = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})


class MetricsMiddleware:
    """Counts every answer by endpoint and status, and times it. Unknown paths share the label
    "other", so a scanner cannot blow up the number of time series."""

    def __init__(self, app: ASGIApp, endpoints: set[str]) -> None:
        self.app = app
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
        status = 500  # what the client gets if the app dies before answering
        start = time.perf_counter()

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            metrics.observe_request(endpoint, status, time.perf_counter() - start)
