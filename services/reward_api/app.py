"""create_app(settings): the FastAPI application.

Thin on purpose: routers (one list below), dependencies (routers/deps.py), two pure ASGI
middlewares (body-size limit, request metrics) and one handler for the service's domain errors
(errors.ServiceError: 4xx, 408 for a slow body, 503 when the worker's budgets stay full);
FastAPI's own handlers answer its HTTP and validation errors in the same ``{"detail": ...}``
shape. Every refusal is logged with its detail. Anything else is a logged 500 that leaks no
internals; a client that disconnects mid-upload is counted as 499.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.contract import API_PREFIX

from . import metrics
from .errors import BodyTooLarge, ServiceError
from .responses import JSONBytes, encode_json
from .routers import catalog, evaluate, health, openrlhf, score
from .routers.deps import BatchRunner, require_token
from .routers.request_handling import RequestError, resolve_default_rewards
from .settings import Settings, SettingsError

log = logging.getLogger("reward_api")

# Routers under /v1 (bearer token when configured); adding an endpoint is one entry here.
V1_ROUTERS: list[APIRouter] = [score.router, openrlhf.router, catalog.router, evaluate.router]
# Operational endpoints stay open: probes and Prometheus carry no token.
OPEN_ROUTERS: list[APIRouter] = [health.router]
# nginx's name for "the client closed the connection before the answer": not a server error.
CLIENT_CLOSED = 499


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
    app.state.exposition = metrics.host_exposition
    app.state.runner = BatchRunner(
        settings.max_queued_bytes,
        settings.max_queued_samples,
        settings.queue_wait_seconds,
        settings.retry_after_seconds,
    )
    for router in V1_ROUTERS:
        app.include_router(router, prefix=API_PREFIX, dependencies=[Depends(require_token)])
    for router in OPEN_ROUTERS:
        app.include_router(router)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(Exception, _unexpected)
    # The last added is the outermost: metrics see every answer, the 413s included, and the size
    # check runs before anything reads the body.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, endpoints=_endpoint_paths())
    return app


def _endpoint_paths() -> set[str]:
    paths = {API_PREFIX + path for router in V1_ROUTERS for path in _route_paths(router)}
    return paths | {path for router in OPEN_ROUTERS for path in _route_paths(router)}


def _route_paths(router: APIRouter) -> list[str]:
    # Every route of these routers is an endpoint (APIRoute); `routes` is typed as BaseRoute, which has no path.
    return [route.path for route in router.routes if isinstance(route, APIRoute)]


@asynccontextmanager
async def _lifespan(app: FastAPI):
    folded = metrics.fold_dead_workers()
    if folded:
        log.info("folded %d metrics files of workers that are gone into the archive", folded)
    registration = health.register_worker()
    try:
        yield
    finally:
        health.unregister_worker(registration)


async def _service_error(request: Request, exc: Exception) -> Response:
    """The one handler of the service's own errors: each carries its status, detail and headers."""
    assert isinstance(exc, ServiceError)
    return refusal(request, exc.status_code, exc.detail, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's own answer (unknown path, wrong method...), logged like the service's refusals."""
    assert isinstance(exc, StarletteHTTPException)
    log_refusal(request.method, request.url.path, exc.status_code, exc.detail)
    return await http_exception_handler(request, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 for a query or path parameter (bodies are validated in request_handling.py)."""
    assert isinstance(exc, RequestValidationError)
    log_refusal(request.method, request.url.path, 422, exc.errors())
    return await request_validation_exception_handler(request, exc)


async def _client_disconnected(request: Request, exc: Exception) -> Response:
    # The client went away mid-upload: nobody reads this answer; counted as 499, not as a 500.
    log.info("%s %s: the client disconnected before its request was read", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error answering %s %s", request.method, request.url.path)
    return JSONBytes({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)


def refusal(request: Request, status: int, detail: Any, headers: dict[str, str] | None = None) -> Response:
    """A 4xx/503 answer, logged with its detail: the caller's framework may show only the status."""
    log_refusal(request.method, request.url.path, status, detail)
    return JSONBytes({"detail": detail}, status_code=status, headers=headers)


def log_refusal(method: str, path: str, status: int, detail: Any) -> None:
    log.warning("%s %s answered %d: %.500s", method, path, status, detail)


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
            log_refusal(scope["method"], scope["path"], 413, BodyTooLarge(self.limit).detail)
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
            log_refusal(scope["method"], scope["path"], 413, exc.detail)
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
    payload = encode_json(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
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
