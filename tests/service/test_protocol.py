"""The service's HTTP protocol (uvicorn's h11, `services/reward_api/protocol.py`) writes each answer
to the socket in one piece: a replica killed mid-answer must not leave the load balancer holding
headers without a body (it could no longer re-send the request to another replica)."""

from __future__ import annotations

import asyncio

from uvicorn.config import Config
from uvicorn.server import ServerState

from services.reward_api.protocol import HeaderLimitedH11Protocol


class SocketTransport(asyncio.Transport):
    """What the protocol writes to its socket, one entry per write call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def app_answering(*chunks: bytes):
    """An ASGI app that answers with its headers, then the body in ``chunks`` (as Starlette does:
    one message per part, with no wait between them)."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        length = str(sum(map(len, chunks))).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]})
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})

    return app


def answer_writes(app, request: bytes) -> list[bytes]:
    async def exchange():
        config = Config(app=app, http=HeaderLimitedH11Protocol, lifespan="off", log_level="error")
        config.load()
        protocol = HeaderLimitedH11Protocol(config=config, server_state=ServerState(), app_state={})
        transport = SocketTransport()
        protocol.connection_made(transport)
        protocol.data_received(request)
        for _ in range(100):  # until the answer is written, or fail below
            await asyncio.sleep(0.01)
            if transport.writes and b"".join(transport.writes).endswith(b"world"):
                break
        protocol.connection_lost(None)
        return transport.writes

    return asyncio.run(exchange())


def test_headers_and_body_are_one_write():
    writes = answer_writes(app_answering(b"hello ", b"world"), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(writes) == 1, writes
    assert writes[0].startswith(b"HTTP/1.1 200 ") and writes[0].endswith(b"\r\n\r\nhello world")


def test_an_answer_before_close_is_written_whole_before_the_close():
    writes = answer_writes(app_answering(b"hello world"), b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert len(writes) == 1 and writes[0].endswith(b"hello world"), writes


def test_two_answers_on_one_connection_are_one_write_each():
    async def exchange():
        config = Config(app=app_answering(b"world"), http=HeaderLimitedH11Protocol, lifespan="off", log_level="error")
        config.load()
        protocol = HeaderLimitedH11Protocol(config=config, server_state=ServerState(), app_state={})
        transport = SocketTransport()
        protocol.connection_made(transport)
        for expected in (1, 2):
            protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            for _ in range(100):
                await asyncio.sleep(0.01)
                if len(transport.writes) >= expected:
                    break
        protocol.connection_lost(None)
        return transport.writes

    writes = asyncio.run(exchange())
    assert len(writes) == 2 and all(w.startswith(b"HTTP/1.1 200 ") and w.endswith(b"world") for w in writes), writes
