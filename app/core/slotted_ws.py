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

Its one method of its own, `__init__`, hands the protocol (and its websockets connection) a
`QuietLogger` in place of `uvicorn.error`: uvicorn's INFO lines per websocket
(`"WebSocket /socket.io/..." [accepted]`, `connection open`, `connection closed`), which
the web node leaves out (app/web.py), are then never built. With the logger itself they
were: a LogRecord each (~2.5 per socket), made and then dropped by a filter. Every other
line (refusals such as `403`, warnings, errors, start-up) goes to `uvicorn.error` as before.
"""

from __future__ import annotations

import logging
from typing import Any

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - an older uvicorn: its own protocol
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]

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

    _Slotted.__name__ = _Slotted.__qualname__ = "SlottedWebSocketProtocol"
    SlottedWebSocketProtocol = _Slotted


def websocket_protocol() -> Any:
    """uvicorn's `ws=`: the slotted sans-I/O protocol, or "auto" without it."""
    return SlottedWebSocketProtocol if SlottedWebSocketProtocol is not None else "auto"


__all__ = ["ATTRIBUTES", "PER_CONNECTION", "QUIET", "QuietLogger", "SlottedWebSocketProtocol",
           "websocket_protocol"]
