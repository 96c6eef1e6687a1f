"""uvicorn's websocket protocol (websockets' sans-I/O one) with its attributes in slots.

uvicorn's `WebSocketsSansIOProtocol` keeps ~37 attributes per connection (its config, the
transport, the websockets connection, flags, timers…) in an instance `__dict__`; past the
size at which CPython shares a class's dict keys, that dict costs ~1.6 KB of every open
websocket, more than the rest of the protocol object. `SlottedWebSocketProtocol` is the
same class with those names declared as `__slots__` (fixed offsets: ~0.3 KB). Nothing
else changes: the subclass has no method of its own, an attribute not listed still goes
to the instance's `__dict__` (a later uvicorn adding one works, only less lean), and a
name the base class defines as a class attribute, method or property is never made a
slot (a slot would shadow it).

`websocket_protocol()` is what `app.web` hands uvicorn (`ws=`): this class when uvicorn
has the sans-I/O protocol, else "auto" (uvicorn's own choice).
"""

from __future__ import annotations

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


def _slots(base: type) -> tuple[str, ...]:
    """The attribute names that can be slots of a subclass of `base`: none that `base`
    (or a class above it) defines, which a slot would shadow."""
    return tuple(name for name in ATTRIBUTES if not hasattr(base, name))


SlottedWebSocketProtocol: Any = None
if WebSocketsSansIOProtocol is not None:
    class _Slotted(WebSocketsSansIOProtocol):
        __slots__ = _slots(WebSocketsSansIOProtocol)

    _Slotted.__name__ = _Slotted.__qualname__ = "SlottedWebSocketProtocol"
    SlottedWebSocketProtocol = _Slotted


def websocket_protocol() -> Any:
    """uvicorn's `ws=`: the slotted sans-I/O protocol, or "auto" without it."""
    return SlottedWebSocketProtocol if SlottedWebSocketProtocol is not None else "auto"


__all__ = ["ATTRIBUTES", "SlottedWebSocketProtocol", "websocket_protocol"]
