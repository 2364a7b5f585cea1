"""The API's HTTP/1.1 protocol: uvicorn's httptools one (llhttp, in C), with a bound on a
request's head.

httptools parses a request for about a fifth of the API's own CPU per submit less than
h11 (docs/ARCHITECTURE.md), but unlike h11 it buffers a request line and headers without
limit: a client could grow the process by sending one endless header. This protocol
refuses a head still incomplete after ``MAX_HEAD_BYTES`` with 431, as h11 refuses one
over its own 16 KiB, and an HTTP/1.1 request without Host with 400, as h11 does. llhttp
is otherwise the stricter parser (obs-fold, control characters in values, a bare LF,
Content-Length beside Transfer-Encoding: all 400).
"""

from __future__ import annotations

import json
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# h11's default (its max_incomplete_event_size), which the API enforced before.
MAX_HEAD_BYTES = 16 * 1024

_DETAIL = f"the request line and headers are larger than {MAX_HEAD_BYTES} bytes"
_BODY = json.dumps(
    {
        "type": "/problems/header-too-large",
        "title": "Request header fields too large",
        "status": 431,
        "detail": _DETAIL,
    }
).encode()
_REFUSAL = b"".join(
    [
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        b"content-type: application/problem+json\r\n",
        b"content-length: " + str(len(_BODY)).encode() + b"\r\n",
        b"connection: close\r\n\r\n",
        _BODY,
    ]
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, counting the bytes of each request's head.

    A chunk read from the socket is counted when the head was open before it and is still
    open after it (every byte of it is head). The chunk a head starts in is not counted (it
    may hold the end of the previous request too), so what is buffered stays under the bound
    plus one read, which the transport caps."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = False
        self._head_bytes = 0
        self._heads_begun = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        begun = self._heads_begun
        super().data_received(data)
        if self._head_open and self._heads_begun == begun:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_bytes = 0
        self._heads_begun += 1

    def on_headers_complete(self) -> None:
        self._head_open = False
        if self.parser.get_http_version() == "1.1" and not any(name == b"host" for name, _ in self.headers):
            # RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host, as
            # h11 did; llhttp leaves it to the server. Raised here, uvicorn answers its 400.
            raise httptools.HttpParserError("an HTTP/1.1 request without a Host header")
        super().on_headers_complete()

    def _refuse(self) -> None:
        self._refused = True
        self.logger.warning("Request refused: %s.", _DETAIL)
        if not self.transport.is_closing():
            self.transport.write(_REFUSAL)
            self.transport.close()
