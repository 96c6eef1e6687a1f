"""Socket.IO channel names on Redis: the shared channel and each stream's own.

The relay publishes a stream's events on the stream's own channel (`SPUBLISH`, Redis
sharded pub/sub); a web node subscribes to it while one of its sockets is in the
stream's room (app/gateway/rooms.py). The shared channel (HERALD_SOCKETIO_CHANNEL)
carries what python-socketio's own managers publish: any service's `emit()`, room
changes by sid, disconnects. Both the relay and the web node name a stream's channel
with `room_channel`, so they always agree.
"""

from __future__ import annotations

SEPARATOR = "#"


def room_channel(channel: str, stream: str) -> str:
    """The channel of `stream`'s events, under the shared Socket.IO channel `channel`."""
    return f"{channel}{SEPARATOR}{stream}"


def room_prefix(channel: str) -> str:
    """What every stream channel under `channel` starts with (the stream name follows)."""
    return room_channel(channel, "")


__all__ = ["room_channel", "room_prefix"]
