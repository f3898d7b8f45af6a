"""A real HTTP server that misbehaves on purpose, for testing the client's retries and failover.

It speaks HTTP/1.1 over real sockets (asyncio + h11, in a background thread), so the client sees
genuine failures: a connection closed without an answer, an answer that never comes, a 503 with
Retry-After. Each request path has a script, a queue of actions consumed one per request; when
the queue is empty the path's default action runs, normally `Proxy()` to the real reward service
(so successful answers are the service's own). Every request is logged, so tests count what the
server saw rather than what the client says it sent.

    with FaultyServer(upstream=service.url) as server:
        server.script("/v1/score", Reply(503, {"detail": "busy"}, {"Retry-After": "0"}), Drop())
        client = RewardClient(server.url, ...)

h11 is not asyncio-aware: one connection serves one request and is closed (``Connection: close``),
which also keeps each scripted action tied to exactly one request.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http import HTTPStatus
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import httpx

from services.reward_api.local import free_port


@dataclass(frozen=True)
class Reply:
    """Answer with this status, JSON body and headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Drop:
    """Close the connection without answering (the client sees a dropped connection)."""


@dataclass(frozen=True)
class Hang:
    """Answer nothing for ``seconds`` (past the client's timeout), then close."""

    seconds: float = 5.0


@dataclass(frozen=True)
class Proxy:
    """Forward to the upstream service, after ``delay`` seconds; ``edit`` may rewrite the JSON answer
    (e.g. make a list short)."""

    edit: Callable[[Any], Any] | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class Trickle:
    """Answer ``reply``, but its body one byte every ``interval`` seconds: every read of the client
    gets something in time, only the whole answer is late."""

    reply: Reply
    interval: float = 0.2


Action = Reply | Drop | Hang | Proxy | Trickle


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def short_lists(body: dict) -> dict:
    """A score answer with the last sample missing from every list: the fault `check_aligned` catches."""
    body = dict(body)
    body["rewards"] = {name: values[:-1] for name, values in body["rewards"].items()}
    body["total"] = body["total"][:-1]
    return body


class FaultyServer:
    def __init__(self, upstream: str | None = None, default: Action | None = None) -> None:
        self.upstream = upstream
        if default is None:
            default = Proxy() if upstream else Reply(500, {"detail": "no upstream"})
        self.default = default
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[SeenRequest] = []
        self._scripts: dict[str, deque[Action]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faulty-server", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._upstream_client: httpx.AsyncClient | None = None

    # ----------------------------------------------------------------------------- control

    def script(self, path: str, *actions: Action) -> None:
        """Queue actions for the next requests to ``path`` (then the default action again)."""
        with self._lock:
            self._scripts[path].extend(actions)

    def seen(self, path: str | None = None) -> list[SeenRequest]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def start(self) -> FaultyServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> FaultyServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------------- serving

    async def _start(self) -> None:
        self._upstream_client = httpx.AsyncClient(timeout=60.0)
        self._server = await asyncio.start_server(self._serve_connection, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        assert self._server is not None and self._upstream_client is not None
        self._server.close()
        # Hanging handlers would keep wait_closed() waiting: cancel every other task of this loop.
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        await self._upstream_client.aclose()

    def _next_action(self, path: str) -> Action:
        with self._lock:
            queue = self._scripts.get(path)
            return queue.popleft() if queue else self.default

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            if request is None:
                return
            with self._lock:
                self.requests.append(request)
            action = self._next_action(request.path)
            if isinstance(action, Drop):
                return
            if isinstance(action, Hang):
                await asyncio.sleep(action.seconds)
                return
            if isinstance(action, Trickle):
                status, headers, body = await self._answer(action.reply, request)
                message = _encode_response(status, headers, body)
                head = len(message) - len(body)
                writer.write(message[:head])
                for k in range(head, len(message)):
                    await writer.drain()
                    await asyncio.sleep(action.interval)
                    writer.write(message[k:k + 1])
                await writer.drain()
                return
            status, headers, body = await self._answer(action, request)
            writer.write(_encode_response(status, headers, body))
            await writer.drain()
        except (ConnectionError, h11.ProtocolError):
            pass  # the client gave up on us (a timeout test): nothing to do
        finally:
            writer.close()

    async def _answer(self, action: Reply | Proxy, request: SeenRequest) -> tuple[int, dict[str, str], bytes]:
        if isinstance(action, Reply):
            body = b"" if action.body is None else json.dumps(action.body).encode()
            return action.status, {"content-type": "application/json", **action.headers}, body
        await asyncio.sleep(action.delay)
        if self.upstream is None:
            return 500, {}, b'{"detail": "no upstream to proxy to"}'
        assert self._upstream_client is not None
        forwarded = {k: v for k, v in request.headers.items() if k in ("authorization", "content-type")}
        answer = await self._upstream_client.request(
            request.method, self.upstream + request.path, content=request.body, headers=forwarded
        )
        body = answer.content
        if action.edit is not None and answer.status_code == 200:
            body = json.dumps(action.edit(answer.json())).encode()
        headers = {k: v for k, v in answer.headers.items() if k in ("content-type", "retry-after")}
        return answer.status_code, headers, body


async def _read_request(reader: asyncio.StreamReader) -> SeenRequest | None:
    connection = h11.Connection(h11.SERVER)
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            connection.receive_data(data)
            if not data and head is None:
                return None
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            headers = {k.decode().lower(): v.decode() for k, v in head.headers}
            path = head.target.decode().split("?", 1)[0]
            return SeenRequest(head.method.decode(), path, headers, bytes(body))
        elif isinstance(event, h11.ConnectionClosed):
            return None


def _encode_response(status: int, headers: dict[str, str], body: bytes) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"content-length: {len(body)}", "connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body
