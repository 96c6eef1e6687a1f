"""uvicorn's HTTP/1.1 protocol (httptools) with the request head bounded in size, count and time.

httptools gathers a header line that arrives in pieces by concatenating bytes, and uvicorn
does the same with the URL: a 100 MB header costs time quadratic in its size, on the event
loop, before the app sees anything (a `/healthz` sent meanwhile waited 13 s). Nothing in
uvicorn bounds a head, and a connection that never finishes one is never closed. So a
subclass counts the bytes of each request head (request line and headers) *before* they
reach the parser, and:

- past `max_bytes` (or past `max_count` header lines) answers `431 Request Header Fields
  Too Large` and closes: at most `max_bytes` of a head is ever parsed;
- closes a connection whose head is not complete `timeout` seconds after it began (for a
  new connection: after it opened), so slow or silent connections do not pile up. Once a
  response is sent, uvicorn's keep-alive timeout closes an idle connection as before.

Websocket upgrades are HTTP requests too: their heads are bounded the same way before the
websocket protocol takes over. Bodies are bounded elsewhere (`app.api.bodylimit`).

Each head is counted exactly, pipelined ones too (a head ends at its blank line, a body
with a Content-Length after that many bytes); after a chunked body the next head's count
also includes the chunks' framing read with it: an upper bound, never more lenient.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.core import slotted_ws

log = logging.getLogger("herald.http")
LINGER = 1.0  # seconds a refused connection is still read (and discarded) so the client sees 431
LINGER_BYTES = 1 << 20


class _TooManyHeaders(Exception):
    pass


class BoundedHeadProtocol(HttpToolsProtocol):
    """See the module. Configure through `bounded_head_protocol()`."""

    max_bytes = 32 * 1024
    max_count = 100
    timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # reading a request line and headers (or waiting for one)
        self._head_bytes = 0
        self._header_count = 0
        self._tail = b""  # the head's last bytes so far (its end may span two pieces)
        self._body_left: int | None = None  # of a body with a Content-Length
        self._piece_body = 0  # body bytes the parser reported from the piece being fed
        self._completed_at: int | None = None  # _piece_body when a message completed
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._discarded = 0

    # -- connection --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # lingering after a 431: read and drop
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        while data:
            if self._in_head:
                # up to the head's end (a blank line), so that what follows is not counted
                seen = self._tail + data
                end = seen.find(b"\r\n\r\n")
                take = len(data) if end < 0 else end + 4 - len(self._tail)
                if self._head_bytes + take > self.max_bytes:
                    self._refuse(f"request head over {self.max_bytes} bytes")
                    return
                piece, data = data[:take], data[take:]
                self._head_bytes += take
                self._tail = seen[:end + 4][-3:] if end >= 0 else seen[-3:]
                body = False
            else:
                size = self._body_left if self._body_left else self.max_bytes
                piece, data = data[:size], data[size:]
                if self._body_left:
                    self._body_left -= len(piece)
                body = True
            self._piece_body, self._completed_at = 0, None
            if not self._feed(piece):
                return
            if body and self._in_head and self._completed_at is not None:
                # a message ended inside the piece: what followed it is the next head
                # (exact but for chunked bodies, where the chunks' framing counts too)
                self._head_bytes = len(piece) - self._completed_at
                self._tail = piece[-3:] if self._head_bytes else b""

    def _feed(self, piece: bytes) -> bool:
        """Feed the parser as uvicorn does; False when the connection was handed on or
        answered (upgrade, 400, 431)."""
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self._disarm()
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _TooManyHeaders):
                self._refuse(f"more than {self.max_count} header lines")
                return False
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return False
        return True

    def handle_websocket_upgrade(self) -> None:
        """The websocket protocol handed the request httptools parsed, not its bytes to
        parse again (app/core/slotted_ws.py), for a plain request; uvicorn's own else."""
        if not slotted_ws.upgrade(self):
            super().handle_websocket_upgrade()

    # -- parser callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_count:
            raise _TooManyHeaders
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        self._body_left = _content_length(self.headers)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._piece_body += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes, self._header_count = True, 0, 0
        self._tail, self._body_left = b"", None
        self._completed_at = self._piece_body

    # -- refusing ----------------------------------------------------------------------
    def _refuse(self, reason: str) -> None:
        """431 with a JSON error, then close (after a short linger, so that a client still
        sending reads the answer rather than a reset)."""
        self._refused = True
        self._disarm()
        log.info("request refused: %s client=%s", reason, _peer(self.client))
        if self.cycle is not None and not self.cycle.response_complete:
            # a pipelined head behind a response still being written: no answer can be
            # put between that response's bytes, so the connection just closes
            self.cycle.keep_alive = False
            self.transport.close()
            return
        body = json.dumps({"error": {"code": "headers_too_large", "message": reason}}).encode()
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\n",
                 b"content-length: " + str(len(body)).encode() + b"\r\n",
                 b"connection: close\r\n\r\n", body]
        self.transport.write(b"".join(head))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()

    # -- the head's deadline -----------------------------------------------------------
    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm()  # a pipelined head behind a running request: its own turn comes later
            return
        log.info("connection closed: no complete request head in %.0f s client=%s",
                 self.timeout, _peer(self.client))
        self.transport.close()


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body's length when a Content-Length gives it (and no Transfer-Encoding)."""
    length = None
    for name, value in headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            length = int(value) if value.strip().isdigit() else None
    return length


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "-"


def bounded_head_protocol(*, max_bytes: int, max_count: int,
                          timeout: float) -> type[BoundedHeadProtocol]:
    """The protocol class for `uvicorn.Config(http=...)`, with these limits."""
    return type("BoundedHeadProtocol", (BoundedHeadProtocol,),
                {"max_bytes": max_bytes, "max_count": max_count, "timeout": timeout})


__all__ = ["BoundedHeadProtocol", "bounded_head_protocol"]
