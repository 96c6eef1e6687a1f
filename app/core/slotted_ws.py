"""uvicorn's websocket protocol (websockets' sans-I/O one) with its attributes in slots.

uvicorn's `WebSocketsSansIOProtocol` keeps ~37 attributes per connection (its config, the
transport, the websockets connection, flags, timers…) in an instance `__dict__`; past the
size at which CPython shares a class's dict keys, that dict costs ~1.6 KB of every open
websocket, more than the rest of the protocol object. `SlottedWebSocketProtocol` is the
same class with those names declared as `__slots__` (fixed offsets: ~0.3 KB). An
attribute not listed still goes to the instance's `__dict__` (a later uvicorn adding one
works, only less lean), and a name the base class defines as a class attribute, method or
property is never made a slot (a slot would shadow it).

`websocket_protocol()` is what `app.web` hands uvicorn (`ws=`): this class when uvicorn
has the sans-I/O protocol, else "auto" (uvicorn's own choice).

Its `__init__` hands the protocol (and its websockets connection) a
`QuietLogger` in place of `uvicorn.error`: uvicorn's INFO lines per websocket
(`"WebSocket /socket.io/..." [accepted]`, `connection open`, `connection closed`), which
the web node leaves out (app/web.py), are then never built. With the logger itself they
were: a LogRecord each (~2.5 per socket), made and then dropped by a filter. Every other
line (refusals such as `403`, warnings, errors, start-up) goes to `uvicorn.error` as before.

The upgrade without a second parse (`lean_upgrade`, docs/fastpaths.md): uvicorn's HTTP
protocol (httptools) parses a request's head, and for a websocket upgrade
(`handle_websocket_upgrade`) writes that head back out as bytes which it feeds to the new
websocket protocol, whose websockets parser reads them again line by line (a generator
step per line, a regular expression per header) into a `Request`. `upgrade(http)` builds
that same `Request` from the head httptools parsed — the path, and each header as
websockets would read it: its name and value checked by websockets' own patterns, the
value stripped of blanks and decoded as ISO-8859-1 — and hands it to the protocol
(`take_request`), whose websockets connection then reads frames, as it would right after
parsing a request. The handshake itself (`accept`: the key, the version, the 101; but
for its date, below) and everything after are uvicorn's and websockets' own. Only a plain
request takes this way: GET, an ASCII path without blanks, at most websockets' number of
headers, each line within its length, no Transfer-Encoding or Content-Length, and
uvicorn's logger above its TRACE level (else uvicorn logs the upgrade, on its own path);
any other (a malformed one, which websockets answers with its own error) is handed over
as bytes, as uvicorn does. `LEAN_UPGRADE` False (app/gateway/hooks.py: a hook missing) makes
every upgrade uvicorn's own.

On that way, websockets' `accept` builds the 101 as its own does (`LeanServerProtocol`:
the same checks, `process_request`, and the same headers), but dates it from a clock
formatted once a second (`http_date`), not by `email.utils.formatdate` per handshake: the
same string within a second (and uvicorn replaces that header with its own date anyway).
A request `process_request` refuses gets websockets' own `accept` (its refusal). The
success path is copied from websockets: used only while websockets' `accept` is the one
copied (`ACCEPT_SHA256`, checked at start).
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
from typing import Any

from websockets import http11
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import Protocol
from websockets.server import ServerProtocol

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - an older uvicorn: its own protocol
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]

TRACE = 5  # uvicorn's TRACE log level: it logs the upgrade itself at that level
LEAN_UPGRADE = True  # False: every upgrade is uvicorn's own (app/gateway/hooks.py)
# sha256 of inspect.getsource(websockets.server.ServerProtocol.accept), websockets 17.4
ACCEPT_SHA256 = "f2f96c48162dbfdace797e0083969cb379da5bcca9398bbaad2d83bdf9f81a8f"
# websockets.http11's patterns for a header's name and value (a hook checks they match)
TOKEN = re.compile(rb"[-!#$%&\'*+.^_`|~0-9a-zA-Z]+")
VALUE = re.compile(rb"[\x09\x20-\x7e\x80-\xff]*")

# Every attribute uvicorn 0.55's protocol sets on itself (`self.x = ...`).
ATTRIBUTES = (
    "config", "app", "loop", "logger", "root_path", "asgi_version", "app_state",
    "connections", "tasks", "default_headers", "transport", "server", "client", "scheme",
    "queue", "handshake_initiated", "handshake_complete", "close_sent", "disconnected",
    "close_timer", "close_timeout", "initial_response", "conn", "read_paused", "writable",
    "ping_interval", "ping_timeout", "ping_timer", "pong_timer", "pending_ping_payload",
    "ping_sent_at", "last_ping_rtt", "frames", "curr_msg_data_type", "request", "response",
    "scope",
)


# uvicorn's and websockets' INFO lines per accepted websocket (their message templates).
PER_CONNECTION = ('%s - "WebSocket %s" [accepted]', "connection open", "connection closed")


class QuietLogger:
    """`uvicorn.error` for websocket protocols, less the INFO lines of `PER_CONNECTION`,
    which are dropped before a LogRecord is made (a string compare, not a record and a
    filter). Anything else is the logger's own (level, isEnabledFor, other lines)."""

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if msg in PER_CONNECTION:
            return
        # the caller's file and line in the record, not this method's
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
        self._logger.info(msg, *args, **kwargs)

    @property
    def level(self) -> int:
        return self._logger.level

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


