"""The HTTP/1.1 protocol the service runs on: uvicorn's h11 implementation, headers bounded.

uvicorn's default (httptools) reads request headers of any size (an 8 MB header was accepted, a
100 MB one took 24 s) and, offered ``Upgrade: h2c`` (``curl --http2``), stops parsing at the end
of the headers, so the body is lost and the request answers 422. h11 bounds what it buffers before
a request's headers are complete (``REWARD_API_MAX_HEADER_BYTES``, passed by ``__main__`` as
uvicorn's ``h11_max_incomplete_event_size``) and treats an upgrade it does not take as the plain
request it also is. Its refusal of oversized headers is a bare 400; here it is a 431 that names
the limit.
"""

from __future__ import annotations

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderLimitedH11Protocol(H11Protocol):
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
