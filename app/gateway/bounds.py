"""What one socket may cost a web node: the Gateway's limits, from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SocketBounds:
    """Per socket: its send queue's bounds (characters of packet data, packets; also what
    its replay gates may hold, app/gateway/ordering.py), how long a replay waits for it
    to read before its transport is closed, how many unknown events it may send a minute;
    per node: how often the identities of open sockets are re-read."""

    queue_bytes: int = 2 * 2**20
    queue_packets: int = 5000
    drain_timeout: float = 20.0
    unknown_events_per_minute: int = 60
    identity_recheck: float = 5.0

    @classmethod
    def of(cls, settings: Any) -> SocketBounds:
        """From app.core.settings.Settings."""
        return cls(queue_bytes=settings.socket_queue_bytes,
                   queue_packets=settings.socket_queue_packets,
                   drain_timeout=settings.socket_drain_timeout,
                   unknown_events_per_minute=settings.rate_unknown_events,
                   identity_recheck=settings.identity_recheck)


__all__ = ["SocketBounds"]