QUIET = QuietLogger(logging.getLogger("uvicorn.error"))  # one for every socket


def _slots(base: type) -> tuple[str, ...]:
    """The attribute names that can be slots of a subclass of `base`: none that `base`
    (or a class above it) defines, which a slot would shadow."""
    return tuple(name for name in ATTRIBUTES if not hasattr(base, name))


SlottedWebSocketProtocol: Any = None
if WebSocketsSansIOProtocol is not None:
    class _Slotted(WebSocketsSansIOProtocol):
        __slots__ = _slots(WebSocketsSansIOProtocol)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            quiet: Any = QUIET  # a Logger to those who call it
            self.logger = quiet
            self.conn.logger = quiet

        def take_request(self, request: Request) -> None:
            """The handshake `request`, already parsed (see the module): websockets'
            connection is set to read frames, as its parser is once it has read a request
            (`ServerProtocol.parse`: the request, then `Protocol.parse`), then uvicorn
            handles the request as it does the one its parser yields (`handle_connect`),
            websockets' accept dating the 101 once a second (`LeanServerProtocol`)."""
            conn = self.conn
            parser = Protocol.parse(conn)
            next(parser)  # start coroutine (as websockets does)
            conn.parser = parser
            if type(conn) is ServerProtocol:
                conn.__class__ = LeanServerProtocol
            self.handle_connect(request)

    _Slotted.__name__ = _Slotted.__qualname__ = "SlottedWebSocketProtocol"
    SlottedWebSocketProtocol = _Slotted


_DATE: list[Any] = [0, ""]  # the second and its HTTP date


def http_date() -> str:
    """`email.utils.formatdate(usegmt=True)`, formatted once a second."""
    now = int(time.time())
    if now != _DATE[0]:
        _DATE[:] = [now, email.utils.formatdate(now, usegmt=True)]
    return str(_DATE[1])


class LeanServerProtocol(ServerProtocol):
    """websockets' ServerProtocol, its 101 dated by `http_date` (see the module)."""

    def accept(self, request: Request) -> Response:
        try:
            accept_header, extensions_header, protocol_header = self.process_request(request)
        except Exception:  # refused: websockets' own accept (it checks again, refuses, logs)
            return super().accept(request)
        # websockets' ServerProtocol.accept from here on, but for the date
        self.accept_called = True
        headers = Headers()
        headers["Date"] = http_date()
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"
        headers["Sec-WebSocket-Accept"] = accept_header
        if extensions_header is not None:
            headers["Sec-WebSocket-Extensions"] = extensions_header
        if protocol_header is not None:
            headers["Sec-WebSocket-Protocol"] = protocol_header
        return Response(101, "Switching Protocols", headers)


def plain_request(method: str, url: bytes, headers: list[tuple[bytes, bytes]]
                  ) -> Request | None:
    """The `Request` websockets would parse from the head uvicorn writes out for this
    upgrade (`GET <url> HTTP/1.1`, then each header); None unless the request is plain
    (see the module), when websockets must read it itself."""
    longest = http11.MAX_LINE_LENGTH - 2  # a line and its CRLF
    if (method != "GET" or len(url) + 13 > longest or not url.isascii()
            or b" " in url or b"\r" in url or b"\n" in url
            or len(headers) > http11.MAX_NUM_HEADERS):
        return None
    parsed = Headers()
    for name, value in headers:
        if len(name) + len(value) + 2 > longest or TOKEN.fullmatch(name) is None:
            return None
        value = value.strip(b" \t")
        if VALUE.fullmatch(value) is None:
            return None
        parsed.set_insecure(name.decode("ascii"), value.decode("iso-8859-1"))
    if "Transfer-Encoding" in parsed or "Content-Length" in parsed:
        return None
    return Request(url.decode("ascii"), parsed, "GET", "HTTP/1.1")


def upgrade(http: Any) -> bool:
    """uvicorn's `handle_websocket_upgrade` for the HTTP protocol `http`, the websocket
    protocol given the parsed request (see the module); False, and nothing done, when the
    request is not plain or the protocol is not this module's: uvicorn's own then."""
    ws_class = http.ws_protocol_class
    if (not LEAN_UPGRADE or SlottedWebSocketProtocol is None
            or not isinstance(ws_class, type) or not issubclass(ws_class, SlottedWebSocketProtocol)
            or http.logger.level <= TRACE):
        return False
    request = plain_request(http.scope["method"], http.url, http.scope["headers"])
    if request is None:
        return False
    http.connections.discard(http)
    protocol = ws_class(config=http.config, server_state=http.server_state,
                        app_state=http.app_state)
    protocol.connection_made(http.transport)
    http.transport.set_protocol(protocol)
    protocol.take_request(request)
    return True


def websocket_protocol() -> Any:
    """uvicorn's `ws=`: the slotted sans-I/O protocol, or "auto" without it."""
    return SlottedWebSocketProtocol if SlottedWebSocketProtocol is not None else "auto"


__all__ = [
    "ATTRIBUTES",
    "PER_CONNECTION",
    "QUIET",
    "LeanServerProtocol",
    "QuietLogger",
    "SlottedWebSocketProtocol",
    "http_date",
    "plain_request",
    "upgrade",
    "websocket_protocol",
]
