"""The routers' dependencies, as ``Annotated`` aliases: the settings, the default reward plan,
the bearer-token check (FastAPI's HTTPBearer: documented in OpenAPI), the bounded batch runner."""

from __future__ import annotations

import asyncio
import hmac
from collections import deque
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.responses import Response

from shared.contract import ErrorBody

from ..errors import ServiceError, Unauthorized
from ..responses import JSONBytes
from ..settings import Settings

T = TypeVar("T")

# Bodies up to this size are parsed on the event loop (well under a millisecond: cheaper than the
# hop to a thread, which is most of a one-sample request's cost); larger ones in the parsing thread.
INLINE_PARSE_BYTES = 64 * 1024


# Every dependency is a coroutine: FastAPI runs a plain function in its thread pool, a hop that
# costs more than all of these do.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_defaults(request: Request) -> Any:
    """The resolved default reward set (routers/request_handling.Plan)."""
    return request.app.state.defaults


# auto_error=False: a missing or non-Bearer header is our 401 (with the service's message), and a
# service without a token takes any request.
bearer = HTTPBearer(auto_error=False, description="REWARD_API_TOKEN, when the service is started with one")


async def require_token(
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
    """A request waited ``queue_wait_seconds`` for room in this worker's budget ``what``; answered
    503 with Retry-After (transient: the caller retries)."""

    status_code = 503

    def __init__(self, what: str, waited: float, retry_after: int) -> None:
        super().__init__(
            f"overloaded: waited {waited:g} s for room in this worker's budget of {what}; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
        self.what = what


class BodyTimeout(ServiceError):
    """The body was not received within ``body_read_seconds``; answered 408 and the connection
    closed (what is left of a trickled upload is not read)."""

    status_code = 408

    def __init__(self, seconds: int) -> None:
        super().__init__(
            f"the request body was not received within {seconds} s "
            f"(REWARD_API_BODY_READ_SECONDS); send the whole body at once",
            headers={"Connection": "close"},
        )


class Budget:
    """A quantity this worker may hold at once (body bytes, queued samples). A request takes its
    share before it holds it and gives it back when done; when the budget is full it waits, in
    arrival order, up to ``wait_seconds``, then `Overloaded`. A share larger than the whole budget
    waits until the worker is idle and is then taken alone, so one legal request is never refused."""

    def __init__(self, name: str, capacity: int, wait_seconds: float, retry_after: int = 1) -> None:
        self.name, self.capacity, self.wait_seconds, self.retry_after = name, capacity, wait_seconds, retry_after
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()

    def has_room(self, amount: int, holder: bool = False) -> bool:
        """Whether `take` would grant ``amount`` at once, without waiting."""
        return (holder or not self._waiters) and self.used + min(amount, self.capacity) <= self.capacity

    async def take(self, amount: int, wait_seconds: float | None = None, holder: bool = False) -> int:
        """Take ``amount`` (at most the whole budget), waiting up to ``wait_seconds`` (default: the
        budget's own) for room; returns what was taken, to `give` back. A ``holder`` (a request
        that already holds part of this budget: the rest of a body being read) goes before every
        new request, so that half-read bodies finish and free what they hold rather than wait
        behind requests that can only start once they do."""
        amount = min(amount, self.capacity)
        if self.has_room(amount, holder):
            self.used += amount  # the fast path: no await, so nothing can interleave
            return amount
        wait = self.wait_seconds if wait_seconds is None else wait_seconds
        ticket = asyncio.get_running_loop().create_future()
        if holder:
            self._waiters.appendleft((amount, ticket))
        else:
            self._waiters.append((amount, ticket))
        try:
            await asyncio.wait_for(asyncio.shield(ticket), wait)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if ticket.done() and not ticket.cancelled():
                self.give(amount)  # granted in the same instant as the timeout: hand it on
            else:
                ticket.cancel()
            self._wake()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise Overloaded(self.name, self.wait_seconds, self.retry_after) from None
        return amount

    def give(self, amount: int) -> None:
        self.used -= amount
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            amount, ticket = self._waiters[0]
            if ticket.done():  # gave up waiting
                self._waiters.popleft()
                continue
            if self.used + amount > self.capacity:
                return
            self._waiters.popleft()
            self.used += amount
            ticket.set_result(None)

    @asynccontextmanager
    async def hold(self, amount: int):
        taken = await self.take(amount)
        try:
            yield
        finally:
            self.give(taken)


class BatchRunner:
    """Per worker: admission, and the threads that do CPU-bound work off the event loop.

    One thread scores (one unit of work at a time: the work holds the GIL, so more threads would
    only interleave batches) and one parses large bodies (`parse`), beside it: while a large batch
    is in the host's scoring pool the scoring thread only waits, and the next request's body is
    parsed meanwhile, ready to be scored the moment the pool is free (two requests in flight on
    one worker, e.g. a client whose two connections both landed on it, keep every core busy).
    Admission (no 503 at a fixed number of requests): a request holds its body's bytes from before
    it is read and its samples from when they are parsed until they are scored; when a budget is
    full it waits up to ``queue_wait_seconds``. Scoring requests that arrive while the thread is
    busy are coalesced: the next unit of work scores all of them at once (one thread hop, one
    engine call per reward set), so a caller sending one sample per request costs little more per
    sample than one sending a batch.
    """

    def __init__(
        self, max_queued_bytes: int, max_queued_samples: int, queue_wait_seconds: float, retry_after: int = 1
    ) -> None:
        self.bytes = Budget(
            "body bytes (REWARD_API_MAX_QUEUED_BYTES)", max_queued_bytes, queue_wait_seconds, retry_after
        )
        self.samples = Budget(
            "samples (REWARD_API_MAX_QUEUED_SAMPLES)", max_queued_samples, queue_wait_seconds, retry_after
        )
        self._turn = asyncio.Lock()  # FIFO: one unit of work in the thread at a time
        self._parsing = asyncio.Lock()  # FIFO: one body parsed at a time, beside the unit of work
        self._queues: dict[Callable, list[tuple[Any, asyncio.Future]]] = {}
        self._flushes: set[asyncio.Task] = set()

    async def run(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` in the batch thread, after the units before it."""
        async with self._turn:
            return await asyncio.to_thread(fn, *args)

    async def parse(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` in a thread, one at a time, while the unit of work goes on beside it."""
        async with self._parsing:
            return await asyncio.to_thread(fn, *args)

    def submit(self, fn: Callable[[list], list], item: Any) -> asyncio.Future:
        """The future of ``fn(items)[i]`` for this ``item``, where ``items`` are all the items given
        for ``fn`` while the thread was busy (one unit of work: coalesced)."""
        future = asyncio.get_running_loop().create_future()
        queue = self._queues.setdefault(fn, [])
        queue.append((item, future))
        if len(queue) == 1:  # the first of a new unit: start the task that runs it
            task = asyncio.ensure_future(self._flush(fn))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        return future

    async def _flush(self, fn: Callable[[list], list]) -> None:
        async with self._turn:
            unit = self._queues.pop(fn)  # everything that arrived while we waited for our turn
            try:
                results = await asyncio.to_thread(fn, [item for item, _ in unit])
            except Exception as exc:  # unexpected: every caller of the unit gets it (a 500, logged)
                results = [exc] * len(unit)
        for (_, future), result in zip(unit, results, strict=True):
            if not future.done():
                future.set_result(result)


async def get_runner(request: Request) -> BatchRunner:
    return request.app.state.runner


CurrentSettings = Annotated[Settings, Depends(get_settings)]
DefaultPlan = Annotated[Any, Depends(get_defaults)]
Runner = Annotated[BatchRunner, Depends(get_runner)]


# The answers a batch endpoint may give besides 200, for the OpenAPI document.
BATCH_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (401, 408, 413, 422, 431, 503)}


def json_body_schema(model: type[BaseModel]) -> dict:
    """``openapi_extra`` documenting ``model`` as the request body. The body is read as bytes and
    validated off the event loop, so FastAPI sees no body parameter to document by itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


@asynccontextmanager
async def received_body(request: Request, runner: BatchRunner):
    """The whole body, read within ``body_read_seconds``, each chunk counted against the worker's
    byte budget as it arrives (and given back when the request is answered). Only bytes really
    received are held, and nothing else is held while they arrive: a stalled or trickling upload
    delays no one and is cut off at the deadline. Where the budget is full, reading pauses (TCP
    pushes back on the sender) until there is room, for at most ``queue_wait_seconds`` over the
    whole body (then 503); the body's clock stops meanwhile, since that wait is the service's, not
    the sender's. So reading a body takes at most ``body_read_seconds + queue_wait_seconds``."""
    settings = request.app.state.settings
    loop = asyncio.get_running_loop()
    allowance = runner.bytes.wait_seconds  # waiting for room, over all the chunks
    chunks: list[bytes] = []
    held = 0
    try:
        try:
            async with asyncio.timeout(settings.body_read_seconds) as deadline:
                async for chunk in request.stream():
                    if not chunk:
                        continue
                    holder = held > 0
                    if runner.bytes.has_room(len(chunk), holder):
                        held += await runner.bytes.take(len(chunk), holder=holder)
                    else:
                        paused_at = loop.time()
                        left = (deadline.when() or paused_at) - paused_at
                        deadline.reschedule(None)
                        try:
                            held += await runner.bytes.take(len(chunk), wait_seconds=allowance, holder=holder)
                        except Overloaded as refused:
                            refused.headers = {**(refused.headers or {}), "Connection": "close"}  # rest unread
                            raise
                        allowance -= loop.time() - paused_at
                        deadline.reschedule(loop.time() + left)
                    chunks.append(chunk)
        except TimeoutError:
            raise BodyTimeout(settings.body_read_seconds) from None
        yield b"".join(chunks)
    finally:
        runner.bytes.give(held)


async def run_on_body(request: Request, runner: BatchRunner, work: Callable[..., bytes], *args) -> Response:
    """``work(body, *args)`` in the batch thread once the body is in, its bytes answered as JSON."""
    async with received_body(request, runner) as body:
        return JSONBytes(await runner.run(work, body, *args))


async def score_on_body(
    request: Request, runner: BatchRunner, prepare: Callable[[bytes], Any], score: Callable[[list], list]
) -> Response:
    """A scoring request: the body read, parsed and planned by ``prepare`` (in the parsing thread for
    a large body, where parsing is real work, else right here), its samples admitted, then scored
    by ``score`` together with whatever else is waiting."""
    async with received_body(request, runner) as body:
        if len(body) > INLINE_PARSE_BYTES:
            job = await runner.parse(prepare, body)
        else:
            job = prepare(body)
        taken = await runner.samples.take(len(job.samples))
        scored = runner.submit(score, job)
        # Given back when the unit is done, not when this caller is: samples of a caller that went
        # away are still queued or being scored.
        scored.add_done_callback(lambda _: runner.samples.give(taken))
        result = await asyncio.shield(scored)
        if isinstance(result, BaseException):  # this request's 4xx (or an unexpected error: a 500)
            raise result
        return JSONBytes(result)
