"""The HTTP/1.1 protocol the service runs on: uvicorn's h11 implementation, headers bounded.

uvicorn's default (httptools) reads request headers of any size (an 8 MB header was accepted, a
100 MB one took 24 s) and, offered ``Upgrade: h2c`` (``curl --http2``), stops parsing at the end
of the headers, so the body is lost and the request answers 422. h11 bounds what it buffers before
a request's headers are complete (``REWARD_API_MAX_HEADER_BYTES``, passed by ``__main__`` as
uvicorn's ``h11_max_incomplete_event_size``) and treats an upgrade it does not take as the plain
request it also is. Its refusal of oversized headers is a bare 400; here it is a 431 that names
the limit.

uvicorn writes an answer's status line and headers, its body and its end in separate socket writes.
A replica killed between them has sent headers with no body: the load balancer has already passed
them on and can no longer re-send the request to another replica, so the client sees a cut answer
(seen once in 4,641 requests while a replica was killed under load). `WholeAnswerTransport` makes
the writes of one event-loop turn one write, so an answer (headers and body are sent in one turn)
reaches the socket whole or not at all; a killed replica's unanswered requests are then re-sent by
the load balancer. An answer larger than the socket's send buffer still goes out in parts.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol


class WholeAnswerTransport:
    """A transport whose writes within one event-loop turn reach the real one as one call, at the
    end of the turn (or at `close`): ``writelines``, one system call for all of them while the
    socket's buffer has room (uvloop's is one ``writev``; asyncio's joins them, or from Python 3.12
    sends them with one ``sendmsg``). Everything else is the real transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data or self._transport.is_closing():
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def writelines(self, list_of_data) -> None:
        for data in list_of_data:
            self.write(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []  # taken first: a failing write leaves no backlog
        if not pending or self._transport.is_closing():
            return
        if len(pending) == 1:
            self._transport.write(pending[0])
        else:
            self._transport.writelines(pending)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, pause_reading, ...
        return getattr(self._transport, name)


class HeaderLimitedH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(WholeAnswerTransport(transport, self.loop))  # type: ignore[arg-type]

    def send_400_response(self, msg: str) -> None:
        unparsed, _ = self.conn.trailing_data
        limit = self.config.h11_max_incomplete_event_size
        if limit is None or len(unparsed) <= limit:
            return super().send_400_response(msg)
        body = orjson.dumps(
            {"detail": f"request line and headers larger than the limit of {limit} bytes (REWARD_API_MAX_HEADER_BYTES)"}
        )
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        for event in (
            h11.Response(status_code=431, headers=headers, reason=b"Request Header Fields Too Large"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()
